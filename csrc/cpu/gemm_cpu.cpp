// CPU kernel of _gemm (schema: csrc/gemm_ops.cpp): blas.h's tile GEMM
// (gemm_tiles) on two float tensors where the CPU runs the tile kernels --
// even where gemm<float> hands such products to MKL (blas_first), so the
// tiles are tested on every CPU -- else blas.h's gemm.
#include <ATen/ATen.h>
#include <torch/library.h>

#include "blas.h"

namespace fastvae {
namespace cpu {
namespace {

at::Tensor gemm_op(const at::Tensor& a_in, const at::Tensor& b_in, bool trans_a, bool trans_b) {
  TORCH_CHECK_VALUE(a_in.dim() == 2 && b_in.dim() == 2, "fastvae._gemm: a and b must be 2-D");
  TORCH_CHECK_TYPE(a_in.scalar_type() == b_in.scalar_type() &&
                       (a_in.scalar_type() == at::kFloat || a_in.scalar_type() == at::kDouble),
                   "fastvae._gemm: a and b must both be float32 or both float64");
  const auto a = a_in.contiguous(), b = b_in.contiguous();
  const int64_t M = trans_a ? a.size(1) : a.size(0), K = trans_a ? a.size(0) : a.size(1);
  const int64_t N = trans_b ? b.size(0) : b.size(1);
  TORCH_CHECK_VALUE((trans_b ? b.size(1) : b.size(0)) == K, "fastvae._gemm: inner sizes differ");
  auto c = at::empty({M, N}, a.options());
  if (a.scalar_type() == at::kFloat && tiled_float_gemm()) {
    gemm_tiles(trans_a, trans_b, M, N, K, a.data_ptr<float>(), a.size(1), b.data_ptr<float>(), b.size(1), 0,
               c.data_ptr<float>(), N);
    return c;
  }
  AT_DISPATCH_FLOATING_TYPES(a.scalar_type(), "fastvae_gemm", [&] {
    gemm<scalar_t>(trans_a, trans_b, M, N, K, 1, a.data_ptr<scalar_t>(), a.size(1),
                   b.data_ptr<scalar_t>(), b.size(1), 0, c.data_ptr<scalar_t>(), N);
  });
  return c;
}

}  // namespace

TORCH_LIBRARY_IMPL(fastvae, CPU, m) { m.impl("_gemm", &gemm_op); }

}  // namespace cpu
}  // namespace fastvae
