// CPU kernels of reparameterize (schemas: csrc/reparameterize_ops.cpp):
// z = mu + eps * exp(0.5 * logvar) over the flat [B, Z] elements, on the
// vector loops of latent_common.h. Sampled eps comes from the counter-based
// Philox stream of philox.h / normals.cpp and is regenerated, not stored, for
// the backward.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <atomic>

#include "latent_common.h"
#include "normals.h"
#include "philox.h"

namespace fastvae {
namespace cpu {
namespace latent {
namespace {

// Sampled eps is generated per block of philox::kBlockCounters counters (4
// normals each) into a stack buffer (normals.cpp); the element loop then reads
// it. Element i uses normal i % 4 of counter i / 4 (philox.h).

// Calls fn(lo, hi, e) for consecutive pieces [lo, hi) of [i0, i1), where
// e[i - lo] is the sampled eps of element i.
template <typename Fn>
FASTVAE_INLINE void for_sampled(philox::Key key, int64_t i0, int64_t i1, const Fn& fn) {
  constexpr int64_t kCounters = philox::kBlockCounters;
  alignas(64) float buf[4 * kCounters];
  const int64_t c_end = (i1 + 3) / 4;
  for (int64_t c = i0 / 4; c < c_end; c += kCounters) {
    const int64_t nc = std::min(kCounters, c_end - c);
    philox::normals(key, c, nc, buf);
    const int64_t lo = std::max(i0, 4 * c), hi = std::min(i1, 4 * (c + nc));
    fn(lo, hi, buf + (lo - 4 * c));
  }
}

// Sampled eps (float32) as V's lanes.
template <typename V, typename Count>
FASTVAE_INLINE V load_eps(const float* e, Count n) {
  using Vf = simd::Vec<float, simd::lanes_of<V>>;
  const Vf v = simd::load<Vf>(e, n);
  if constexpr (std::is_same_v<simd::elem_t<V>, float>) {
    return v;
  } else {
    return __builtin_convertvector(v, V);
  }
}

template <typename scalar_t, int kBytes>
FASTVAE_INLINE void reparam_fwd_body(int64_t i0, int64_t i1, const scalar_t* __restrict mu,
                                     const scalar_t* __restrict logvar,
                                     const scalar_t* __restrict eps, philox::Key key,
                                     scalar_t* __restrict z, std::atomic<int>* flags) {
  using V = VecT<scalar_t, kBytes>;
  constexpr int N = simd::lanes_of<V>;
  const scalar_t zero = 0, half = 0.5;
  V pm = {}, pl = {}, pe = {};
  if (eps != nullptr) {
    simd::for_lanes<N>(i0, i1, [&](int64_t i, auto n) FASTVAE_LAMBDA {
      const V m = simd::load<V>(mu + i, n), lv = simd::load<V>(logvar + i, n), e = simd::load<V>(eps + i, n);
      pm += m * zero;
      pl += lv * zero;
      pe += e * zero;
      simd::store(z + i, m + e * exp_(half * lv), n);
    });
  } else {
    for_sampled(key, i0, i1, [&](int64_t lo, int64_t hi, const float* e) FASTVAE_LAMBDA {
      simd::for_lanes<N>(lo, hi, [&](int64_t i, auto n) FASTVAE_LAMBDA {
        const V m = simd::load<V>(mu + i, n), lv = simd::load<V>(logvar + i, n);
        pm += m * zero;
        pl += lv * zero;
        simd::store(z + i, m + load_eps<V>(e + (i - lo), n) * exp_(half * lv), n);
      });
    });
  }
  flag_if_nan(flags, pm, kMu);
  flag_if_nan(flags, pl, kLogvar);
  flag_if_nan(flags, pe, kEps);
}

FASTVAE_SIMD_VARIANTS(reparam_fwd, reparam_fwd_body,
                      (int64_t i0, int64_t i1, const scalar_t* mu, const scalar_t* logvar,
                       const scalar_t* eps, philox::Key key, scalar_t* z, std::atomic<int>* flags),
                      (i0, i1, mu, logvar, eps, key, z, flags))

template <typename scalar_t, int kBytes>
FASTVAE_INLINE void reparam_bwd_body(int64_t i0, int64_t i1, const scalar_t* __restrict gz,
                                     int64_t gz_stride, const scalar_t* __restrict logvar,
                                     const scalar_t* __restrict eps, philox::Key key,
                                     scalar_t* __restrict glv) {
  using V = VecT<scalar_t, kBytes>;
  constexpr int N = simd::lanes_of<V>;
  const scalar_t half = 0.5;
  // grad_z is contiguous or one value broadcast (stride 0).
  const auto grad = [&](int64_t i, auto n) FASTVAE_LAMBDA {
    return gz_stride == 0 ? simd::splat<V>(gz[0]) : simd::load<V>(gz + i, n);
  };
  if (eps != nullptr) {
    simd::for_lanes<N>(i0, i1, [&](int64_t i, auto n) FASTVAE_LAMBDA {
      const V lv = simd::load<V>(logvar + i, n);
      simd::store(glv + i, half * grad(i, n) * simd::load<V>(eps + i, n) * exp_(half * lv), n);
    });
  } else {
    for_sampled(key, i0, i1, [&](int64_t lo, int64_t hi, const float* e) FASTVAE_LAMBDA {
      simd::for_lanes<N>(lo, hi, [&](int64_t i, auto n) FASTVAE_LAMBDA {
        const V lv = simd::load<V>(logvar + i, n);
        simd::store(glv + i, half * grad(i, n) * load_eps<V>(e + (i - lo), n) * exp_(half * lv), n);
      });
    });
  }
}

FASTVAE_SIMD_VARIANTS(reparam_bwd, reparam_bwd_body,
                      (int64_t i0, int64_t i1, const scalar_t* gz, int64_t gz_stride, const scalar_t* logvar,
                       const scalar_t* eps, philox::Key key, scalar_t* glv),
                      (i0, i1, gz, gz_stride, logvar, eps, key, glv))

philox::Key seed_key(const c10::optional<at::Tensor>& eps, const c10::optional<at::Tensor>& seed) {
  TORCH_CHECK_VALUE(eps.has_value() != seed.has_value(),
                    "fastvae.reparameterize: give exactly one of 'eps' and 'seed'");
  if (!seed.has_value()) return philox::Key(0);
  TORCH_CHECK_TYPE(seed->scalar_type() == at::kLong, "fastvae: argument 'seed' must be int64, got ",
                   seed->scalar_type());
  TORCH_CHECK_VALUE(seed->numel() == 1 && seed->device().is_cpu(),
                    "fastvae: argument 'seed' must be a one-element CPU tensor, got shape ", seed->sizes(),
                    " on ", seed->device());
  return philox::Key(*seed->const_data_ptr<int64_t>());
}

at::Tensor reparameterize_cpu(const at::Tensor& mu_in, const at::Tensor& logvar_in,
                              const c10::optional<at::Tensor>& eps_in,
                              const c10::optional<at::Tensor>& seed) {
  check_latent(mu_in, "mu");
  check_like(logvar_in, "logvar", mu_in, "mu");
  if (eps_in.has_value()) check_like(*eps_in, "eps", mu_in, "mu");
  const philox::Key key = seed_key(eps_in, seed);
  const auto mu = mu_in.contiguous(), logvar = logvar_in.contiguous();
  const auto eps = opt_contiguous(eps_in);
  auto z = at::empty_like(mu);
  std::atomic<int> flags{0};
  const int64_t n = mu.numel();
  AT_DISPATCH_FLOATING_TYPES(mu.scalar_type(), "fastvae_reparameterize", [&] {
    const scalar_t* mp = mu.const_data_ptr<scalar_t>();
    const scalar_t* lp = logvar.const_data_ptr<scalar_t>();
    const scalar_t* ep = ptr_or_null<scalar_t>(eps);
    scalar_t* zp = z.data_ptr<scalar_t>();
    at::parallel_for(0, n, kGrainElems, [&](int64_t i0, int64_t i1) {
      reparam_fwd<scalar_t>(i0, i1, mp, lp, ep, key, zp, &flags);
    });
  });
  raise_nonfinite(flags.load());
  return z;
}

at::Tensor reparameterize_bwd_cpu(const at::Tensor& grad_z_in, const at::Tensor& logvar_in,
                                  const c10::optional<at::Tensor>& eps_in,
                                  const c10::optional<at::Tensor>& seed) {
  check_latent(logvar_in, "logvar");
  check_like(grad_z_in, "grad_z", logvar_in, "logvar");
  if (eps_in.has_value()) check_like(*eps_in, "eps", logvar_in, "logvar");
  const philox::Key key = seed_key(eps_in, seed);
  // grad_z expanded from a scalar (x.sum().backward()) is read in place.
  const bool broadcast = grad_z_in.numel() > 0 && grad_z_in.stride(0) == 0 && grad_z_in.stride(1) == 0;
  const auto gz = broadcast ? grad_z_in : grad_z_in.contiguous();
  const auto logvar = logvar_in.contiguous();
  const auto eps = opt_contiguous(eps_in);
  auto glv = at::empty_like(logvar);
  const int64_t n = logvar.numel();
  AT_DISPATCH_FLOATING_TYPES(logvar.scalar_type(), "fastvae_reparameterize_bwd", [&] {
    const scalar_t* gp = gz.const_data_ptr<scalar_t>();
    const scalar_t* lp = logvar.const_data_ptr<scalar_t>();
    const scalar_t* ep = ptr_or_null<scalar_t>(eps);
    scalar_t* out = glv.data_ptr<scalar_t>();
    at::parallel_for(0, n, kGrainElems, [&](int64_t i0, int64_t i1) {
      reparam_bwd<scalar_t>(i0, i1, gp, broadcast ? 0 : 1, lp, ep, key, out);
    });
  });
  return glv;
}

}  // namespace

TORCH_LIBRARY_IMPL(fastvae, CPU, m) {
  m.impl("reparameterize", &reparameterize_cpu);
  m.impl("reparameterize_bwd", &reparameterize_bwd_cpu);
}

}  // namespace latent
}  // namespace cpu
}  // namespace fastvae
