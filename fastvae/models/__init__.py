"""fastvae.models: SentenceVAE, CVAE, SLCVAE and Seq2Seq, each on the fused or the reference backend."""

from fastvae.models.base import Batch, ModelOutput
from fastvae.models.conditional import CVAE, SLCVAE, Seq2Seq
from fastvae.models.sentence_vae import SentenceVAE

__all__ = ["Batch", "ModelOutput", "SentenceVAE", "CVAE", "SLCVAE", "Seq2Seq"]
