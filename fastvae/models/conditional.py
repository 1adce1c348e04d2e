"""Conditional text models: CVAE (Zhao et al. 2017), SLCVAE (Zhang et al. 2019) and Seq2Seq.

All take a :class:`Batch` with a context (the condition c) and a target (x).
The context is one token sequence (a dialogue context: its utterances joined).
"""

from contextlib import contextmanager
from typing import Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F

from fastvae.models._latent import latent_ops
from fastvae.models._parts import ConditionalDecoder, GaussianNet, UtteranceEncoder
from fastvae.models.base import BaseModel, evaluating
from fastvae.models.batch import Batch
from fastvae.models.checks import check_tokens, check_weight
from fastvae.models.generation import DecodeOptions
from fastvae.models.outputs import LikelihoodTerms, ModelOutput
from fastvae.models.phases import (
    CVAE_PHASE,
    LABELING_PHASE,
    LATENT_LOSS_OPTIONS,
    TrainingPhase,
    check_optimizer,
    step_phases,
)
from fastvae.models.registry import register
from fastvae.nn import VocabProjection

Tensor = torch.Tensor


class _Conditional(BaseModel):
    """Embedding + context encoder + decoder conditioned on ``[h_c, z]`` (or ``h_c``)."""

    is_conditional = True

    def _utterance_encoder(self):
        """A fresh encoder of the configured structure (context, target and labeling encoders)."""
        cfg = self.config
        return UtteranceEncoder(cfg["embed_dim"], cfg["hidden_size"], cfg["num_layers"], cfg["bidirectional"], cfg["backend"])

    def _build_common(self, latent_size):
        cfg = self.config
        self.embedding = self._make_embedding()
        self.context_encoder = self._utterance_encoder()
        self.decoder = ConditionalDecoder(
            cfg["embed_dim"],
            cfg["hidden_size"],
            cfg["num_layers"],
            self.context_encoder.output_size + latent_size,
            cfg["vocab_size"],
            cfg["backend"],
        )

    def encode_context(self, context: Tensor, context_lengths: Tensor) -> Tensor:
        """``context [B, T]`` -> ``h_c [B, D*H]``."""
        lengths = check_tokens("context", context, context_lengths, self.config["vocab_size"])
        return self.context_encoder(self.embedding(context), lengths)

    @torch.no_grad()
    def generate(
        self,
        context: Tensor,
        context_lengths: Tensor,
        num_samples: int = 1,
        strategy: str = "greedy",
        max_length: int = 30,
        temperature: float = 1.0,
        top_k: int = 0,
        top_p: float = 1.0,
        beam_size: int = 4,
        generator: Optional[torch.Generator] = None,
    ) -> Tuple[Tensor, Tensor]:
        """``num_samples`` responses per context (z drawn from the prior each time).

        Subclasses give the decoder's conditioning in ``_condition(h_c, generator)``.
        Seq2Seq (no latent) with ``strategy="beam"`` returns the ``num_samples``
        best beam hypotheses, best first (the beam widens to ``num_samples``
        when narrower); every other case decodes ``num_samples`` independent rows.

        Returns ``tokens [B, num_samples, max_length]`` (padded after
        ``<eos>``) and ``lengths [B, num_samples]`` (counting ``<eos>``). All
        B * num_samples rows decode in one batched loop; dropout is off.
        """
        if not isinstance(num_samples, int) or num_samples < 1:
            raise ValueError(f"num_samples must be a positive integer, got {num_samples!r}")
        options = DecodeOptions(strategy, max_length, temperature, top_k, top_p, beam_size).check()
        # without a latent, beam search returns its n best hypotheses instead of n copies of the best
        n_best = not self.has_latent and options.strategy == "beam"
        options.beam_size = self.beam_width(options.strategy, options.beam_size, num_samples)
        V = self.config["vocab_size"]
        if options.strategy == "beam" and options.beam_size > V:
            # a wider beam holds hypotheses that were never real (and its [rows * beam, V] scores can exhaust memory)
            raise ValueError(
                f"beam_size must be at most the vocabulary size ({V}), got {options.beam_size}"
                + (" (a Seq2Seq's beam widens to num_samples)" if n_best else "")
            )
        with evaluating(self):
            h_c = self.encode_context(context, context_lengths)
            if not n_best:
                h_c = h_c.repeat_interleave(num_samples, dim=0)
            cond = self._condition(h_c, generator)
            tokens, lengths = self._decode_from(cond, options, generator, num_return=num_samples if n_best else 1)
        B = context.shape[0]
        return tokens.view(B, num_samples, -1), lengths.view(B, num_samples)


    def beam_width(self, strategy: str, beam_size: int, num_samples: int) -> int:
        """The beam ``generate`` runs: a Seq2Seq's n-best list widens a beam search to ``num_samples``."""
        return max(beam_size, num_samples) if not self.has_latent and strategy == "beam" else beam_size


