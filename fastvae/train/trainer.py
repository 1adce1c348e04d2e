"""The training loop behind ``fastvae train``: annealing, validation, early stopping, logs,
atomic checkpoints with exact resume, clean Ctrl-C, non-finite-loss stop, torchrun DDP.

Usage::

    from fastvae.train import Trainer, TrainConfig
    trainer = Trainer(model, train_data, valid_data, TrainConfig(epochs=5), run_dir="runs/slcvae")
    result = trainer.fit()            # or fit(resume=True) to continue from runs/slcvae/checkpoint.pt

A run directory (:mod:`fastvae.run_layout`) holds ``checkpoint.pt`` (the
latest training state, for ``resume``), ``model/`` (the best model by
validation loss, loadable with ``from_pretrained``), ``metrics.csv``, ``tb/``
(TensorBoard), and the plots.

The model says what one training step is (``model.training_phases()``: one
phase, or SLCVAE's CVAE and labeling phases); the Trainer gives each phase its
own Adam and runs them in order.
"""

import math
import os
import signal
import threading
import time
from dataclasses import dataclass
from typing import Any, Dict, Optional, Union

import torch

from fastvae.data.dataset import TextDataset, batch_indices, collate
from fastvae.models.base import BaseModel, evaluating
from fastvae.models.phases import LABELING_PHASE
from fastvae.models.registry import check_model
from fastvae.run_layout import CHECKPOINT_FILE, CURVES_PLOT, LATENT_PLOT, METRICS_FILE, MODEL_DIR, in_run
from fastvae.train import distributed
from fastvae.train.checkpoint import load_checkpoint, save_checkpoint
from fastvae.train.config import TrainConfig
from fastvae.train.logs import MetricsLog, MetricsWindow
from fastvae.train.model_folder import save_model_folder
from fastvae.train.optim import adam
from fastvae.train.schedules import schedule_from_dict


class NonFiniteLossError(RuntimeError):
    """Training produced a NaN/inf value (the loss, the gradient norm, or a value inside the forward pass
    such as the latent z); nothing was saved from that step."""


# how fastvae's ops word a NaN/inf input (fastvae.ops._checks.finite and the C++ kernels' checks): inside a
# training step that input can only have been computed from the weights, never from the batch of token ids
_NON_FINITE_INPUT = "contains NaN or infinite values"


@dataclass
class TrainResult:
    """How :meth:`Trainer.fit` ended.

    status: "finished" (all epochs), "early_stopped", "interrupted" (Ctrl-C /
    SIGTERM; a checkpoint was saved), "time_limit" or "max_steps" (checkpoint
    saved; ``resume`` continues).
    """

    status: str
    epoch: int
    step: int
    best_valid_loss: Optional[float]
    best_epoch: Optional[int]
    checkpoint: str
    model_dir: str
    seconds: float


class _PhaseRunner(torch.nn.Module):
    """One module for DDP to wrap: ``forward(batch, name, **options)`` runs the model's training phase ``name``."""

    def __init__(self, model, phases):
        super().__init__()
        self.model = model
        self.phases = {phase.name: phase for phase in phases}

    def forward(self, batch, phase, **options):
        return self.phases[phase].run(batch, **options)


# fields that change which examples a step sees: a resume must keep them
_DATA_ORDER_FIELDS = ("batch_size", "seed")


