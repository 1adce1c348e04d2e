"""Loading of the compiled extension ``fastvae._C``, guarded.

``import fastvae`` must work without the extension (a failed or skipped
build): the fast CPU ops then fall back to their plain-PyTorch reference and
warn once, naming the command that rebuilds it.
"""

import importlib.util
import warnings

import torch  # noqa: F401  (libtorch must be loaded before the extension)

REBUILD_COMMAND = 'pip install -e ".[test]" --no-build-isolation'

try:
    from fastvae import _C  # noqa: F401  (registers the torch.ops.fastvae.* kernels)

    HAS_EXTENSION = True
    EXTENSION_ERROR = None
except (ImportError, OSError) as exc:  # not built, or built against another torch
    HAS_EXTENSION = False
    EXTENSION_ERROR = exc

HAS_TRITON = importlib.util.find_spec("triton") is not None

_warned = False


def warn_fallback(op_name):
    """Warn (once per process) that ``op_name`` runs its reference instead."""
    global _warned
    if _warned:
        return
    _warned = True
    warnings.warn(
        f"fastvae: the compiled extension fastvae._C is not available ({EXTENSION_ERROR}); "
        f"{op_name} and the other fast CPU ops run their plain-PyTorch reference instead. "
        f"Rebuild the extension from the source checkout with: {REBUILD_COMMAND}",
        RuntimeWarning,
        stacklevel=3,
    )
