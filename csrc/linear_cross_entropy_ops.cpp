// Operator schemas of the fused linear + cross-entropy (fastvae.ops.linear_cross_entropy).
//
// Shapes: N = rows (tokens), H = hidden size, V = vocabulary (classes).
//   hidden [N, H] float, weight [V, H], bias [V] or None (hidden's dtype),
//   target [N] int64, each in [0, V) or equal to ignore_index.
// reduction is "none" (loss [N], 0 at ignored rows), "sum" or "mean" (a
// scalar; "mean" divides by the number of non-ignored targets, 0 if none).
// grad_mask = (d_hidden, d_weight, d_bias): which gradients to compute.
//
// The kernels live in csrc/cpu/linear_cross_entropy_cpu.cpp (CPU) and
// kernels/linear_cross_entropy.py (Triton, registered from Python as
// fastvae::linear_ce_{fwd,bwd}_triton with the same schemas); autograd and
// fake kernels are registered in fastvae/ops/linear_cross_entropy.py. The op
// names keep their short form linear_ce_* (the registered names are API).
#include <torch/library.h>

TORCH_LIBRARY_FRAGMENT(fastvae, m) {
  // Loss, and for reduction "mean"/"sum" the gradients of the loss (upstream
  // gradient 1), computed chunk by chunk during the forward so the [N, V]
  // logits never exist. Returns
  //   loss  [] ("mean"/"sum") or [N] ("none"),
  //   lse   [N]  log-sum-exp of each row's logits (what "none" needs to
  //              recompute its gradients in linear_ce_bwd); 0 at ignored
  //              rows, whose logits are never computed,
  //   d_hidden [N, H], d_weight [V, H], d_bias [V]: each empty ([0]) unless
  //              its grad_mask entry is set (and, for d_bias, bias given).
  // grad_mask must be all false for reduction "none".
  m.def(
      "linear_ce_fwd(Tensor hidden, Tensor weight, Tensor? bias, Tensor target, int ignore_index, "
      "str reduction, bool[3] grad_mask) -> (Tensor, Tensor, Tensor, Tensor, Tensor)");
  // Gradients from the upstream gradient grad_loss ([N] for "none", [] for
  // "mean"/"sum") by recomputing each chunk's logits from lse [N] (the second
  // output of linear_ce_fwd). Returns d_hidden [N, H], d_weight [V, H],
  // d_bias [V], each empty ([0]) unless requested by grad_mask.
  m.def(
      "linear_ce_bwd(Tensor grad_loss, Tensor hidden, Tensor weight, Tensor? bias, Tensor target, "
      "Tensor lse, int ignore_index, str reduction, bool[3] grad_mask) -> (Tensor, Tensor, Tensor)");
}
