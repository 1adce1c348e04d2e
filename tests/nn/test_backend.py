"""fastvae.nn.backend: the backend picks fastvae's op or its plain-PyTorch twin, by name."""

import pytest

from fastvae import ops
from fastvae.nn.backend import BACKENDS, backend_op, check_backend

NAMES = ("lstm", "lstm_cell", "linear_cross_entropy", "linear_argmax", "reparameterize", "gaussian_kl", "kl_label_loss")


@pytest.mark.parametrize("name", NAMES)
def test_fused_is_the_op_and_reference_its_twin(name):
    assert BACKENDS == ("fused", "reference")
    assert backend_op("fused", name) is getattr(ops, name)
    assert backend_op("reference", name) is getattr(ops, name + "_ref")


def test_an_unknown_backend_is_named():
    assert check_backend("reference") == "reference"
    for bad in ("cpu", "triton", None):  # the kernels are not a backend
        with pytest.raises(ValueError, match=r"backend must be one of \('fused', 'reference'\), got"):
            backend_op(bad, "lstm")
