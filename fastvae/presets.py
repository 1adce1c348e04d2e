"""Named settings of published experiments: ``fastvae train --preset NAME``, or from Python::

    from fastvae.presets import get_preset
    preset = get_preset("slcvae-code")
    model = preset.build_model("slcvae", vocab)               # SLCVAE(len(vocab), embed_dim=200, ...)
    config = preset.train_config(max_steps=500)               # a TrainConfig; keywords override the preset
    window = preset.data["context_window"]                    # load_dailydialog(..., max_context=window)

A preset fixes the model sizes, the data settings, the training schedule and
the evaluation protocol of an experiment. Flags given next to ``--preset``
(or keywords given to these methods) override its values, and ``fastvae
train`` records both in run.json (``preset``: its name and the overrides).

* ``slcvae-code``: the configuration of the SLCVAE authors' public code
  (zhangfangdeng/SLCVAE, a fork of snakeztc/NeuralDialog-CVAE;
  ``config_utils.KgCVAEConfig`` and ``models/cvae.py``), for any
  conditional model (``slcvae`` by default; ``cvae`` and ``seq2seq`` take
  the sizes that apply to them). :data:`SLCVAE_CODE_DIFFERENCES` lists what
  fastvae does differently and why.
"""

import copy
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Mapping, Tuple

from fastvae.models.registry import model_class
from fastvae.train.config import TrainConfig

SLCVAE_CODE_DIFFERENCES = (
    "cells: LSTM, not GRU (fastvae's fused recurrent kernels are LSTM kernels); the decoder's initial state is a "
    "linear map to (h0, c0) where the code's GRU state is one linear map",
    "decoder size 300, not 400: fastvae's models have one hidden size for the encoders and the decoder "
    "(--hidden-size); the utterance encoders are bidirectional 300 as in the code",
    "context 600: the context (the previous utterance, --context-window 1) is encoded by the bidirectional "
    "utterance encoder, whose two final states (2 x 300) are the context vector; the code runs a further "
    "600-unit 'context RNN' over that vector",
    "label loss: the code's 0.1 x sigmoid cross-entropy of logits z_label against the sampled z, averaged over "
    "the latent dimensions and constant over training (--label-loss sigmoid-ce --label-loss-weight 0.1 "
    "--label-weight-schedule constant); the paper's L2 annealed with the KL weight is --label-loss l2 "
    "--label-loss-weight 1 --label-weight-schedule kl",
    "labeling network: fastvae's g(x, c) (two utterance encoders and a linear head) decodes through the CVAE's "
    "context encoding and initial-state layer, frozen; the code's has its own context encoding, a 200-unit GRU "
    "state as z_label (bounded by tanh) and its own initial-state layer",
    "the two phases: fastvae runs the CVAE phase, then the labeling phase on the updated weights; the code "
    "computes both gradients before either update (one session run)",
    "vocabulary: the 9,998 most frequent training words plus <pad>, <unk>, <sos>, <eos> (--max-vocab 10002, "
    "the code's 10,000 most frequent tokens with its <s> and </s>, plus <pad> and <unk>); the code counts "
    "train, validation and test words together",
    "early stopping: the best validation model is kept over up to 45 epochs; the code also stops at epoch "
    "max(10, 2 x the last epoch that improved the validation loss by 0.4 %), fastvae does not (--patience N "
    "stops after N epochs without improvement)",
    "initial weights: PyTorch's defaults, not the code's uniform(-0.08, 0.08)",
)


def _frozen(mapping):
    return MappingProxyType(dict(mapping))


