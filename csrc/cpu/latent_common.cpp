// The KL row loops of gaussian_kl and kl_label_loss, the argument checks and
// the non-finite report shared by the latent ops' CPU kernels (latent_common.h).
#include "latent_common.h"

#include <ATen/Parallel.h>

#include <utility>

namespace fastvae {
namespace cpu {
namespace latent {
namespace {

// active[j .. j + n) as V's lane mask (true: all ones).
template <typename V, typename Count>
FASTVAE_INLINE simd::mask_t<V> active_mask(const bool* active, int64_t j, Count n) {
  using Bytes = simd::Vec<int8_t, simd::lanes_of<V>>;
  const Bytes b = simd::load<Bytes>(reinterpret_cast<const int8_t*>(active + j), n);
  return __builtin_convertvector(b, simd::mask_t<V>) != 0;
}

const char* arg_name(int bit) {
  switch (bit) {
    case kMu: return "mu";
    case kLogvar: return "logvar";
    case kEps: return "eps";
    case kMuQ: return "mu_q";
    case kLogvarQ: return "logvar_q";
    case kMuP: return "mu_p";
    case kLogvarP: return "logvar_p";
    case kZ: return "z";
    default: return "z_label";
  }
}

// ------------------------------------------------------------------ KL --

// The [B, Z] operands of one KL / KL+label call (mu_p, logvar_p, z, z_label
// may be null), all contiguous.
template <typename scalar_t>
struct KlArgs {
  const scalar_t *mu_q, *logvar_q, *mu_p, *logvar_p, *z, *z_label;
  int64_t Z;
};

// The per-row output gradients of a backward call, each [B] with any stride
// (e.g. 0 when expanded from a mean) and possibly absent (zero):
// kl[b] receives kl_weight * total + kl, label[b] label_weight * total + label.
template <typename scalar_t>
struct RowGrads {
  const scalar_t *total, *kl, *label;
  int64_t s_total, s_kl, s_label;
  scalar_t kl_weight, label_weight;

