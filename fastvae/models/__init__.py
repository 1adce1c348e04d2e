"""fastvae.models: SentenceVAE, CVAE, SLCVAE and Seq2Seq, each on the fused or the reference backend.

Each model registers itself in :mod:`fastvae.models.registry` under its model
name; importing this package imports them all (SentenceVAE first, so the
registry lists SentenceVAE, CVAE, SLCVAE, Seq2Seq).
"""

from fastvae.models.sentence_vae import SentenceVAE  # noqa: I001  (first: the registry's order)
from fastvae.models.conditional import CVAE, SLCVAE, Seq2Seq
from fastvae.models.batch import Batch
from fastvae.models.outputs import LikelihoodTerms, ModelOutput
from fastvae.models.phases import TrainingPhase

__all__ = ["Batch", "ModelOutput", "LikelihoodTerms", "TrainingPhase", "SentenceVAE", "CVAE", "SLCVAE", "Seq2Seq"]
