"""fastvae.ops: the fused ops, each next to its plain-PyTorch ``*_ref`` twin (one module per op)."""

from fastvae.ops import _gemm  # noqa: F401  (registers the fake kernel of the internal _gemm op)
from fastvae.ops.gaussian_kl import gaussian_kl, gaussian_kl_ref
from fastvae.ops.kl_label_loss import kl_label_loss, kl_label_loss_ref
from fastvae.ops.linear_argmax import linear_argmax, linear_argmax_ref
from fastvae.ops.linear_cross_entropy import linear_cross_entropy, linear_cross_entropy_ref
from fastvae.ops.lstm import lstm, lstm_cell, lstm_cell_ref, lstm_ref, lstm_stack, lstm_stack_ref
from fastvae.ops.reparameterize import reparameterize, reparameterize_ref
from fastvae.ops.sample_from_logits import sample_from_logits, sample_from_logits_ref

__all__ = [
    "lstm",
    "lstm_ref",
    "lstm_stack",
    "lstm_stack_ref",
    "lstm_cell",
    "lstm_cell_ref",
    "reparameterize",
    "reparameterize_ref",
    "gaussian_kl",
    "gaussian_kl_ref",
    "kl_label_loss",
    "kl_label_loss_ref",
    "linear_cross_entropy",
    "linear_cross_entropy_ref",
    "linear_argmax",
    "linear_argmax_ref",
    "sample_from_logits",
    "sample_from_logits_ref",
]