  FASTVAE_INLINE scalar_t of_kl(int64_t b) const {
    scalar_t g = kl != nullptr ? kl[b * s_kl] : scalar_t(0);
    return total != nullptr ? g + kl_weight * total[b * s_total] : g;
  }
  FASTVAE_INLINE scalar_t of_label(int64_t b) const {
    scalar_t g = label != nullptr ? label[b * s_label] : scalar_t(0);
    return total != nullptr ? g + label_weight * total[b * s_total] : g;
  }
};

// One dimension's KL(q || p) per lane; without a prior mp = lp = 0 fold away.
//   0.5 * ((lp - lq) + e^(lq - lp) + (mq - mp)^2 e^-lp - 1)
// Exactly 0 when q == p (every term is exact there).
template <bool kPrior, typename V>
FASTVAE_INLINE V kl_term(V mq, V lq, V mp, V lp) {
  using T = simd::elem_t<V>;
  if constexpr (kPrior) {
    const V d = mq - mp;
    // d == 0 contributes 0 even where e^-lp overflows (lp < -88 in float):
    // 0 * inf would turn the reference's inf into NaN.
    const V dd = d * d;
    const V md = simd::select(dd == T(0), V{}, dd * exp_(-lp));
    return T(0.5) * ((lp - lq) + exp_(lq - lp) + md - T(1));
  } else {
    return T(0.5) * ((-lq) + exp_(lq) + mq * mq - T(1));
  }
}

// Rows are processed in tiles of ~kTileElems elements: the element-wise math
// runs as one flat loop over a tile, so it vectorizes however small Z is
// (Z = 8 would leave a per-row loop in its scalar remainder), and the row
// sums then read the tile buffer.
constexpr int64_t kTileElems = 1024;

int64_t tile_rows(int64_t Z) { return std::max<int64_t>(1, kTileElems / std::max<int64_t>(Z, 1)); }

// t[i - e0] = KL term of flat element i, for i in [e0, e1).
template <bool kPrior, typename V, typename scalar_t>
FASTVAE_INLINE void kl_terms_flat(const KlArgs<scalar_t>& a, int64_t e0, int64_t e1,
                                  scalar_t* __restrict t, std::atomic<int>* flags) {
  const scalar_t* __restrict mq = a.mu_q;
  const scalar_t* __restrict lq = a.logvar_q;
  const scalar_t* __restrict mp = a.mu_p;
  const scalar_t* __restrict lp = a.logvar_p;
  const scalar_t zero = 0;
  V p_mq = {}, p_lq = {}, p_mp = {}, p_lp = {};
  simd::for_lanes<simd::lanes_of<V>>(e0, e1, [&](int64_t i, auto n) FASTVAE_LAMBDA {
    const V vmq = simd::load<V>(mq + i, n), vlq = simd::load<V>(lq + i, n);
    p_mq += vmq * zero;
    p_lq += vlq * zero;
    if constexpr (kPrior) {
      const V vmp = simd::load<V>(mp + i, n), vlp = simd::load<V>(lp + i, n);
      p_mp += vmp * zero;
      p_lp += vlp * zero;
      simd::store(t + (i - e0), kl_term<true>(vmq, vlq, vmp, vlp), n);
    } else {
      simd::store(t + (i - e0), kl_term<false>(vmq, vlq, V{}, V{}), n);
    }
  });
  flag_if_nan(flags, p_mq, kMuQ);
  flag_if_nan(flags, p_lq, kLogvarQ);
  flag_if_nan(flags, p_mp, kMuP);
  flag_if_nan(flags, p_lp, kLogvarP);
}

// t[i - e0] = (z[i] - z_label[i])^2.
template <typename V, typename scalar_t>
FASTVAE_INLINE void sq_diff_flat(const scalar_t* __restrict z, const scalar_t* __restrict zl, int64_t e0,
                                 int64_t e1, scalar_t* __restrict t, std::atomic<int>* flags) {
  const scalar_t zero = 0;
  V p_z = {}, p_zl = {};
  simd::for_lanes<simd::lanes_of<V>>(e0, e1, [&](int64_t i, auto n) FASTVAE_LAMBDA {
    const V vz = simd::load<V>(z + i, n), vzl = simd::load<V>(zl + i, n);
    p_z += vz * zero;
    p_zl += vzl * zero;
    const V d = vz - vzl;
    simd::store(t + (i - e0), d * d, n);
  });
  flag_if_nan(flags, p_z, kZ);
  flag_if_nan(flags, p_zl, kZLabel);
}

// out[r] = sum_j t[r, j] for a [rows, Z] tile.
template <typename V, typename scalar_t>
FASTVAE_INLINE void row_sums(const scalar_t* t, int64_t rows, int64_t Z, scalar_t* out) {
  simd::with_row_vector<V>(Z, [&](auto w) FASTVAE_LAMBDA {
    using W = decltype(w);
    for (int64_t r = 0; r < rows; ++r) {
      const scalar_t* __restrict tr = t + r * Z;
      W acc = {};
      simd::for_lanes<simd::lanes_of<W>>(0, Z, [&](int64_t j, auto n) FASTVAE_LAMBDA {
        acc += simd::load<W>(tr + j, n);
      });
      out[r] = simd::hsum(acc);
    }
  });
}

// Rows [b0, b1): kl[b] (and, with z, label[b]) summed over Z; with `terms`
// ([B, Z], free bits) the KL terms are written there instead of summed.
template <bool kPrior, typename V, typename scalar_t>
FASTVAE_INLINE void kl_fwd_impl(const KlArgs<scalar_t>& a, int64_t b0, int64_t b1, scalar_t* kl,
                                scalar_t* label, scalar_t* terms, std::atomic<int>* flags) {
  const int64_t Z = a.Z, R = tile_rows(Z);
  std::vector<scalar_t> buf(std::min(R, b1 - b0) * Z);
  for (int64_t r0 = b0; r0 < b1; r0 += R) {
    const int64_t r1 = std::min(b1, r0 + R), e0 = r0 * Z, e1 = r1 * Z;
    if (terms != nullptr) {
      kl_terms_flat<kPrior, V>(a, e0, e1, terms + e0, flags);
    } else {
      kl_terms_flat<kPrior, V>(a, e0, e1, buf.data(), flags);
      row_sums<V>(buf.data(), r1 - r0, Z, kl + r0);
    }
    if (label != nullptr) {
      sq_diff_flat<V>(a.z, a.z_label, e0, e1, buf.data(), flags);
      row_sums<V>(buf.data(), r1 - r0, Z, label + r0);
    }
  }
}

template <typename scalar_t, int kBytes>
FASTVAE_INLINE void kl_rows_body(const KlArgs<scalar_t>& a, int64_t b0, int64_t b1, scalar_t* kl,
                                 scalar_t* label, scalar_t* terms, std::atomic<int>* flags) {
  using V = VecT<scalar_t, kBytes>;
  if (a.mu_p != nullptr) {
    kl_fwd_impl<true, V>(a, b0, b1, kl, label, terms, flags);
  } else {
    kl_fwd_impl<false, V>(a, b0, b1, kl, label, terms, flags);
  }
}

FASTVAE_SIMD_VARIANTS(kl_rows, kl_rows_body,
                      (const KlArgs<scalar_t>& a, int64_t b0, int64_t b1, scalar_t* kl,
                       scalar_t* label, scalar_t* terms, std::atomic<int>* flags),
                      (a, b0, b1, kl, label, terms, flags))

// Free bits: kl[b] = sum_j (active[j] ? terms[b,j] : free_bits).
template <typename scalar_t, int kBytes>
FASTVAE_INLINE void clamped_rows_body(int64_t b0, int64_t b1, int64_t Z, const scalar_t* terms,
                                      const bool* active, scalar_t free_bits, scalar_t* kl) {
  simd::with_row_vector<VecT<scalar_t, kBytes>>(Z, [&](auto w) FASTVAE_LAMBDA {
    using W = decltype(w);
    const W fb = simd::splat<W>(free_bits);
    for (int64_t b = b0; b < b1; ++b) {
      const scalar_t* __restrict t = terms + b * Z;
      W acc = {};
      simd::for_lanes<simd::lanes_of<W>>(0, Z, [&](int64_t j, auto n) FASTVAE_LAMBDA {
        acc += simd::head(simd::select(active_mask<W>(active, j, n), simd::load<W>(t + j, n), fb), n);
      });
      kl[b] = simd::hsum(acc);
    }
  });
}

FASTVAE_SIMD_VARIANTS(clamped_rows, clamped_rows_body,
                      (int64_t b0, int64_t b1, int64_t Z, const scalar_t* terms, const bool* active,
                       scalar_t free_bits, scalar_t* kl),
                      (b0, b1, Z, terms, active, free_bits, kl))

// KL gradients of flat elements [e0, e1); g[i - e0] is the gradient reaching
// element i's KL term (its row's, or 0 on a clamped dimension).
template <bool kPrior, typename V, typename scalar_t>
FASTVAE_INLINE void kl_grads_flat(const KlArgs<scalar_t>& a, int64_t e0, int64_t e1,
                                  const scalar_t* __restrict g, scalar_t* __restrict dmq,
                                  scalar_t* __restrict dlq, scalar_t* __restrict dmp,
                                  scalar_t* __restrict dlp) {
  const scalar_t* __restrict mq = a.mu_q;
  const scalar_t* __restrict lq = a.logvar_q;
  const scalar_t* __restrict mp = a.mu_p;
  const scalar_t* __restrict lp = a.logvar_p;
  const scalar_t half = 0.5, one = 1;
  simd::for_lanes<simd::lanes_of<V>>(e0, e1, [&](int64_t i, auto n) FASTVAE_LAMBDA {
    const V gi = simd::load<V>(g + (i - e0), n);
    const V vmq = simd::load<V>(mq + i, n), vlq = simd::load<V>(lq + i, n);
    if constexpr (kPrior) {
      const V vlp = simd::load<V>(lp + i, n);
      const V d = vmq - simd::load<V>(mp + i, n);
      const V inv_var_p = exp_(-vlp);
      const V ratio = exp_(vlq - vlp);
      const V gm = gi * d * inv_var_p;
      simd::store(dmq + i, gm, n);
      simd::store(dmp + i, -gm, n);
      simd::store(dlq + i, half * gi * (ratio - one), n);
      simd::store(dlp + i, half * gi * (one - ratio - d * d * inv_var_p), n);
    } else {
      simd::store(dmq + i, gi * vmq, n);
      simd::store(dlq + i, half * gi * (exp_(vlq) - one), n);
    }
  });
}

// dz[i] = g2[i - e0] * (z[i] - z_label[i]), g2 = 2 * the row's label gradient.
template <typename V, typename scalar_t>
FASTVAE_INLINE void label_grads_flat(const scalar_t* __restrict z, const scalar_t* __restrict zl,
                                     int64_t e0, int64_t e1, const scalar_t* __restrict g2,
                                     scalar_t* __restrict dz) {
  simd::for_lanes<simd::lanes_of<V>>(e0, e1, [&](int64_t i, auto n) FASTVAE_LAMBDA {
    simd::store(dz + i, simd::load<V>(g2 + (i - e0), n) * (simd::load<V>(z + i, n) - simd::load<V>(zl + i, n)), n);
  });
}

// Rows [b0, b1) of the gradients; active: kept dimensions (null: all).
template <bool kPrior, typename V, typename scalar_t>
FASTVAE_INLINE void kl_bwd_impl(const KlArgs<scalar_t>& a, int64_t b0, int64_t b1, const RowGrads<scalar_t>& rg,
                                const bool* active, scalar_t* d_mq, scalar_t* d_lq,
                                scalar_t* d_mp, scalar_t* d_lp, scalar_t* d_z) {
  const int64_t Z = a.Z, R = tile_rows(Z);
  std::vector<scalar_t> buf(std::min(R, b1 - b0) * Z);
  scalar_t* __restrict g = buf.data();
  for (int64_t r0 = b0; r0 < b1; r0 += R) {
    const int64_t r1 = std::min(b1, r0 + R), e0 = r0 * Z, e1 = r1 * Z;
    simd::with_row_vector<V>(Z, [&](auto w) FASTVAE_LAMBDA {
      using W = decltype(w);
      constexpr int N = simd::lanes_of<W>;
      for (int64_t r = r0; r < r1; ++r) {
        scalar_t* __restrict gr = g + (r - r0) * Z;
        const W v = simd::splat<W>(rg.of_kl(r));
        if (active != nullptr) {
          simd::for_lanes<N>(0, Z, [&](int64_t j, auto n) FASTVAE_LAMBDA {
            simd::store(gr + j, simd::select(active_mask<W>(active, j, n), v, W{}), n);
          });
        } else {
          simd::for_lanes<N>(0, Z, [&](int64_t j, auto n) FASTVAE_LAMBDA { simd::store(gr + j, v, n); });
        }
      }
    });
    kl_grads_flat<kPrior, V>(a, e0, e1, g, d_mq, d_lq, d_mp, d_lp);
    if (d_z != nullptr) {
      simd::with_row_vector<V>(Z, [&](auto w) FASTVAE_LAMBDA {
        using W = decltype(w);
        for (int64_t r = r0; r < r1; ++r) {
          scalar_t* __restrict gr = g + (r - r0) * Z;
          const W v = simd::splat<W>(scalar_t(2) * rg.of_label(r));
          simd::for_lanes<simd::lanes_of<W>>(0, Z, [&](int64_t j, auto n) FASTVAE_LAMBDA {
            simd::store(gr + j, v, n);
          });
        }
      });
      label_grads_flat<V>(a.z, a.z_label, e0, e1, g, d_z);
    }
  }
}

template <typename scalar_t, int kBytes>
FASTVAE_INLINE void kl_bwd_body(const KlArgs<scalar_t>& a, int64_t b0, int64_t b1, const RowGrads<scalar_t>& rg,
                                const bool* active, scalar_t* d_mq, scalar_t* d_lq,
                                scalar_t* d_mp, scalar_t* d_lp, scalar_t* d_z) {
  using V = VecT<scalar_t, kBytes>;
  if (a.mu_p != nullptr) {
    kl_bwd_impl<true, V>(a, b0, b1, rg, active, d_mq, d_lq, d_mp, d_lp, d_z);
  } else {
    kl_bwd_impl<false, V>(a, b0, b1, rg, active, d_mq, d_lq, d_mp, d_lp, d_z);
  }
}

FASTVAE_SIMD_VARIANTS(kl_bwd_rows, kl_bwd_body,
                      (const KlArgs<scalar_t>& a, int64_t b0, int64_t b1, const RowGrads<scalar_t>& rg,
                       const bool* active, scalar_t* d_mq, scalar_t* d_lq, scalar_t* d_mp, scalar_t* d_lp,
                       scalar_t* d_z),
                      (a, b0, b1, rg, active, d_mq, d_lq, d_mp, d_lp, d_z))

// Free bits: active[j] = (batch mean of terms[:, j]) >= free_bits.
template <typename scalar_t>
void mark_active(const scalar_t* terms, int64_t B, int64_t Z, scalar_t free_bits, bool* active) {
  std::vector<scalar_t> colsum(Z, scalar_t(0));
  scalar_t* __restrict cs = colsum.data();
  for (int64_t b = 0; b < B; ++b) {
    const scalar_t* __restrict t = terms + b * Z;
#pragma omp simd
    for (int64_t j = 0; j < Z; ++j) cs[j] += t[j];
  }
  for (int64_t j = 0; j < Z; ++j) active[j] = !(cs[j] / static_cast<scalar_t>(B) < free_bits);
}

template <typename scalar_t>
KlArgs<scalar_t> kl_args(const at::Tensor& mq, const at::Tensor& lq, const at::Tensor& mp,
                         const at::Tensor& lp, const at::Tensor& z, const at::Tensor& zl) {
  return {mq.const_data_ptr<scalar_t>(), lq.const_data_ptr<scalar_t>(), ptr_or_null<scalar_t>(mp),
          ptr_or_null<scalar_t>(lp),     ptr_or_null<scalar_t>(z),      ptr_or_null<scalar_t>(zl),
          mq.size(1)};
}

// A [B] gradient as (pointer, stride), or (null, 0) when absent.
template <typename scalar_t>
std::pair<const scalar_t*, int64_t> row_grad(const at::Tensor& g) {
  if (!g.defined()) return {nullptr, 0};
  return {g.const_data_ptr<scalar_t>(), g.stride(0)};
}

}  // namespace

void raise_nonfinite(int flags) {
  if (flags == 0) return;
  const int bit = flags & -flags;  // the first argument in schema order
  TORCH_CHECK_VALUE(false, "fastvae: argument '", arg_name(bit),
                    "' contains NaN or infinite values");
}

// kl [B] (and label [B] when z is defined), free bits applied; returns active
// [Z] (or [0] without free bits).
at::Tensor kl_forward(const at::Tensor& mq, const at::Tensor& lq, const at::Tensor& mp, const at::Tensor& lp,
                      const at::Tensor& z, const at::Tensor& zl, double free_bits, at::Tensor& kl,
                      at::Tensor& label) {
  const int64_t B = mq.size(0), Z = mq.size(1);
  const bool clamp = free_bits > 0.0;
  at::Tensor active = at::empty({clamp ? Z : 0}, mq.options().dtype(at::kBool));
  std::atomic<int> flags{0};
  AT_DISPATCH_FLOATING_TYPES(mq.scalar_type(), "fastvae_kl_fwd", [&] {
    const auto a = kl_args<scalar_t>(mq, lq, mp, lp, z, zl);
    scalar_t* klp = kl.data_ptr<scalar_t>();
    scalar_t* labp = label.defined() ? label.data_ptr<scalar_t>() : nullptr;
    const int64_t grain = row_grain(Z);
    if (!clamp) {
      at::parallel_for(0, B, grain, [&](int64_t b0, int64_t b1) {
        kl_rows<scalar_t>(a, b0, b1, klp, labp, nullptr, &flags);
      });
      return;
    }
    at::Tensor terms = at::empty({B, Z}, mq.options());
    scalar_t* tp = terms.data_ptr<scalar_t>();
    at::parallel_for(0, B, grain, [&](int64_t b0, int64_t b1) {
      kl_rows<scalar_t>(a, b0, b1, klp, labp, tp, &flags);
    });
    if (flags.load() != 0) return;
    bool* act = active.data_ptr<bool>();
    const scalar_t fb = static_cast<scalar_t>(free_bits);
    mark_active<scalar_t>(tp, B, Z, fb, act);
    at::parallel_for(0, B, grain, [&](int64_t b0, int64_t b1) {
      clamped_rows<scalar_t>(b0, b1, Z, tp, act, fb, klp);
    });
  });
  raise_nonfinite(flags.load());
  return active;
}

// d mu_q, d logvar_q, d mu_p, d logvar_p (and d z when z is defined) from the
// per-row gradients grad_total / grad_kl / grad_label (each may be undefined).
std::vector<at::Tensor> kl_backward(const at::Tensor& grad_total, const at::Tensor& grad_kl,
                                    const at::Tensor& grad_label, double kl_weight, double label_weight,
                                    const at::Tensor& mq, const at::Tensor& lq, const at::Tensor& mp,
                                    const at::Tensor& lp, const at::Tensor& z, const at::Tensor& zl,
                                    const at::Tensor& active) {
  const int64_t B = mq.size(0), Z = mq.size(1);
  const bool prior = mp.defined();
  auto d_mq = at::empty_like(mq), d_lq = at::empty_like(lq);
  auto d_mp = prior ? at::empty_like(mq) : at::empty({0}, mq.options());
  auto d_lp = prior ? at::empty_like(mq) : at::empty({0}, mq.options());
  auto d_z = z.defined() ? at::empty_like(z) : at::Tensor();
  const bool* act = active.numel() > 0 ? active.const_data_ptr<bool>() : nullptr;
  AT_DISPATCH_FLOATING_TYPES(mq.scalar_type(), "fastvae_kl_bwd", [&] {
    const auto a = kl_args<scalar_t>(mq, lq, mp, lp, z, zl);
    const auto [t, st] = row_grad<scalar_t>(grad_total);
    const auto [k, sk] = row_grad<scalar_t>(grad_kl);
    const auto [l, sl] = row_grad<scalar_t>(grad_label);
    const RowGrads<scalar_t> rg{t, k, l, st, sk, sl, static_cast<scalar_t>(kl_weight),
                                static_cast<scalar_t>(label_weight)};
    scalar_t* dmp = prior ? d_mp.data_ptr<scalar_t>() : nullptr;
    scalar_t* dlp = prior ? d_lp.data_ptr<scalar_t>() : nullptr;
    scalar_t* dz = d_z.defined() ? d_z.data_ptr<scalar_t>() : nullptr;
    at::parallel_for(0, B, row_grain(Z), [&](int64_t b0, int64_t b1) {
      kl_bwd_rows<scalar_t>(a, b0, b1, rg, act, d_mq.data_ptr<scalar_t>(), d_lq.data_ptr<scalar_t>(), dmp, dlp,
                            dz);
    });
  });
  std::vector<at::Tensor> out{d_mq, d_lq, d_mp, d_lp};
  if (z.defined()) out.push_back(d_z);
  return out;
}

// ------------------------------------------------------------ checks --

void check_latent(const at::Tensor& t, const char* name) {
  TORCH_CHECK_TYPE(at::isFloatingType(t.scalar_type()), "fastvae: argument '", name,
                   "' must be a floating-point tensor, got ", t.scalar_type());
  TORCH_CHECK_VALUE(t.dim() == 2, "fastvae: argument '", name, "' must be 2-D [B, Z], got shape ",
                    t.sizes());
}

// `t` matches `ref` (shape [B, Z], dtype); named after `name`.
void check_like(const at::Tensor& t, const char* name, const at::Tensor& ref, const char* ref_name) {
  TORCH_CHECK_TYPE(at::isFloatingType(t.scalar_type()), "fastvae: argument '", name,
                   "' must be a floating-point tensor, got ", t.scalar_type());
  TORCH_CHECK_VALUE(t.sizes() == ref.sizes(), "fastvae: argument '", name, "' must have the shape of '",
                    ref_name, "' ", ref.sizes(), ", got ", t.sizes());
  TORCH_CHECK_TYPE(t.scalar_type() == ref.scalar_type(), "fastvae: argument '", name, "' has dtype ",
                   t.scalar_type(), " but '", ref_name, "' has ", ref.scalar_type(), "; use one dtype");
}

void check_rows(const at::Tensor& t, const char* name, int64_t B, c10::ScalarType dtype) {
  TORCH_CHECK_VALUE(t.dim() == 1 && t.size(0) == B, "fastvae: argument '", name, "' must have shape [", B,
                    "], got ", t.sizes());
  TORCH_CHECK_TYPE(t.scalar_type() == dtype, "fastvae: argument '", name, "' must have dtype ", dtype,
                   ", got ", t.scalar_type());
}

namespace {

// Both prior tensors or neither; checked against mu_q.
bool check_prior(const c10::optional<at::Tensor>& mu_p, const c10::optional<at::Tensor>& logvar_p,
                 const at::Tensor& mu_q) {
  TORCH_CHECK_VALUE(mu_p.has_value() == logvar_p.has_value(),
                    "fastvae: give both 'mu_p' and 'logvar_p', or neither (standard normal prior)");
  if (!mu_p.has_value()) return false;
  check_like(*mu_p, "mu_p", mu_q, "mu_q");
  check_like(*logvar_p, "logvar_p", mu_q, "mu_q");
  return true;
}

}  // namespace

bool check_kl_args(const at::Tensor& mu_q, const at::Tensor& logvar_q, const c10::optional<at::Tensor>& mu_p,
                   const c10::optional<at::Tensor>& logvar_p) {
  check_latent(mu_q, "mu_q");
  check_like(logvar_q, "logvar_q", mu_q, "mu_q");
  return check_prior(mu_p, logvar_p, mu_q);
}

void check_free_bits(double free_bits) {
  TORCH_CHECK_VALUE(free_bits >= 0.0 && std::isfinite(free_bits),
                    "fastvae: argument 'free_bits' must be a finite number >= 0, got ", free_bits);
}

void check_weight(double w, const char* name) {
  TORCH_CHECK_VALUE(std::isfinite(w), "fastvae: argument '", name, "' must be finite, got ", w);
}

void check_active(const at::Tensor& active, int64_t Z) {
  TORCH_CHECK_TYPE(active.scalar_type() == at::kBool, "fastvae: argument 'active' must be bool, got ",
                   active.scalar_type());
  TORCH_CHECK_VALUE(active.dim() == 1 && (active.size(0) == Z || active.size(0) == 0),
                    "fastvae: argument 'active' must have shape [", Z, "] or [0], got ", active.sizes());
}

}  // namespace latent
}  // namespace cpu
}  // namespace fastvae
