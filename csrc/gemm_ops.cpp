// Operator schema of _gemm: the GEMM the CPU kernels use (csrc/cpu/blas.h),
// exposed for tests and tuning. Not a public op (the underscore); its CPU
// kernel is csrc/cpu/gemm_cpu.cpp, its fake kernel fastvae/ops/_gemm.py.
#include <torch/library.h>

TORCH_LIBRARY_FRAGMENT(fastvae, m) {
  // a [M,K] (or [K,M] if trans_a), b [K,N] (or [N,K] if trans_b) -> [M,N],
  // both float32 or both float64.
  m.def("_gemm(Tensor a, Tensor b, bool trans_a, bool trans_b) -> Tensor");
}
