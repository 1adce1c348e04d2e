"""The base class of every model: its stored configuration, capabilities, shared parts, batch checks, save/load."""

import inspect
import os
from contextlib import contextmanager
from typing import Any, ClassVar, Optional, Tuple, Type, TypeVar, Union

import torch

from fastvae.models import saving
from fastvae.models.batch import Batch, Device
from fastvae.models.checks import check_config, check_tokens
from fastvae.models.generation import decode
from fastvae.models.phases import LATENT_LOSS_OPTIONS, MODEL_PHASE, TrainingPhase
from fastvae.nn import WordEmbedding
from fastvae.nn.backend import check_backend

PathLike = Union[str, "os.PathLike[str]"]


@contextmanager
def evaluating(model):
    """``model.eval()`` and ``torch.no_grad()`` inside the block; the model's train/eval mode is restored after.

    Generation and evaluation run in it, so dropout never reaches a decode
    whatever mode the caller left the model in.
    """
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield model
    finally:
        model.train(was_training)


ModelT = TypeVar("ModelT", bound="BaseModel")


class BaseModel(torch.nn.Module):
    """Stores its constructor arguments so ``save_pretrained``/``from_pretrained`` can rebuild it.

    What a model can do is said by three class attributes, which the layers
    above (training, evaluation, the CLI) read instead of asking for a class:

    * ``has_latent``: a latent code z (a KL term, a posterior q, a prior to sample from);
    * ``is_conditional``: every example has a context (``Batch.context``) the model conditions on;
    * ``has_labeling_phase``: a labeling network with its own training phase (SLCVAE):
      :meth:`training_phases` lists two phases.

    ``summary`` says what the model is in one line (its model card begins with it).
    """

    has_latent: ClassVar[bool] = False
    is_conditional: ClassVar[bool] = False
    has_labeling_phase: ClassVar[bool] = False
    summary: ClassVar[str] = ""

    @classmethod
    def config_names(cls) -> Tuple[str, ...]:
        """The constructor's argument names: the keys of ``model.config`` (what ``config.json`` stores)."""
        return tuple(name for name in inspect.signature(cls.__init__).parameters if name != "self")

    @classmethod
    def for_vocab(cls: Type[ModelT], vocab: Any, **kwargs: Any) -> ModelT:
        """A model for ``vocab`` (a :class:`fastvae.data.Vocab`: its size and special token ids), with the
        other constructor arguments ``kwargs``."""
        ids = {"pad_id": vocab.pad_id, "unk_id": vocab.unk_id, "sos_id": vocab.sos_id, "eos_id": vocab.eos_id}
        return cls(len(vocab), **{**ids, **kwargs})

    def _store_config(self, local_vars):
        self.config = {name: local_vars[name] for name in self.config_names()}
        check_config(self.config)
        self.backend = check_backend(self.config["backend"])

    def _make_embedding(self):
        """The token embedding every part shares (word dropout never touches <sos>/<pad>)."""
        cfg = self.config
        return WordEmbedding(
            cfg["vocab_size"],
            cfg["embed_dim"],
            cfg["pad_id"],
            cfg["unk_id"],
            keep_ids=(cfg["sos_id"],),
            word_dropout=cfg["word_dropout"],
            dropout=cfg["embed_dropout"],
        )

    def training_phases(self) -> Tuple[TrainingPhase, ...]:
        """The phases of one training step, one optimizer each, in order: here one, the model's loss
        ``model(batch, ...)`` on all its parameters (SLCVAE has two)."""
        return (TrainingPhase(MODEL_PHASE, self, self.parameters, LATENT_LOSS_OPTIONS if self.has_latent else ()),)

    def _decode_from(self, cond, options, generator=None, num_return=1):
        """Decode from the decoder's initial state for ``cond [R, C]`` (its conditioning vectors: z, ``[h_c, z]``
        or ``h_c``) with :func:`fastvae.models.generation.decode`: ``(tokens [R * num_return, max_length],
        lengths)``."""
        cfg = self.config
        return decode(
            self.decoder,
            self.embedding,
            self.decoder.initial_state(cond),
            sos_id=cfg["sos_id"],
            eos_id=cfg["eos_id"],
            pad_id=cfg["pad_id"],
            options=options,
            generator=generator,
            num_return=num_return,
        )

    # ---------------------------------------------------------------- inputs

    def _decoder_io(self, batch):
        """Decoder inputs ``<sos> x_1 .. x_{n-1}`` and targets ``x_1 .. <eos>`` of ``batch.target``."""
        target = batch.target
        sos = torch.full_like(target[:, :1], self.config["sos_id"])
        return torch.cat([sos, target[:, :-1]], dim=1), target

    def _check_batch(self, batch):
        """``(target_lengths, context_lengths)`` of a checked ``batch`` (context_lengths None for a model
        without a context)."""
        if not isinstance(batch, Batch):
            raise TypeError(f"batch must be a fastvae.models.Batch, got {type(batch).__name__}")
        V = self.config["vocab_size"]
        target_lengths = check_tokens("target", batch.target, batch.target_lengths, V)
        if not self.is_conditional:
            return target_lengths, None
        if batch.context is None or batch.context_lengths is None:
            raise ValueError(f"{type(self).__name__} needs batch.context and batch.context_lengths")
        context_lengths = check_tokens("context", batch.context, batch.context_lengths, V)
        if batch.context.shape[0] != batch.target.shape[0]:
            raise ValueError(
                f"context and target must have the same batch size, got {batch.context.shape[0]} and {batch.target.shape[0]}"
            )
        return target_lengths, context_lengths

    # ------------------------------------------------------------- save/load

    def save_pretrained(self, directory: PathLike) -> None:
        """Write ``config.json`` and ``model.safetensors`` into ``directory`` (atomically per file)."""
        saving.save_pretrained(self, directory)

    @classmethod
    def from_pretrained(
        cls: Type[ModelT], directory: PathLike, backend: Optional[str] = None, map_location: Device = "cpu"
    ) -> ModelT:
        """Rebuild a model saved by ``save_pretrained`` (optionally on the other backend), in eval mode.

        Call ``.train()`` on it to train further (the Trainer does so itself).
        """
        return saving.from_pretrained(cls, directory, backend=backend, map_location=map_location)
