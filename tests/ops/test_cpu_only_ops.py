"""The C++ ops run on CPU tensors only: a call through ``torch.ops.fastvae`` that mixes CPU
tensors with a meta tensor is a named error.

The dispatcher sends such a call to the op's fake kernel (it also serves the Meta key, which
wins over CPU); without the check in ``_dispatch.register_cpu_fake`` that kernel returned
uninitialised CPU outputs. (The public ops in ``fastvae.ops`` check devices before they call
these.)
"""

import pytest
import torch

import fastvae  # noqa: F401  (registers the ops)
from fastvae.ops.lstm import KERNELS

pytestmark = pytest.mark.skipif(KERNELS.cpu is None, reason="fastvae._C is not built")

OPS = torch.ops.fastvae


def meta(*shape):
    return torch.randn(*shape, device="meta")


def stack_params(meta_index=None):
    params = [torch.randn(16, 3), torch.randn(16, 4), torch.randn(16), torch.randn(16)]
    if meta_index is not None:
        params[meta_index] = params[meta_index].to("meta")
    return params


CALLS = {
    "lstm_stack h0": (lambda: OPS.lstm_stack(torch.randn(2, 5, 3), meta(1, 5, 4), torch.randn(1, 5, 4),
                                             stack_params(), None, 1, False), "lstm_stack", "h0"),
    "lstm_stack params": (lambda: OPS.lstm_stack(torch.randn(2, 5, 3), torch.randn(1, 5, 4), torch.randn(1, 5, 4),
                                                 stack_params(1), None, 1, False), "lstm_stack", "params"),
    "lstm_cell w_hh": (lambda: OPS.lstm_cell(torch.randn(2, 3), torch.randn(2, 4), torch.randn(2, 4),
                                             torch.randn(16, 3), meta(16, 4), None, None), "lstm_cell", "w_hh"),
    "linear_argmax weight": (lambda: OPS.linear_argmax(torch.randn(4, 8), meta(10, 8), None), "linear_argmax",
                             "weight"),
    "_gemm b": (lambda: OPS._gemm(torch.randn(4, 8), meta(10, 8), False, True), "_gemm", "b"),
    "reparameterize logvar": (lambda: OPS.reparameterize(torch.randn(3, 4), meta(3, 4), None, None),
                              "reparameterize", "logvar"),
    "gaussian_kl logvar_q": (lambda: OPS.gaussian_kl(torch.randn(3, 4), meta(3, 4), None, None, 0.0),
                             "gaussian_kl", "logvar_q"),
}


@pytest.mark.parametrize("case", list(CALLS))
def test_a_meta_argument_is_a_named_error(case):
    call, op, argument = CALLS[case]
    with pytest.raises(ValueError, match=f"fastvae::{op}(_fwd)?: argument '{argument}' is on meta"):
        call()


def test_all_cpu_calls_still_run():
    y, h, c = OPS.lstm_stack(torch.randn(2, 5, 3), torch.zeros(1, 5, 4), torch.zeros(1, 5, 4), stack_params(), None,
                             1, False)
    assert y.shape == (2, 5, 4) and h.device.type == "cpu" and torch.isfinite(y).all()