@register("cvae")
class CVAE(_Conditional):
    """Conditional VAE (Zhao et al. 2017): KL annealing, word dropout, optional bag-of-words loss.

    prior p(z|c): MLP (tanh hidden) on h_c; recognition q(z|x,c): linear on
    ``[h_c, h_x]``; decoder conditioned on ``[h_c, z]``. Loss per example:
    ``NLL(x|z,c) + kl_weight * KL(q || p)`` (+ ``NLL_bow(x | h_c, z)`` with
    ``bow=True``: an MLP on ``[h_c, z]`` predicting every target word).
    Defaults follow the SLCVAE paper's DailyDialog setup (E = H = 32, Z = 8,
    2 layers).
    """

    has_latent = True
    summary = "conditional VAE (Zhao et al. 2017): one input in, several different outputs (z from the prior)"

    def __init__(
        self,
        vocab_size: int,
        embed_dim: int = 32,
        hidden_size: int = 32,
        latent_size: int = 8,
        num_layers: int = 2,
        bidirectional: bool = False,
        prior_hidden_size: Optional[int] = None,
        bow: bool = False,
        bow_hidden_size: Optional[int] = None,
        word_dropout: float = 0.0,
        embed_dropout: float = 0.0,
        pad_id: int = 0,
        unk_id: int = 1,
        sos_id: int = 2,
        eos_id: int = 3,
        backend: str = "fused",
    ) -> None:
        super().__init__()
        self._store_config(locals())
        self._build_cvae()

    def _build_cvae(self):
        cfg = self.config
        Z = cfg["latent_size"]
        self._build_common(latent_size=Z)
        self.target_encoder = self._utterance_encoder()
        C, X = self.context_encoder.output_size, self.target_encoder.output_size
        self.prior = GaussianNet(C, Z, hidden_size=cfg["prior_hidden_size"] or max(2 * Z, cfg["hidden_size"]))
        self.recognition = GaussianNet(C + X, Z)
        if cfg["bow"]:
            bow_hidden = cfg["bow_hidden_size"] or cfg["hidden_size"]
            self.bow_hidden = torch.nn.Linear(C + Z, bow_hidden)
            self.bow_out = VocabProjection(bow_hidden, cfg["vocab_size"], cfg["backend"])

    def _posterior_and_prior(self, batch):
        target_lengths, context_lengths = self._check_batch(batch)
        h_c = self.context_encoder(self.embedding(batch.context), context_lengths)
        h_x = self.target_encoder(self.embedding(batch.target), target_lengths)
        mu_q, logvar_q = self.recognition(torch.cat([h_c, h_x], dim=1))
        mu_p, logvar_p = self.prior(h_c)
        return (target_lengths, context_lengths), h_c, (mu_q, logvar_q), (mu_p, logvar_p)

    def _reconstruction(self, batch, target_lengths, h_c, z):
        """Decoder NLL (summed over the batch) and the bag-of-words NLL (or None)."""
        inputs, targets = self._decoder_io(batch)
        cond = torch.cat([h_c, z], dim=1)
        nll = self.decoder.nll(self.embedding(inputs, word_dropout=True), targets, target_lengths, cond)
        if not self.config["bow"]:
            return nll, None
        hidden = torch.tanh(self.bow_hidden(cond))  # [B, Hb]
        B, T = targets.shape
        valid = torch.arange(T).unsqueeze(0) < target_lengths.unsqueeze(1)
        words = targets.masked_fill(~valid.to(targets.device), -100).reshape(-1)
        bow = self.bow_out.loss(hidden.unsqueeze(1).expand(B, T, -1).reshape(B * T, -1), words, reduction="sum")
        return nll, bow

    def forward(
        self,
        batch: Batch,
        kl_weight: float = 1.0,
        free_bits: float = 0.0,
        generator: Optional[torch.Generator] = None,
    ) -> ModelOutput:
        kl_weight = check_weight("kl_weight", kl_weight)
        (target_lengths, _), h_c, (mu_q, logvar_q), (mu_p, logvar_p) = self._posterior_and_prior(batch)
        z = latent_ops(self.backend).reparameterize(mu_q, logvar_q, generator=generator)
        nll, bow = self._reconstruction(batch, target_lengths, h_c, z)
        kl = latent_ops(self.backend).gaussian_kl(mu_q, logvar_q, mu_p, logvar_p, free_bits=free_bits)
        B = batch.target.shape[0]
        loss = nll + kl_weight * kl.sum() + (bow if bow is not None else 0.0)
        return ModelOutput(
            loss=loss / B,
            nll=nll.detach() / B,
            kl=kl.detach().mean(),
            bow=None if bow is None else bow.detach() / B,
        )

    def likelihood_terms(self, batch: Batch) -> LikelihoodTerms:
        """q(z|x,c), p(z|c) and ``-log p(x|z,c)`` of ``batch`` (see :class:`LikelihoodTerms`; SLCVAE's
        labeling network takes no part)."""
        (lengths, _), h_c, (mu_q, logvar_q), (mu_p, logvar_p) = self._posterior_and_prior(batch)
        inputs, targets = self._decoder_io(batch)
        embedded = self.embedding(inputs)
        return LikelihoodTerms(
            lengths,
            lambda z: self.decoder.nll(embedded, targets, lengths, torch.cat([h_c, z], dim=1), reduction="none"),
            mu_q, logvar_q, mu_p, logvar_p,
        )

    def _condition(self, h_c, generator):
        mu_p, logvar_p = self.prior(h_c)
        return torch.cat([h_c, latent_ops(self.backend).reparameterize(mu_p, logvar_p, generator=generator)], dim=1)


