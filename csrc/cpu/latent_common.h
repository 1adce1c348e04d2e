// What the CPU kernels of the latent ops share (reparameterize_cpu.cpp,
// gaussian_kl_cpu.cpp, kl_label_loss_cpu.cpp; schemas in csrc/<op>_ops.cpp):
// the vector exp, the non-finite detector, the named argument checks and the
// KL row loops of gaussian_kl and kl_label_loss (latent_common.cpp).
//
// Every [B, Z] tensor is made contiguous. Element-wise work runs as flat
// loops over tiles of whole rows (so it vectorizes however small Z is),
// written on the fixed-width vectors of vec_ext.h and compiled once per
// ISA level (generic SSE2 / AVX2 / AVX-512, FASTVAE_SIMD_VARIANTS), with the
// vector exp below (float) or libm lane by lane (double); row sums then read
// the tile. Rows/elements are split over threads with a grain of ~16k
// elements, so small batches stay on one thread. The forward loops also fold
// a NaN/inf detector into their reductions (x * 0 is NaN exactly when x is
// not finite), so non-finite inputs raise a ValueError naming the argument
// without a separate pass over the data.
#pragma once

#include <ATen/ATen.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <type_traits>
#include <vector>

#include "isa.h"
#include "vec_ext.h"

namespace fastvae {
namespace cpu {
namespace latent {

constexpr int64_t kGrainElems = 16384;

inline int64_t row_grain(int64_t Z) { return std::max<int64_t>(1, kGrainElems / std::max<int64_t>(Z, 1)); }

// The vector of scalar_t with kBytes bytes.
template <typename scalar_t, int kBytes>
using VecT = simd::Vec<scalar_t, kBytes / static_cast<int>(sizeof(scalar_t))>;

// exp_approx clamps its argument to [-87, 88] (so about 1.6e-38 .. 1.7e38);
// log-variances may lie anywhere, so the latent ops take exp(x/2)^2, which
// overflows to inf past float's range and underflows to 0 (or a subnormal)
// below it, as std::exp does. One multiply more; NaN still flows through.
// Doubles use libm lane by lane (gradcheck accuracy; not a fast path).
template <typename V>
FASTVAE_INLINE V exp_(V x) {
  if constexpr (std::is_same_v<simd::elem_t<V>, float>) {
    const V half = simd::exp_approx(0.5f * x);
    return half * half;
  } else {
    for (int l = 0; l < simd::lanes_of<V>; ++l) x[l] = std::exp(x[l]);
    return x;
  }
}

// Bits of the non-finite detector, one per checked argument.
enum Arg : int { kMu = 1, kLogvar = 2, kEps = 4, kMuQ = 8, kLogvarQ = 16, kMuP = 32, kLogvarP = 64, kZ = 128, kZLabel = 256 };

// A ValueError naming the first argument (in schema order) whose bit is set; nothing when flags == 0.
void raise_nonfinite(int flags);

// probe: the lanes of sum(x * 0) over an argument's elements.
template <typename V>
FASTVAE_INLINE void flag_if_nan(std::atomic<int>* flags, V probe, int bit) {
  if (simd::any_nan(probe)) flags->fetch_or(bit, std::memory_order_relaxed);
}

// ------------------------------------------------------------ checks --
// Each raises a ValueError / TypeError naming the argument.

// t is a floating-point [B, Z] tensor.
void check_latent(const at::Tensor& t, const char* name);
// `t` matches `ref` (shape [B, Z], dtype); named after `name`.
void check_like(const at::Tensor& t, const char* name, const at::Tensor& ref, const char* ref_name);
// t is [B] with the given dtype (a per-row gradient).
void check_rows(const at::Tensor& t, const char* name, int64_t B, c10::ScalarType dtype);
// The posterior (mu_q [B, Z], logvar_q like it) and the prior (both tensors like mu_q, or neither);
// returns whether there is a prior.
bool check_kl_args(const at::Tensor& mu_q, const at::Tensor& logvar_q, const c10::optional<at::Tensor>& mu_p,
                   const c10::optional<at::Tensor>& logvar_p);
void check_free_bits(double free_bits);
void check_weight(double w, const char* name);
// active: bool [Z] or [0].
void check_active(const at::Tensor& active, int64_t Z);

inline at::Tensor opt_contiguous(const c10::optional<at::Tensor>& t) {
  return t.has_value() ? t->contiguous() : at::Tensor();
}

template <typename scalar_t>
const scalar_t* ptr_or_null(const at::Tensor& t) {
  return t.defined() ? t.const_data_ptr<scalar_t>() : nullptr;
}

// ------------------------------------------------------------ KL rows --
// The KL of gaussian_kl, with kl_label_loss's label term folded into the
// same pass over the rows when z is defined. All tensors contiguous; mp/lp
// (the prior) and z/zl undefined when absent.

// kl [B] (and label [B] when z is defined), free bits applied; returns active
// [Z] (or [0] without free bits).
at::Tensor kl_forward(const at::Tensor& mq, const at::Tensor& lq, const at::Tensor& mp, const at::Tensor& lp,
                      const at::Tensor& z, const at::Tensor& zl, double free_bits, at::Tensor& kl,
                      at::Tensor& label);

// d mu_q, d logvar_q, d mu_p, d logvar_p (and d z when z is defined) from the
// per-row gradients grad_total / grad_kl / grad_label (each may be undefined).
std::vector<at::Tensor> kl_backward(const at::Tensor& grad_total, const at::Tensor& grad_kl,
                                    const at::Tensor& grad_label, double kl_weight, double label_weight,
                                    const at::Tensor& mq, const at::Tensor& lq, const at::Tensor& mp,
                                    const at::Tensor& lp, const at::Tensor& z, const at::Tensor& zl,
                                    const at::Tensor& active);

}  // namespace latent
}  // namespace cpu
}  // namespace fastvae
