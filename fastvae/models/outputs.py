"""What the models return: a training step's loss terms, and the pieces that evaluation scores."""

from dataclasses import dataclass
from typing import Callable, Optional

import torch

Tensor = torch.Tensor


@dataclass
class ModelOutput:
    """Batch means of one training step's terms (``loss`` is what to backpropagate).

    nll: mean negative log-likelihood per sentence; kl: mean KL(q || p) per
    sentence (unweighted); label: mean ``||z - z_label||^2`` (SLCVAE); bow:
    mean bag-of-words NLL per sentence (CVAE with ``bow=True``).
    """

    loss: Tensor
    nll: Tensor
    kl: Optional[Tensor] = None
    label: Optional[Tensor] = None
    bow: Optional[Tensor] = None


@dataclass
class LikelihoodTerms:
    """One batch's pieces for evaluation (``model.likelihood_terms(batch)``; no dropout in eval mode).

    lengths: ``[B]`` target lengths (``<eos>`` included), CPU int64.
    rec_nll(z): ``z [B, Z]`` -> ``-log p(x|z[,c])`` per sentence ``[B]``
        (a model without a latent: ``rec_nll(None)``, the exact NLL).
    mu_q, logvar_q: ``[B, Z]`` q(z|x[,c]) (None without a latent).
    mu_p, logvar_p: ``[B, Z]`` p(z[|c]) (zeros for SentenceVAE's N(0, I); None without a latent).
    """

    lengths: Tensor
    rec_nll: Callable[[Optional[Tensor]], Tensor]
    mu_q: Optional[Tensor] = None
    logvar_q: Optional[Tensor] = None
    mu_p: Optional[Tensor] = None
    logvar_p: Optional[Tensor] = None
