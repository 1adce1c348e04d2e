"""Sentence-VAE (Bowman et al. 2016, "Generating Sentences from a Continuous Space")."""

from typing import Optional, Tuple

import torch

from fastvae.models._latent import latent_ops
from fastvae.models._parts import ConditionalDecoder, GaussianNet, UtteranceEncoder
from fastvae.models.base import BaseModel, evaluating
from fastvae.models.batch import Batch
from fastvae.models.checks import check_tokens, check_weight
from fastvae.models.generation import DecodeOptions
from fastvae.models.outputs import LikelihoodTerms, ModelOutput
from fastvae.models.registry import register


@register("sentence-vae")
class SentenceVAE(BaseModel):
    """LSTM encoder -> q(z|x) = N(mu, diag e^logvar) -> z -> LSTM decoder's initial state.

    Loss per sentence: ``NLL(x | z) + kl_weight * KL(q(z|x) || N(0, I))``
    (with optional free bits). ``model(batch, kl_weight)`` returns a
    :class:`ModelOutput` of batch means; ``batch.target`` holds the sentences.

    Args:
        vocab_size: vocabulary size (ids ``0 .. vocab_size - 1``).
        embed_dim, hidden_size, latent_size, num_layers: sizes.
        bidirectional: a bidirectional encoder.
        word_dropout: probability of replacing a decoder input by ``<unk>``.
        embed_dropout: dropout on the embedded tokens.
        pad_id, unk_id, sos_id, eos_id: the special token ids.
        backend: "fused" (fastvae kernels) or "reference" (plain PyTorch; same
            parameters, same losses).
    """

    has_latent = True
    summary = "Sentence-VAE (Bowman et al. 2016): an LSTM variational autoencoder of sentences"

    def __init__(
        self,
        vocab_size: int,
        embed_dim: int = 300,
        hidden_size: int = 256,
        latent_size: int = 16,
        num_layers: int = 1,
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
        self.embedding = self._make_embedding()
        self.encoder = UtteranceEncoder(embed_dim, hidden_size, num_layers, bidirectional, backend)
        self.posterior = GaussianNet(self.encoder.output_size, latent_size)
        self.decoder = ConditionalDecoder(embed_dim, hidden_size, num_layers, latent_size, vocab_size, backend)

    def encode(self, tokens: torch.Tensor, lengths: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """``tokens [B, T]``, ``lengths [B]`` -> ``(mu, logvar)`` of q(z|x), each ``[B, latent_size]``.

        A building block: it follows the model's mode (embedding dropout in
        train mode); call ``.eval()`` first for deterministic codes.
        """
        lengths = check_tokens("tokens", tokens, lengths, self.config["vocab_size"])
        return self.posterior(self.encoder(self.embedding(tokens), lengths))

    def forward(
        self,
        batch: Batch,
        kl_weight: float = 1.0,
        free_bits: float = 0.0,
        generator: Optional[torch.Generator] = None,
    ) -> ModelOutput:
        target_lengths, _ = self._check_batch(batch)
        kl_weight = check_weight("kl_weight", kl_weight)
        mu, logvar = self.posterior(self.encoder(self.embedding(batch.target), target_lengths))
        z = latent_ops(self.backend).reparameterize(mu, logvar, generator=generator)
        inputs, targets = self._decoder_io(batch)
        nll = self.decoder.nll(self.embedding(inputs, word_dropout=True), targets, target_lengths, z)
        kl = latent_ops(self.backend).gaussian_kl(mu, logvar, free_bits=free_bits)
        B = batch.target.shape[0]
        return ModelOutput(loss=(nll + kl_weight * kl.sum()) / B, nll=nll.detach() / B, kl=kl.detach().mean())

    def likelihood_terms(self, batch: Batch) -> LikelihoodTerms:
        """q(z|x), the prior N(0, I) and ``-log p(x|z)`` of ``batch`` (see :class:`LikelihoodTerms`)."""
        lengths, _ = self._check_batch(batch)
        mu, logvar = self.posterior(self.encoder(self.embedding(batch.target), lengths))
        inputs, targets = self._decoder_io(batch)
        embedded = self.embedding(inputs)
        zeros = torch.zeros_like(mu)
        return LikelihoodTerms(
            lengths, lambda z: self.decoder.nll(embedded, targets, lengths, z, reduction="none"), mu, logvar, zeros, zeros
        )

    # sample / reconstruct / interpolate run in eval mode (no dropout), whatever mode the model is in

    def sample(
        self,
        n: int,
        strategy: str = "greedy",
        max_length: int = 30,
        temperature: float = 1.0,
        top_k: int = 0,
        top_p: float = 1.0,
        beam_size: int = 4,
        generator: Optional[torch.Generator] = None,
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """``n`` sentences with z drawn from the prior N(0, I) -> ``(tokens [n, max_length], lengths [n])``."""
        if not isinstance(n, int) or n < 1:
            raise ValueError(f"n must be a positive integer, got {n!r}")
        options = DecodeOptions(strategy, max_length, temperature, top_k, top_p, beam_size)
        with evaluating(self):
            zeros = self.decoder.init_state.weight.new_zeros(n, self.config["latent_size"])
            z = latent_ops(self.backend).reparameterize(zeros, zeros, generator=generator)
            return self._decode_from(z, options, generator)

    def reconstruct(
        self, tokens: torch.Tensor, lengths: torch.Tensor, max_length: int = 30
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """Greedy decoding from each sentence's posterior mean."""
        with evaluating(self):
            mu, _ = self.encode(tokens, lengths)
            return self._decode_from(mu, DecodeOptions(max_length=max_length))

    def interpolate(
        self, tokens_a: torch.Tensor, tokens_b: torch.Tensor, steps: int = 5, max_length: int = 30
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """Homotopy between two sentences ``[T_a]`` and ``[T_b]``: greedy decodes of
        ``(1 - t) mu_a + t mu_b`` for ``steps`` values of t from 0 to 1."""
        if not isinstance(steps, int) or steps < 2:
            raise ValueError(f"steps must be an integer >= 2, got {steps!r}")
        with evaluating(self):
            mus = []
            for name, tokens in (("tokens_a", tokens_a), ("tokens_b", tokens_b)):
                if not isinstance(tokens, torch.Tensor) or tokens.dim() != 1 or tokens.numel() == 0:
                    raise ValueError(f"{name} must be a non-empty 1-D tensor of token ids")
                mus.append(self.encode(tokens.unsqueeze(0), torch.tensor([tokens.numel()]))[0])
            t = torch.linspace(0, 1, steps, device=mus[0].device).unsqueeze(1)
            return self._decode_from((1 - t) * mus[0] + t * mus[1], DecodeOptions(max_length=max_length))
