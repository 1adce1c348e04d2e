// Named argument checks shared by the CPU kernels. They raise ValueError /
// TypeError in Python (TORCH_CHECK_VALUE / TORCH_CHECK_TYPE) and name the
// argument, so a bad call never reaches a kernel loop.
#pragma once

#include <ATen/ATen.h>

#include <vector>

namespace fastvae {

// FASTVAE_CHECK_SHAPE(w_hh, 4 * H, H): exact shape.
#define FASTVAE_CHECK_SHAPE(t, ...)                                                  \
  TORCH_CHECK_VALUE((t).sizes() == at::IntArrayRef(std::vector<int64_t>{__VA_ARGS__}), \
                    "fastvae: argument '" #t "' must have shape ",                   \
                    at::IntArrayRef(std::vector<int64_t>{__VA_ARGS__}), ", got ", (t).sizes())

#define FASTVAE_CHECK_DIM(t, n)                                                       \
  TORCH_CHECK_VALUE((t).dim() == (n), "fastvae: argument '" #t "' must be ", (n), \
                    "-D, got a ", (t).dim(), "-D tensor")

#define FASTVAE_CHECK_FLOAT(t)                                                         \
  TORCH_CHECK_TYPE(at::isFloatingType((t).scalar_type()), "fastvae: argument '" #t \
                   "' must be a floating-point tensor, got ", (t).scalar_type())

// lengths: int64 CPU tensor [B], every value in 1..T.
inline void check_lengths(const at::Tensor& lengths, int64_t B, int64_t T) {
  TORCH_CHECK_TYPE(lengths.scalar_type() == at::kLong,
                   "fastvae: argument 'lengths' must be int64, got ", lengths.scalar_type());
  TORCH_CHECK_VALUE(lengths.device().is_cpu(), "fastvae: argument 'lengths' must be on the CPU");
  TORCH_CHECK_VALUE(lengths.dim() == 1 && lengths.size(0) == B,
                    "fastvae: argument 'lengths' must have shape [", B, "] (one per sequence), got ",
                    lengths.sizes());
  const auto len = lengths.contiguous();
  const int64_t* p = len.data_ptr<int64_t>();
  for (int64_t b = 0; b < B; ++b) {
    TORCH_CHECK_VALUE(p[b] >= 1 && p[b] <= T, "fastvae: argument 'lengths' must lie in 1..", T,
                      " (the sequence length), got lengths[", b, "] = ", p[b]);
  }
}

}  // namespace fastvae