@contextmanager
def _frozen(parameters):
    """Parameters receive no gradient inside the block (requires_grad off, restored after)."""
    parameters = list(parameters)
    flags = [p.requires_grad for p in parameters]
    for p in parameters:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in zip(parameters, flags):
            p.requires_grad_(flag)


@register("slcvae")
class SLCVAE(CVAE):
    """Self-labeling CVAE (Zhang et al. 2019, arXiv 1903.10842).

    The CVAE plus a labeling network g(x, c) -- context and target encoders of
    the CVAE's structure and a linear map to the latent size -- giving a
    deterministic ``z_label``, the code the current decoder decodes best.
    Training alternates two phases (:meth:`training_phases`; :meth:`train_step` runs both):

    * CVAE phase, ``model(batch, kl_weight)``: ``NLL(x|z,c) + kl_weight * KL(q||p)
      + label_weight * ||z - z_label||^2`` (``fastvae.ops.kl_label_loss``);
      ``z_label`` is computed without gradient, the labeling net is not updated.
      ``label_weight`` defaults to ``label_loss_weight * kl_weight`` (annealed
      with the KL weight).
    * labeling phase, ``model.labeling_loss(batch)``: ``NLL(x | z = g(x,c), c)``;
      every CVAE parameter (embedding, encoders, decoder) is frozen: only g gets
      gradients.

    ``label_loss`` chooses the label term of the CVAE phase: ``"l2"`` (the
    paper's ``||z - z_label||^2``, default) or ``"sigmoid-ce"`` (the
    authors' code, zhangfangdeng/SLCVAE: ``mean_j CE_sigmoid(logits =
    z_label_j, labels = z_j)``, i.e. ``mean_j [max(l_j, 0) - l_j z_j +
    log(1 + exp(-|l_j|))]`` with ``l = z_label``, the mean over the latent
    dimensions; the code weighs it 0.1, constant). Either way ``z_label``
    is a fixed target in that phase; the sigmoid term pulls z along
    ``z_label`` linearly, where the L2 term pulls it onto ``z_label``.
    With ``"sigmoid-ce"`` the labeling network ends in a tanh (z_label in
    (-1, 1), as the code's GRU state is). The term stays linear in z and
    unbounded below, though: at the code's sizes (``--preset slcvae-code``)
    a run diverged within its first epoch all the same (|z| > 100 by step
    200, the loss at 6e11 by step 800; with an unbounded z_label it had
    diverged within 100 steps). The likely mechanism, not proven: under
    Adam the learned prior, which only the KL trains, follows q at full speed
    however small the KL weight, so nothing holds z back. The L2 term pulls
    z onto z_label instead.

    ``label_prior_weight`` (fastvae's addition, default 0 = the paper's
    objective): adds ``label_prior_weight * 0.5 * ||(g(x,c) - mu_p) / sigma_p||^2``
    to the labeling loss, i.e. with weight 1 g estimates the MAP code
    ``argmax_z log p(x|z,c) + log p(z|c)`` instead of the maximum-likelihood one.
    Unregularized, g can raise the decoder's likelihood by growing
    ``||z_label||`` without bound, and the label loss then drags q away from
    the prior that generation samples from; the prior term keeps ``z_label``
    where the prior puts its mass.
    """

    has_labeling_phase = True
    summary = "self-labeling CVAE (Zhang et al. 2019): one input in, several different outputs (z from the prior)"

    def __init__(
        self,
        vocab_size: int,
        embed_dim: int = 32,
        hidden_size: int = 32,
        latent_size: int = 8,
        num_layers: int = 2,
        bidirectional: bool = False,
        prior_hidden_size: Optional[int] = None,
        bow: bool = False,
        bow_hidden_size: Optional[int] = None,
        label_loss_weight: float = 1.0,
        label_prior_weight: float = 0.0,
        label_loss: str = "l2",
        word_dropout: float = 0.0,
        embed_dropout: float = 0.0,
        pad_id: int = 0,
        unk_id: int = 1,
        sos_id: int = 2,
        eos_id: int = 3,
        backend: str = "fused",
    ) -> None:
        torch.nn.Module.__init__(self)
        self._store_config(locals())
        self._build_cvae()
        cfg = self.config
        for name in ("label_loss_weight", "label_prior_weight"):
            cfg[name] = check_weight(name, cfg[name])
        if cfg["label_loss"] not in LABEL_LOSSES:
            raise ValueError(f"label_loss must be one of {', '.join(map(repr, LABEL_LOSSES))}, got {cfg['label_loss']!r}")
        self.label_context_encoder = self._utterance_encoder()
        self.label_target_encoder = self._utterance_encoder()
        size = self.label_context_encoder.output_size + self.label_target_encoder.output_size
        self.label_head = torch.nn.Linear(size, cfg["latent_size"])

    def training_phases(self) -> Tuple[TrainingPhase, ...]:
        """The CVAE phase (``model(batch, ...)`` on :meth:`cvae_parameters`), then the labeling phase
        (:meth:`labeling_loss` on :meth:`labeling_parameters`)."""
        return (
            TrainingPhase(CVAE_PHASE, self, self.cvae_parameters, ("label_weight",) + LATENT_LOSS_OPTIONS),
            TrainingPhase(LABELING_PHASE, self.labeling_loss, self.labeling_parameters),
        )

    def labeling_modules(self) -> Tuple[torch.nn.Module, torch.nn.Module, torch.nn.Module]:
        return (self.label_context_encoder, self.label_target_encoder, self.label_head)

    def labeling_parameters(self) -> List[torch.nn.Parameter]:
        """The labeling network g(x, c): what the labeling phase updates."""
        return [p for m in self.labeling_modules() for p in m.parameters()]

    def cvae_parameters(self) -> List[torch.nn.Parameter]:
        """Everything else: what the CVAE phase updates."""
        labeling = {id(p) for p in self.labeling_parameters()}
        return [p for p in self.parameters() if id(p) not in labeling]

    def label(
        self, batch: Batch, target_lengths: Optional[Tensor] = None, context_lengths: Optional[Tensor] = None
    ) -> Tensor:
        """``z_label = g(x, c)`` ``[B, latent_size]`` (the embedding is the model's own).

        With ``label_loss="sigmoid-ce"`` g ends in a tanh, so z_label lies in (-1, 1) as in the authors'
        code (whose z_label is a GRU state); with ``"l2"`` the linear head's output is z_label.
        """
        if target_lengths is None or context_lengths is None:  # both come checked together, or not at all
            target_lengths, context_lengths = self._check_batch(batch)
        h_c = self.label_context_encoder(self.embedding(batch.context), context_lengths)
        h_x = self.label_target_encoder(self.embedding(batch.target), target_lengths)
        z_label = self.label_head(torch.cat([h_c, h_x], dim=1))
        return torch.tanh(z_label) if self.config["label_loss"] == "sigmoid-ce" else z_label

    def forward(
        self,
        batch: Batch,
        kl_weight: float = 1.0,
        label_weight: Optional[float] = None,
        free_bits: float = 0.0,
        generator: Optional[torch.Generator] = None,
    ) -> ModelOutput:
        kl_weight = check_weight("kl_weight", kl_weight)
        if label_weight is None:
            label_weight = self.config["label_loss_weight"] * kl_weight
        label_weight = check_weight("label_weight", label_weight)
        (target_lengths, context_lengths), h_c, (mu_q, logvar_q), (mu_p, logvar_p) = self._posterior_and_prior(batch)
        with torch.no_grad():
            z_label = self.label(batch, target_lengths, context_lengths)
        ops = latent_ops(self.backend)
        z = ops.reparameterize(mu_q, logvar_q, generator=generator)
        nll, bow = self._reconstruction(batch, target_lengths, h_c, z)
        if self.config["label_loss"] == "l2":
            latent, kl, label = ops.kl_label_loss(
                mu_q, logvar_q, mu_p, logvar_p, z, z_label, kl_weight, label_weight, free_bits=free_bits
            )
        else:
            kl = ops.gaussian_kl(mu_q, logvar_q, mu_p, logvar_p, free_bits=free_bits)
            label = sigmoid_label_loss(z, z_label)
            latent = kl_weight * kl + label_weight * label
        B = batch.target.shape[0]
        loss = nll + latent.sum() + (bow if bow is not None else 0.0)
        return ModelOutput(
            loss=loss / B,
            nll=nll.detach() / B,
            kl=kl.detach().mean(),
            label=label.detach().mean(),
            bow=None if bow is None else bow.detach() / B,
        )

    def labeling_loss(self, batch: Batch) -> ModelOutput:
        """``NLL(x | z = g(x, c), c)`` per sentence, batch mean; only g receives gradients."""
        target_lengths, context_lengths = self._check_batch(batch)
        with _frozen(self.cvae_parameters()):
            z_label = self.label(batch, target_lengths, context_lengths)
            h_c = self.context_encoder(self.embedding(batch.context), context_lengths)
            inputs, targets = self._decoder_io(batch)
            cond = torch.cat([h_c, z_label], dim=1)
            nll = self.decoder.nll(self.embedding(inputs, word_dropout=True), targets, target_lengths, cond)
            weight = self.config["label_prior_weight"]
            prior = None
            if weight:
                mu_p, logvar_p = self.prior(h_c)
                prior = 0.5 * ((z_label - mu_p).pow(2) * torch.exp(-logvar_p)).sum()
        B = batch.target.shape[0]
        loss = nll if prior is None else nll + weight * prior
        return ModelOutput(loss=loss / B, nll=nll.detach() / B, label=None if prior is None else prior.detach() / B)

    def train_step(
        self,
        batch: Batch,
        cvae_optimizer: torch.optim.Optimizer,
        label_optimizer: torch.optim.Optimizer,
        kl_weight: float = 1.0,
        label_weight: Optional[float] = None,
        free_bits: float = 0.0,
        max_grad_norm: Optional[float] = None,
        generator: Optional[torch.Generator] = None,
    ) -> Dict[str, float]:
        """One full alternating step: the CVAE phase, then the labeling phase.

        ``cvae_optimizer`` must hold :meth:`cvae_parameters` and
        ``label_optimizer`` :meth:`labeling_parameters`. Returns the floats
        ``loss, nll, kl, label`` (CVAE phase) and ``label_nll`` (labeling phase).
        An optimizer holding a parameter of the other phase (say, the two
        swapped) is a ValueError before anything is updated.
        """
        check_optimizer("cvae_optimizer", cvae_optimizer, self.cvae_parameters(), "cvae_parameters()")
        check_optimizer("label_optimizer", label_optimizer, self.labeling_parameters(), "labeling_parameters()")
        out, lab = step_phases(self.training_phases(), (cvae_optimizer, label_optimizer), batch, max_grad_norm,
                               kl_weight=kl_weight, label_weight=label_weight, free_bits=free_bits, generator=generator)
        return {
            "loss": float(out.loss.detach()),
            "nll": float(out.nll),
            "kl": float(out.kl),
            "label": float(out.label),
            "label_nll": float(lab.nll),
        }


