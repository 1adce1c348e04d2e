"""The latent-variable ops of each backend: fused (fastvae.ops) or their ``_ref`` twins."""

from types import SimpleNamespace

from fastvae import ops

_NAMES = ("reparameterize", "gaussian_kl", "kl_label_loss")


def latent_ops(backend):
    """``reparameterize``, ``gaussian_kl`` and ``kl_label_loss`` of the backend (looked up per call)."""
    suffix = "" if backend == "fused" else "_ref"
    return SimpleNamespace(**{name: getattr(ops, name + suffix) for name in _NAMES})
