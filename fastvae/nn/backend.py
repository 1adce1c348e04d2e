"""The backend of a module or model: ``"fused"`` (fastvae's ops) or ``"reference"`` (their plain-PyTorch twins).

Two words, two choices:

* **backend** -- which implementation of the math runs: ``"fused"``, the
  :mod:`fastvae.ops` (``lstm``, ``linear_cross_entropy``, ``gaussian_kl``,
  ...), or ``"reference"``, each op's ``*_ref`` twin and ``torch.nn.LSTM``
  (same parameters, same results up to rounding). Models and modules take it
  as their ``backend`` argument.
* **kernels** -- which compiled code a fused op runs: the C++ CPU kernels of
  ``fastvae._C`` or the Triton GPU kernels of :mod:`fastvae.kernels`. The op
  picks them from its tensors' device and dtype; no argument chooses them.
"""

from typing import Callable

from fastvae import ops

BACKENDS = ("fused", "reference")


def check_backend(backend: str) -> str:
    """``backend`` itself when it is one of :data:`BACKENDS`, else a ValueError naming it."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    return backend


def backend_op(backend: str, name: str) -> Callable:
    """The op ``name`` of ``backend``: ``fastvae.ops.<name>`` (fused) or its twin ``fastvae.ops.<name>_ref``.

    Looked up at each call, so a patched ``fastvae.ops`` attribute is the one that runs.
    """
    return getattr(ops, name if check_backend(backend) == "fused" else name + "_ref")
