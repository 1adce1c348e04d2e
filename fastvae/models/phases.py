"""A model's training phases: what each optimizer step of one training step computes and updates.

A model lists its phases in ``model.training_phases()``: one for SentenceVAE,
CVAE and Seq2Seq (their loss on all parameters), two for SLCVAE (the CVAE
phase, then the labeling phase). ``SLCVAE.train_step`` and
:class:`fastvae.train.Trainer` both run these phases, so a model's training
step is defined once, in the model.
"""

from dataclasses import dataclass
from typing import Any, Callable, List, Sequence, Tuple

import torch

from fastvae.models.batch import Batch
from fastvae.models.outputs import ModelOutput

# the phase names: each is the name of the phase's optimizer (in the Trainer and its checkpoints)
MODEL_PHASE = "model"  # the one phase of a model without a labeling network: its loss on all parameters
CVAE_PHASE = "cvae"  # SLCVAE's first phase: the CVAE loss on everything but the labeling network
LABELING_PHASE = "label"  # SLCVAE's second phase: the labeling loss on the labeling network only

# the keyword arguments a latent model's loss takes (a phase's ``takes``)
LATENT_LOSS_OPTIONS = ("kl_weight", "free_bits", "generator")


@dataclass(frozen=True)
class TrainingPhase:
    """One optimizer step of a training step: ``loss(batch, ...)`` updates ``parameters()``.

    name: the phase's name, also the name of its optimizer (:data:`MODEL_PHASE`,
        or SLCVAE's :data:`CVAE_PHASE` and :data:`LABELING_PHASE`).
    loss: ``loss(batch, **options) -> ModelOutput`` (the model itself, or a method such as
        ``labeling_loss``).
    parameters: ``parameters()`` -> the parameters this phase updates: what its optimizer holds.
    takes: the keyword arguments ``loss`` takes, of ``kl_weight``, ``label_weight``,
        ``free_bits`` and ``generator``.
    """

    name: str
    loss: Callable[..., ModelOutput]
    parameters: Callable[[], List[torch.nn.Parameter]]
    takes: Tuple[str, ...] = ()

    def run(self, batch: Batch, **options: Any) -> ModelOutput:
        """``loss(batch, ...)`` with the ``options`` this phase takes (the others are left out)."""
        return self.loss(batch, **{k: v for k, v in options.items() if k in self.takes})


def step_phases(
    phases: Sequence[TrainingPhase],
    optimizers: Sequence[torch.optim.Optimizer],
    batch: Batch,
    max_grad_norm: Any = None,
    **options: Any,
) -> List[ModelOutput]:
    """One training step: each phase in turn zeroes its optimizer's gradients, backpropagates its loss,
    clips its parameters' gradient norm to ``max_grad_norm`` (``None``: no clipping) and steps.

    ``optimizers[i]`` updates ``phases[i]``; ``options`` are the losses' keyword arguments (each phase
    gets those it takes). Returns each phase's :class:`ModelOutput`.
    """
    outputs = []
    for phase, optimizer in zip(phases, optimizers):
        optimizer.zero_grad(set_to_none=True)
        out = phase.run(batch, **options)
        out.loss.backward()
        if max_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(phase.parameters(), max_grad_norm)
        optimizer.step()
        outputs.append(out)
    return outputs


def check_optimizer(name, optimizer, allowed, what):
    """Every parameter ``optimizer`` updates is one of ``allowed`` (the model's ``what``)."""
    groups = getattr(optimizer, "param_groups", None)
    if groups is None:
        raise TypeError(f"{name} must be a torch.optim.Optimizer, got {type(optimizer).__name__}")
    ids = {id(p) for p in allowed}
    if any(id(p) not in ids for group in groups for p in group["params"]):
        raise ValueError(f"{name} must hold only the model's {what} (were the two optimizers swapped?)")
