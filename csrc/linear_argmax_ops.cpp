// Operator schema of the greedy decoding head (fastvae.ops.linear_argmax).
//
// CPU kernel: csrc/cpu/linear_argmax_cpu.cpp; the fake kernel is registered
// in fastvae/ops/linear_argmax.py. Other devices run the reference there (on
// a GPU the product dominates and cuBLAS is the right tool).
#include <torch/library.h>

TORCH_LIBRARY_FRAGMENT(fastvae, m) {
  // Greedy decoding head: hidden [R,H], weight [V,H], bias [V]? ->
  // (index [R] int64, value [R]) = max over V of hidden @ weight^T + bias
  // (ties to the lowest index). Inference only (no autograd).
  m.def("linear_argmax(Tensor hidden, Tensor weight, Tensor? bias) -> (Tensor, Tensor)");
}