class Trainer:
    """Trains a fastvae model (SentenceVAE, CVAE, SLCVAE or Seq2Seq) on :class:`TextDataset` s.

    train_data / valid_data: TextDatasets (conditional ones for the
    conditional models). valid_data ``None``: no validation, no early stopping,
    ``model/`` holds the last epoch's model. ``model/`` is a folder that stands
    alone (:func:`fastvae.train.save_model_folder`: weights, config, the
    training data's vocabulary and tokenizer, a model card);
    data_description: a dict of what the training data is (e.g.
    ``{"corpus": "dailydialog"}``), written into the model card. dist: a
    :class:`fastvae.train.distributed.DistInfo` (default: read torchrun's
    environment, joining the process group when ``WORLD_SIZE > 1``).

    Each optimizer step: KL weight from the schedule at the current step;
    then the model's training phases (``model.training_phases()``) in order,
    one Adam each: SLCVAE's CVAE phase on ``cvae_parameters`` and labeling
    phase on ``labeling_parameters``, the other models' one phase on all
    parameters. Randomness (reparameterization noise, word
    dropout) comes from the global torch RNG, seeded with ``seed + rank``
    when ``fit`` starts; the data order from a generator seeded with
    ``(seed, epoch)``; validation from its own fixed generator. Together with
    the RNG states in the checkpoint this makes a resumed run continue
    exactly as an uninterrupted one. The initial weights are the model's, drawn
    when it was built: call ``fastvae.train.seed_everything(seed)`` before
    building it, and the same seed gives the same numbers step by step (on
    one machine, with one thread count).
    """

    def __init__(
        self,
        model: BaseModel,
        train_data: TextDataset,
        valid_data: Optional[TextDataset] = None,
        config: Optional[Union[TrainConfig, Dict[str, Any]]] = None,
        run_dir: Union[str, "os.PathLike[str]"] = "runs/fastvae",
        dist: Optional[distributed.DistInfo] = None,
        data_description: Optional[Dict[str, Any]] = None,
    ) -> None:
        check_model(model)
        if isinstance(config, dict):
            config = TrainConfig.from_dict(config)
        elif config is not None and not isinstance(config, TrainConfig):
            raise TypeError(f"config must be a TrainConfig (or a dict of its fields), got {type(config).__name__}")
        self.config = (config or TrainConfig()).check()
        conditional = model.is_conditional
        for name, data in (("train_data", train_data), ("valid_data", valid_data)):
            if data is None and name == "valid_data":
                continue
            if not isinstance(data, TextDataset):
                raise TypeError(f"{name} must be a fastvae.data.TextDataset, got {type(data).__name__}")
            if data.conditional != conditional:
                need = "(source, target) examples" if conditional else "sentence-only examples"
                raise ValueError(f"{name} does not fit a {type(model).__name__}: it needs {need}")
            if len(data.vocab) != model.config["vocab_size"]:
                raise ValueError(
                    f"{name}'s vocabulary has {len(data.vocab)} entries but the model's vocab_size is "
                    f"{model.config['vocab_size']}"
                )
        self.train_data, self.valid_data = train_data, valid_data
        if data_description is not None and not isinstance(data_description, dict):
            raise TypeError(f"data_description must be a dict (what the model card says it was trained on), "
                            f"got {type(data_description).__name__}")
        self.data_description = dict(data_description or {})
        self.run_dir = os.fspath(run_dir)
        self.dist = dist if dist is not None else distributed.setup(self.config.device)
        self.device = torch.device(self.config.device)
        if self.device.type == "cuda" and self.dist.enabled:
            self.device = torch.device("cuda", self.dist.local_rank)
            torch.cuda.set_device(self.device)
        self.model = model.to(self.device)
        self.latent = model.has_latent
        self.phases = model.training_phases()
        net = _PhaseRunner(self.model, self.phases)
        if self.dist.enabled:
            ids = [self.device.index] if self.device.type == "cuda" else None
            # a phase that updates part of the model (SLCVAE's) leaves the other parameters without a gradient
            net = torch.nn.parallel.DistributedDataParallel(
                net, device_ids=ids, find_unused_parameters=len(self.phases) > 1
            )
        self.net = net
        cfg = self.config
        self.optimizers = {phase.name: adam(phase.parameters(), lr=self._learning_rate(phase.name))
                           for phase in self.phases}
        self.schedule = schedule_from_dict(cfg.kl_schedule)
        self.step = 0
        self.epoch = 0
        self.batch_in_epoch = 0
        self.best_valid_loss = None
        self.best_epoch = None
        self.bad_epochs = 0
        self._stop_signal = None
        self._elapsed_before = 0.0
        self._window = MetricsWindow()  # metrics since the last train row (checkpointed: a resume logs the same rows)
        self.checkpoint_path = in_run(self.run_dir, CHECKPOINT_FILE)
        self.model_dir = in_run(self.run_dir, MODEL_DIR)

    # ------------------------------------------------------------ the loop

    def fit(self, resume: bool = False) -> TrainResult:
        """Train until the epochs are done, early stopping, a limit or Ctrl-C; returns a :class:`TrainResult`.

        resume: continue from ``<run_dir>/checkpoint.pt`` (model, optimizers,
        schedule position, RNG states, position inside the epoch). A resumed
        run that is already at ``max_steps`` / ``max_time`` returns that status
        at once, without training or saving.
        """
        cfg = self.config
        if not isinstance(resume, bool):
            raise TypeError(f"resume must be True or False, got {resume!r}")
        self._check_run_dir(resume)
        os.makedirs(self.run_dir, exist_ok=True)
        if resume:
            self._resume()
        else:
            torch.manual_seed(cfg.seed + self.dist.rank)
        self.log = MetricsLog(self.run_dir, tensorboard=cfg.tensorboard) if self.dist.is_main else None
        if self.log is not None and resume:
            self.log.truncate_after(self.step)
        self._start = time.monotonic()
        handlers = self._install_signal_handlers()
        status = "finished"
        try:
            # a resumed run already at its step or time limit trains no further step (and keeps its checkpoint)
            stopped = self._stop_status() if resume and self.epoch < cfg.epochs else None
            if stopped is not None:
                status = stopped
            while stopped is None and self.epoch < cfg.epochs:
                status = self._train_epoch()
                if status is not None:
                    self.save_checkpoint()
                    break
                status = "finished"
                self._end_epoch()
                if cfg.patience is not None and self.bad_epochs >= cfg.patience and self.epoch < cfg.epochs:
                    status = "early_stopped"
                    break
        except NonFiniteLossError:
            if cfg.plots and self.dist.is_main:  # the curves show the divergence; the weights are broken
                self._close_log()
                self._plots(latent=False)
            raise
        finally:
            self._restore_signal_handlers(handlers)
            self._close_log()
        if cfg.plots and self.dist.is_main:  # at every stop: the epochs done, early stopping, a limit, Ctrl-C
            self._plots(latent=True)
        distributed.barrier(self.dist)
        return TrainResult(
            status=status,
            epoch=self.epoch,
            step=self.step,
            best_valid_loss=self.best_valid_loss,
            best_epoch=self.best_epoch,
            checkpoint=self.checkpoint_path,
            model_dir=self.model_dir,
            seconds=self._elapsed(),
        )

    def _elapsed(self):
        return self._elapsed_before + time.monotonic() - self._start

    def _epoch_batches(self, epoch, data, batch_size, shuffle):
        """This process's index lists for one epoch (the same global order on every process)."""
        world = self.dist.world_size
        g = torch.Generator().manual_seed(self.config.seed * 1_000_003 + epoch)
        cut = batch_indices(data, batch_size * world, shuffle=shuffle, generator=g, drop_last=world > 1 and shuffle)
        if world == 1:
            return cut
        if shuffle:  # training: every process takes its contiguous share of each global batch
            r, B = self.dist.rank, batch_size
            return [idx[r * B : (r + 1) * B] for idx in cut]
        return cut[self.dist.rank :: world]  # validation: whole batches, split between processes

    def _train_epoch(self):
        """Runs the rest of the current epoch; returns None when it completes, else the stop status."""
        cfg = self.config
        plan = self._epoch_batches(self.epoch, self.train_data, cfg.batch_size, shuffle=True)
        if not plan:
            raise ValueError(
                f"train_data has {len(self.train_data)} examples: too few for one batch of "
                f"{cfg.batch_size} x {self.dist.world_size} processes"
            )
        bar = self._progress(len(plan))
        window = self._window
        try:
            for indices in plan[self.batch_in_epoch :]:
                batch = collate(self.train_data, indices).to(self.device)
                metrics = self._train_step(batch)
                self.step += 1
                self.batch_in_epoch += 1
                window.add(metrics)
                if bar is not None:
                    bar.update(1)
                    if self.step % 10 == 0 or self.batch_in_epoch == len(plan):
                        bar.set_postfix(_postfix(metrics), refresh=False)
                if self.step % cfg.log_every == 0:
                    self._log_train(window)
                status = self._stop_status()
                if status is not None:
                    return status
                if cfg.save_every is not None and self.step % cfg.save_every == 0:
                    self.save_checkpoint()
        finally:
            if bar is not None:
                bar.close()
        if window.count:
            self._log_train(window)
        return None

    def _stop_status(self):
        cfg = self.config
        status = None
        if self._stop_signal is not None:
            status = "interrupted"
        elif cfg.max_steps is not None and self.step >= cfg.max_steps:
            status = "max_steps"
        elif cfg.max_time is not None and self._elapsed() >= cfg.max_time:
            status = "time_limit"
        if self.dist.enabled:  # every process must stop at the same step
            codes = ("interrupted", "max_steps", "time_limit")
            votes = distributed.all_sum(self.dist, [float(status == c) for c in codes], self.device)
            status = next((c for c, v in zip(codes, votes) if v > 0), None)
        return status

    def _loss_options(self, kl_weight):
        """This step's loss weights (``kl_weight`` None: a model without a latent, none); each phase of the
        model takes those it needs (``TrainingPhase.takes``)."""
        if kl_weight is None:
            return {}
        options = {"kl_weight": kl_weight, "free_bits": self.config.free_bits}
        if self.model.has_labeling_phase:
            options["label_weight"] = self._label_weight(kl_weight)
        return options

    def _train_step(self, batch):
        cfg = self.config
        self.model.train()
        kl_weight = float(self.schedule(self.step)) if self.latent else None
        options = self._loss_options(kl_weight)
        metrics = {}
        for index, phase in enumerate(self.phases):
            name = phase.name
            optimizer = self.optimizers[name]
            optimizer.zero_grad(set_to_none=True)
            try:
                out = self.net(batch, name, **options)
            except ValueError as exc:  # an op refused a NaN/inf that the weights produced (say, the latent z)
                if _NON_FINITE_INPUT not in str(exc):
                    raise
                self._check_finite(float("nan"), f"value in the forward pass ({exc})", name)
            loss = out.loss
            loss_value = float(loss.detach())  # one device sync per phase, used for the check and the log
            self._check_finite(loss_value, "loss", name)
            loss.backward()
            params = [p for group in optimizer.param_groups for p in group["params"]]
            norm = torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm if cfg.max_grad_norm else float("inf"))
            self._check_finite(float(norm), "gradient norm", name)
            optimizer.step()
            if index == 0:  # the model's loss and its terms
                metrics.update(loss=loss_value, nll=float(out.nll), grad_norm=float(norm))
                for key in ("kl", "label", "bow"):
                    value = getattr(out, key)
                    if value is not None:
                        metrics[key] = float(value)
            else:  # a later phase (SLCVAE's labeling phase): its NLL, as label_nll
                metrics[f"{name}_nll"] = float(out.nll)
        metrics.update({k: v for k, v in options.items() if k in ("kl_weight", "label_weight")})
        metrics["lr"] = self.optimizers[self.phases[0].name].param_groups[0]["lr"]
        return metrics

    def _base_label_weight(self):
        """SLCVAE's lambda before the schedule: the config's label_weight, else the model's label_loss_weight."""
        cfg = self.config
        return cfg.label_weight if cfg.label_weight is not None else self.model.config["label_loss_weight"]

    def _label_weight(self, kl_weight):
        """SLCVAE's lambda at this step: :meth:`_base_label_weight`, times the KL weight unless
        ``label_weight_schedule`` is ``"constant"``."""
        base = self._base_label_weight()
        return base if self.config.label_weight_schedule == "constant" else base * kl_weight

    def _check_finite(self, value, what, phase):
        """Raise :class:`NonFiniteLossError` (on every process) when ``value`` is NaN/inf on any process."""
        here = not math.isfinite(value)
        bad = distributed.any_true(self.dist, here, self.device) if self.dist.enabled else here
        if not bad:
            return
        if os.path.isfile(self.checkpoint_path):
            kept = f"the last good checkpoint {self.checkpoint_path!r} is intact; resume from it with a lower lr or more clipping"
        else:
            kept = "no checkpoint had been written yet; start again with a lower lr or more clipping"
        found = f"non-finite {what}" + ("" if what.endswith(")") else f" ({value})") if here else \
            "a non-finite value on another process"
        raise NonFiniteLossError(
            f"{found} at step {self.step + 1} (epoch {self.epoch + 1}, {phase} phase): "
            f"training stopped without saving this step; {kept}"
        )

    # ------------------------------------------------------- validation

    def validate(self) -> Optional[Dict[str, float]]:
        """Mean validation NLL, KL and loss (= NLL + KL, the negative ELBO at KL weight 1) per sentence."""
        if self.valid_data is None:
            return None
        g = torch.Generator(device=self.device).manual_seed(self.config.seed + 12345)
        sums = [0.0, 0.0, 0.0]  # sentences, nll, kl
        with evaluating(self.model) as model:
            for indices in self._epoch_batches(0, self.valid_data, self.config.valid_batch_size, shuffle=False):
                batch = collate(self.valid_data, indices).to(self.device)
                out = model(batch, kl_weight=1.0, generator=g) if self.latent else model(batch)
                n = len(indices)
                sums[0] += n
                sums[1] += float(out.nll) * n
                sums[2] += float(out.kl) * n if out.kl is not None else 0.0
        n, nll, kl = distributed.all_sum(self.dist, sums, self.device)
        result = {"nll": nll / n}
        if self.latent:
            result["kl"] = kl / n
        result["loss"] = result["nll"] + result.get("kl", 0.0)
        return result

    def _end_epoch(self):
        valid = self.validate()
        self.epoch += 1
        self.batch_in_epoch = 0
        improved = valid is not None and (self.best_valid_loss is None or valid["loss"] < self.best_valid_loss)
        if valid is not None:
            if improved:
                self.best_valid_loss, self.best_epoch, self.bad_epochs = valid["loss"], self.epoch, 0
            else:
                self.bad_epochs += 1
            if self.log is not None:
                self.log.write({"step": self.step, "epoch": self.epoch, "split": "valid", "seconds": self._elapsed(), **valid})
            if self.dist.is_main and self.config.progress:
                _print(
                    f"epoch {self.epoch}: valid loss {valid['loss']:.3f} nll {valid['nll']:.3f}"
                    + (f" kl {valid['kl']:.3f}" if "kl" in valid else "")
                    + (" (best)" if improved else f" (best {self.best_valid_loss:.3f} at epoch {self.best_epoch})")
                )
        if (improved or valid is None) and self.dist.is_main:
            self._save_model_folder(valid)
        self.save_checkpoint()

    def _save_model_folder(self, valid):
        """``model/``: the model, the training data's vocabulary and tokenizer, and a card with ``valid``'s metrics."""
        trained_on = {**self.data_description, "training examples": len(self.train_data)}
        if self.valid_data is not None:
            trained_on["validation examples"] = len(self.valid_data)
        trained_on.update({"epochs": self.epoch, "steps": self.step})
        metrics = {}
        if valid is not None:
            names = {"nll": "NLL (reconstruction), nats per sentence", "kl": "KL(q || p), nats per sentence",
                     "loss": "-ELBO = NLL + KL" if self.latent else "NLL"}
            metrics[f"validation, after epoch {self.epoch} (step {self.step})"] = {
                names[k]: v for k, v in valid.items() if k in names and not (k == "loss" and not self.latent)}
        cfg = self.config
        training = {"seed": cfg.seed, "batch size": cfg.batch_size * self.dist.world_size, "learning rate": cfg.lr,
                    "max gradient norm": cfg.max_grad_norm}
        if self.latent:
            training.update({"KL schedule": cfg.kl_schedule, "free bits": cfg.free_bits})
        if self.model.has_labeling_phase:
            training["label weight"] = {"weight": self._base_label_weight(),
                                        "schedule": "constant" if cfg.label_weight_schedule == "constant"
                                        else "times the KL weight"}
        save_model_folder(self.model_dir, self.model, self.train_data.vocab, trained_on, metrics, training)

    # ------------------------------------------------------ checkpoints

    def _state(self):
        return {
            "epoch": self.epoch,
            "batch_in_epoch": self.batch_in_epoch,
            "best_valid_loss": self.best_valid_loss,
            "best_epoch": self.best_epoch,
            "bad_epochs": self.bad_epochs,
            "elapsed": self._elapsed(),
            "world_size": self.dist.world_size,
            "train_examples": len(self.train_data),
            "config": self.config.to_dict(),
        }

    def save_checkpoint(self) -> None:
        """Write ``checkpoint.pt`` atomically (main process; every process's RNG state goes in)."""
        # per-process state: RNG and the metrics window of every process
        rank_rng = distributed.gather_objects(self.dist, torch.get_rng_state())
        rank_window = distributed.gather_objects(self.dist, self._window.state())
        if self.dist.is_main:
            save_checkpoint(
                self.checkpoint_path,
                model=self.model,
                optimizers=self.optimizers,
                step=self.step,
                epoch=self.epoch,
                extra={"trainer": self._state(), "rank_rng": rank_rng, "rank_window": rank_window},
            )
        distributed.barrier(self.dist)

    def _learning_rate(self, optimizer_name):
        """The config's rate for an optimizer: ``label_lr`` (default ``lr``) for SLCVAE's labeling network."""
        cfg = self.config
        return (cfg.label_lr or cfg.lr) if optimizer_name == LABELING_PHASE else cfg.lr

    def _check_run_dir(self, resume):
        """Before any training: a layout that would fail at the first save, or a fresh run over an old one."""
        if os.path.exists(self.run_dir) and not os.path.isdir(self.run_dir):
            raise ValueError(f"run_dir {self.run_dir!r} is a file, not a folder")
        if os.path.exists(self.checkpoint_path) and not os.path.isfile(self.checkpoint_path):
            raise ValueError(f"{self.checkpoint_path!r} is not a file; the checkpoint cannot be written there")
        if os.path.exists(self.model_dir) and not os.path.isdir(self.model_dir):
            raise ValueError(f"{self.model_dir!r} is a file; the best model is saved as a folder there")
        if not resume and os.path.isfile(self.checkpoint_path):
            # a fresh run here would append to the old metrics.csv and replace its checkpoint and model
            raise ValueError(f"{self.run_dir!r} already holds a run ({CHECKPOINT_FILE}); "
                             "fit(resume=True) continues it, or choose another run_dir")

    def _check_resumable(self, extra):
        """The checkpoint's trainer state fits this Trainer: same example order, processes and training data."""
        state = extra.get("trainer") if isinstance(extra, dict) else None
        if state is None:
            raise ValueError(f"{self.checkpoint_path!r} was not written by the Trainer (no trainer state)")
        old = state["config"]
        for name in _DATA_ORDER_FIELDS:
            if old.get(name) != getattr(self.config, name):
                raise ValueError(
                    f"cannot resume with {name}={getattr(self.config, name)!r}: the checkpoint was trained with "
                    f"{name}={old.get(name)!r} (it decides the order of the examples)"
                )
        if state["world_size"] != self.dist.world_size:
            raise ValueError(
                f"cannot resume on {self.dist.world_size} process(es): the checkpoint was written by "
                f"{state['world_size']} (it decides which examples each process sees)"
            )
        saved_size = state.get("train_examples")  # absent in checkpoints of older versions
        if saved_size is not None and saved_size != len(self.train_data):
            raise ValueError(
                f"cannot resume with {len(self.train_data)} training examples: the checkpoint was trained on "
                f"{saved_size} (the position inside the epoch would point elsewhere)"
            )

    def _resume(self):
        if not os.path.isfile(self.checkpoint_path):
            raise FileNotFoundError(f"cannot resume: no checkpoint at {self.checkpoint_path!r}")
        saved = load_checkpoint(self.checkpoint_path, model=self.model, optimizers=self.optimizers, restore_rng=True,
                                check_extra=self._check_resumable)  # refused before anything is restored
        state = saved["extra"]["trainer"]
        # what a resume may change without breaking exactness: the learning rates (say, lower after a
        # non-finite loss); the optimizer states just loaded carry the old ones
        for name, optimizer in self.optimizers.items():
            for group in optimizer.param_groups:
                group["lr"] = self._learning_rate(name)
        rank_rng = saved["extra"].get("rank_rng")
        if rank_rng is not None and len(rank_rng) == self.dist.world_size:
            torch.set_rng_state(rank_rng[self.dist.rank])
        rank_window = saved["extra"].get("rank_window")
        if rank_window is not None and len(rank_window) == self.dist.world_size:
            self._window.load(rank_window[self.dist.rank])
        self.step = saved["step"]
        self.epoch = state["epoch"]
        self.batch_in_epoch = state["batch_in_epoch"]
        self.best_valid_loss = state["best_valid_loss"]
        self.best_epoch = state["best_epoch"]
        self.bad_epochs = state["bad_epochs"]
        self._elapsed_before = state.get("elapsed", 0.0)

    # ---------------------------------------------------------- helpers

    def _log_train(self, window):
        means = window.means(self.dist, self.device)
        window.reset()
        if self.log is not None and means:
            self.log.write({"step": self.step, "epoch": self.epoch + 1, "split": "train", "seconds": self._elapsed(), **means})

    def _progress(self, total):
        if not (self.config.progress and self.dist.is_main):
            return None
        from tqdm.auto import tqdm

        return tqdm(
            total=total,
            initial=self.batch_in_epoch,
            desc=f"epoch {self.epoch + 1}/{self.config.epochs}",
            dynamic_ncols=True,
            leave=True,
        )

    def _install_signal_handlers(self):
        """Ctrl-C / SIGTERM: finish the current step, save, return "interrupted"; a second Ctrl-C aborts."""
        if threading.current_thread() is not threading.main_thread():
            return None

        def handler(signum, frame):
            if self._stop_signal is not None and signum == signal.SIGINT:
                raise KeyboardInterrupt
            self._stop_signal = signum
            if self.dist.is_main:
                _print("\nstopping after this step and saving a checkpoint (Ctrl-C again to abort at once)")

        # a signal the process ignores (e.g. SIGINT of a background job) stays ignored
        old = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
        old = {s: h for s, h in old.items() if h is not signal.SIG_IGN}
        for s in old:
            signal.signal(s, handler)
        return old

    def _restore_signal_handlers(self, old):
        if old:
            for s, h in old.items():
                signal.signal(s, h)

    def _close_log(self):
        if self.log is not None:
            self.log.close()

    def _plots(self, latent):
        """training_curves.png (when metrics.csv holds a row) and, with ``latent``, latent.png.

        The run is saved before this runs: a plot that fails is reported and skipped, never raised.
        """
        from fastvae.plots import has_metrics, plot_latent_projection, plot_training_curves

        csv_path = in_run(self.run_dir, METRICS_FILE)
        try:
            if has_metrics(csv_path):  # a run stopped before its first logged step has none
                plot_training_curves(csv_path, in_run(self.run_dir, CURVES_PLOT),
                                     free_bits=self.config.free_bits if self.latent else 0.0)
            if latent and self.latent and self.valid_data is not None:
                plot_latent_projection(self.model, self.valid_data, in_run(self.run_dir, LATENT_PLOT))
        except (ImportError, ValueError, OSError) as exc:  # matplotlib broken, a disk full: the run is saved already
            _print(f"plots skipped: {exc}")


def _postfix(metrics):
    shown = {}
    for key in ("loss", "nll", "kl", "kl_weight", "label_nll"):
        if key in metrics:
            shown[key] = f"{metrics[key]:.3g}"
    return shown


def _print(message):
    try:
        from tqdm.auto import tqdm

        tqdm.write(message)
    except ImportError:
        print(message, flush=True)