@dataclass(frozen=True)
class Preset:
    """A named setting. ``model``: the model trained when none is named; ``model_options``: constructor
    arguments (each applied to the models that take it); ``data``: ``fastvae train`` data options (corpus,
    ``context_window``, ``max_vocab``, ``min_freq``, ``max_length``); ``training``: TrainConfig fields;
    ``evaluation``: the protocol (``num_samples``, ``strategy``, ``max_length``, ``bleu_formula``,
    ``bleu_smoothing``); ``differences``: what fastvae does differently from the original."""

    name: str
    summary: str
    model: str
    model_options: Mapping = field(default_factory=dict)
    data: Mapping = field(default_factory=dict)
    training: Mapping = field(default_factory=dict)
    evaluation: Mapping = field(default_factory=dict)
    differences: Tuple[str, ...] = ()

    def model_kwargs(self, model, **overrides):
        """The constructor arguments of ``model`` (a name such as ``"slcvae"`` or a model class): the preset's
        options that the model takes, then ``overrides`` (a keyword the model does not take: ValueError)."""
        cls = model_class(model)
        accepted = cls.config_names()
        stray = sorted(k for k in overrides if k not in accepted)
        if stray:
            raise ValueError(f"{cls.__name__} does not take {', '.join(stray)}")
        kwargs = {k: v for k, v in self.model_options.items() if k in accepted}
        kwargs.update(overrides)
        return kwargs

    def build_model(self, model, vocab, **overrides):
        """``model`` (name or class) built for ``vocab`` (its size and special ids) with :meth:`model_kwargs`."""
        cls = model_class(model)
        return cls.for_vocab(vocab, **self.model_kwargs(cls, **overrides))

    def train_config(self, **overrides):
        """The preset's :class:`TrainConfig` (checked), with ``overrides`` (TrainConfig fields) applied."""
        values = {**TrainConfig().to_dict(), **copy.deepcopy(dict(self.training)), **overrides}
        return TrainConfig.from_dict(values).check()

    def to_dict(self):
        """JSON-able: every field (what a run records of its preset)."""
        return copy.deepcopy({
            "name": self.name, "summary": self.summary, "model": self.model,
            "model_options": dict(self.model_options), "data": dict(self.data), "training": dict(self.training),
            "evaluation": dict(self.evaluation), "differences": list(self.differences),
        })


SLCVAE_CODE = Preset(
    name="slcvae-code",
    summary="the SLCVAE authors' code (zhangfangdeng/SLCVAE): E200, bidirectional encoders 300 (context 600), "
            "Z200, 1 layer, no dropout, no bag-of-words loss, Adam 1e-3, clip 5, batch 30, KL weight linear "
            "0 -> 1 over 10,000 steps, up to 45 epochs, 10k vocabulary, the previous utterance as context, "
            "label loss 0.1 x sigmoid cross-entropy (constant); scored with cumulative BLEU-3 and NLTK "
            "3.2.2-3.4.5's smoothing 7, 10 greedy replies per context (z from the prior)",
    model="slcvae",
    model_options=_frozen(dict(
        embed_dim=200, hidden_size=300, bidirectional=True, latent_size=200, num_layers=1,
        prior_hidden_size=400,  # the code's max(2 x latent, 100), tanh
        word_dropout=0.0, embed_dropout=0.0, bow=False,
        label_loss="sigmoid-ce", label_loss_weight=0.1, label_prior_weight=0.0,
    )),
    data=_frozen(dict(data="dailydialog", context_window=1, max_vocab=10002, min_freq=1, max_length=None)),
    training=_frozen(dict(
        epochs=45, batch_size=30, lr=1e-3, label_lr=None, max_grad_norm=5.0,
        kl_schedule={"name": "linear", "warmup_steps": 10000, "start": 0.0, "max_weight": 1.0},
        free_bits=0.0, label_weight=None, label_weight_schedule="constant", patience=None,
    )),
    evaluation=_frozen(dict(num_samples=10, strategy="greedy", max_length=40, bleu_formula="cumulative-3",
                            bleu_smoothing="method7-legacy")),
    differences=SLCVAE_CODE_DIFFERENCES,
)

PRESETS = {p.name: p for p in (SLCVAE_CODE,)}


def get_preset(name):
    """The :class:`Preset` called ``name`` (ValueError naming the known ones otherwise)."""
    if not isinstance(name, str) or name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(sorted(PRESETS))}")
    return PRESETS[name]