LABEL_LOSSES = ("l2", "sigmoid-ce")


def sigmoid_label_loss(z, z_label):
    """The SLCVAE code's label term per example ``[B]``: sigmoid cross-entropy of logits ``z_label``
    against "labels" ``z`` (any real numbers), averaged over the latent dimensions; ``z_label`` is detached."""
    return F.binary_cross_entropy_with_logits(z_label.detach(), z, reduction="none").mean(-1)


@register("seq2seq")
class Seq2Seq(_Conditional):
    """Encoder-decoder without a latent (the paper's baseline): the decoder starts from ``h_c``."""

    summary = "sequence-to-sequence LSTM (no latent): one input in, the n best outputs of a beam search"

    def __init__(
        self,
        vocab_size: int,
        embed_dim: int = 32,
        hidden_size: int = 32,
        num_layers: int = 2,
        bidirectional: bool = False,
        word_dropout: float = 0.0,
        embed_dropout: float = 0.0,
        pad_id: int = 0,
        unk_id: int = 1,
        sos_id: int = 2,
        eos_id: int = 3,
        backend: str = "fused",
    ) -> None:
        super().__init__()
        self._store_config(locals())
        self._build_common(latent_size=0)

    def forward(self, batch: Batch) -> ModelOutput:
        target_lengths, context_lengths = self._check_batch(batch)
        h_c = self.context_encoder(self.embedding(batch.context), context_lengths)
        inputs, targets = self._decoder_io(batch)
        nll = self.decoder.nll(self.embedding(inputs, word_dropout=True), targets, target_lengths, h_c)
        B = batch.target.shape[0]
        return ModelOutput(loss=nll / B, nll=nll.detach() / B)

    def likelihood_terms(self, batch: Batch) -> LikelihoodTerms:
        """``-log p(x|c)`` of ``batch``, exact (``rec_nll(None)``; no latent: see :class:`LikelihoodTerms`)."""
        lengths, context_lengths = self._check_batch(batch)
        h_c = self.context_encoder(self.embedding(batch.context), context_lengths)
        inputs, targets = self._decoder_io(batch)
        embedded = self.embedding(inputs)
        return LikelihoodTerms(lengths, lambda _z: self.decoder.nll(embedded, targets, lengths, h_c, reduction="none"))

    def _condition(self, h_c, generator):
        return h_c
