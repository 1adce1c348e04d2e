// Operator schemas of the fastvae library, and the Python module fastvae._C.
//
// Kernels register per backend with TORCH_LIBRARY_IMPL (csrc/cpu/*.cpp,
// csrc/cuda/*.cu); fake (meta) kernels and autograd are registered from
// Python in fastvae/ops/. Shapes use T = time, B = batch, E = input size,
// H = hidden size.
#include <Python.h>
#include <torch/library.h>

#include <string>

extern "C" {
// Importing fastvae._C runs the static registrations below; the module
// itself is empty.
PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  return PyModule_Create(&module_def);
}
}

namespace fastvae {
namespace cpu {
std::string capability();
}
}  // namespace fastvae

TORCH_LIBRARY(fastvae, m) {
  // What the CPU kernels run with: ISA level of the pointwise loops and
  // whether GEMMs call BLAS directly, e.g. "isa=avx512 blas=direct".
  m.def("cpu_capability() -> str", &fastvae::cpu::capability);
  // Internal: the GEMM the CPU kernels use, exposed for tests and tuning.
  // a [M,K] (or [K,M] if trans_a), b [K,N] (or [N,K] if trans_b) -> [M,N].
  m.def("_gemm(Tensor a, Tensor b, bool trans_a, bool trans_b) -> Tensor");
  // One LSTM layer in one direction over a padded, time-major sequence.
  //   x [T,B,E], h0/c0 [B,H], w_ih [4H,E], w_hh [4H,H], b_ih/b_hh [4H],
  //   lengths int64 [B] on CPU with values in 1..T (None: all T).
  // Returns y [T,B,H] (zero past each length), h_n, c_n [B,H] and what the
  // backward needs: gates [T,B,4H], cprev/tanh_c/hprev [T,B,H] (empty when
  // need_grad is false).
  m.def(
      "lstm_fwd(Tensor x, Tensor h0, Tensor c0, Tensor w_ih, Tensor w_hh, Tensor? b_ih, "
      "Tensor? b_hh, Tensor? lengths, bool reverse, bool need_grad) -> "
      "(Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)");
  // Gradients of lstm_fwd: dx [T,B,E], dh0, dc0 [B,H], dw_ih [4H,E],
  // dw_hh [4H,H], db [4H] (the gradient of b_ih and of b_hh alike).
  m.def(
      "lstm_bwd(Tensor grad_y, Tensor grad_hn, Tensor grad_cn, Tensor x, Tensor w_ih, "
      "Tensor w_hh, Tensor? lengths, Tensor gates, Tensor cprev, Tensor tanh_c, Tensor hprev, "
      "bool reverse) -> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)");
  // A whole nn.LSTM-like stack in one call (one autograd node):
  //   x [T,B,E], h0/c0 [L*D,B,H] (layer-major, D = 2 if bidirectional),
  //   params per layer and direction: w_ih [4H,E_l], w_hh [4H,H] (and b_ih,
  //   b_hh [4H] when the stack has biases), nn.LSTM's flat order; lengths as
  //   for lstm_fwd. Returns y [T,B,D*H] (the top layer, zero past each length),
  //   h_n, c_n [L*D,B,H]. No dropout between layers.
  m.def(
      "lstm_stack(Tensor x, Tensor h0, Tensor c0, Tensor[] params, Tensor? lengths, int num_layers, "
      "bool bidirectional) -> (Tensor, Tensor, Tensor)");
  // lstm_stack and what its backward needs (saved: per layer and direction
  // gates, cprev, tanh_c, hprev, then the input of each layer above the first;
  // empty when need_grad is false).
  m.def(
      "lstm_stack_fwd(Tensor x, Tensor h0, Tensor c0, Tensor[] params, Tensor? lengths, int num_layers, "
      "bool bidirectional, bool need_grad) -> (Tensor, Tensor, Tensor, Tensor[])");
  // Gradients of lstm_stack (None gradients count as zero; h0 gives the state
  // shape): dx [T,B,E], dh0, dc0 [L*D,B,H], dparams in params' order.
  m.def(
      "lstm_stack_bwd(Tensor? grad_y, Tensor? grad_hn, Tensor? grad_cn, Tensor x, Tensor h0, Tensor[] params, "
      "Tensor? lengths, Tensor[] saved, int num_layers, bool bidirectional) -> (Tensor, Tensor, Tensor, Tensor[])");
  // One decoding step: x [B,E], h/c [B,H] -> (h', c') [B,H].
  m.def(
      "lstm_cell(Tensor x, Tensor h, Tensor c, Tensor w_ih, Tensor w_hh, Tensor? b_ih, "
      "Tensor? b_hh) -> "
      "(Tensor, Tensor)");
}
