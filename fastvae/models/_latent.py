"""The latent-variable ops of each backend: fused (fastvae.ops) or their ``_ref`` twins."""

from types import SimpleNamespace

from fastvae.nn.backend import backend_op

_NAMES = ("reparameterize", "gaussian_kl", "kl_label_loss")


def latent_ops(backend):
    """``reparameterize``, ``gaussian_kl`` and ``kl_label_loss`` of the backend (looked up per call)."""
    return SimpleNamespace(**{name: backend_op(backend, name) for name in _NAMES})
