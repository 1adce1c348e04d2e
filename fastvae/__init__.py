"""fastvae: fast variational text generation with fused CPU/GPU kernels."""

from fastvae import ops
from fastvae._version import __version__
from fastvae._ext import HAS_EXTENSION
from fastvae.models import CVAE, SLCVAE, Batch, Seq2Seq, SentenceVAE
from fastvae.nn import LSTM

__all__ = ["ops", "LSTM", "SentenceVAE", "CVAE", "SLCVAE", "Seq2Seq", "Batch", "HAS_EXTENSION", "__version__"]
