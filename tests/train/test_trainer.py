"""The Trainer: learning, exact resume, Ctrl-C, non-finite losses, crashes mid-save, logs, DDP."""

import csv
import math
import os
import signal
import subprocess
import sys
import textwrap

import pytest
import torch

import trainer_setup as ts
from fastvae import SLCVAE, Seq2Seq, SentenceVAE
from fastvae.train import NonFiniteLossError, Trainer, TrainConfig, load_checkpoint, usable_device

HERE = ts.TESTS_DIR  # where trainer_setup.py is, for the scripts run in a subprocess


def make_trainer(cls, run_dir, model_seed=0, **cfg):
    train, valid, vocab = ts.datasets(conditional=cls is not SentenceVAE)
    return Trainer(ts.model(cls, vocab, seed=model_seed), train, valid, ts.config(**cfg), run_dir=run_dir)


def params(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def rows(run_dir, split=None):
    with open(os.path.join(run_dir, "metrics.csv"), newline="") as f:
        return [r for r in csv.DictReader(f) if split is None or r["split"] == split]


# ------------------------------------------------------------- learning


@pytest.mark.parametrize("name", sorted(ts.MODELS))
def test_two_epochs_lower_the_validation_loss(name, tmp_path):
    trainer = make_trainer(ts.MODELS[name], tmp_path, epochs=2)
    before = trainer.validate()["loss"]
    result = trainer.fit()
    assert result.status == "finished" and result.epoch == 2
    valid = rows(tmp_path, "valid")
    assert [int(r["epoch"]) for r in valid] == [1, 2]
    assert float(valid[-1]["loss"]) < before
    assert result.best_valid_loss == pytest.approx(min(float(r["loss"]) for r in valid), rel=1e-5)
    # the best model is loadable and scores the best validation loss
    reloaded = type(trainer.model).from_pretrained(result.model_dir)
    trainer.model.load_state_dict(reloaded.state_dict())
    assert trainer.validate()["loss"] == pytest.approx(result.best_valid_loss, rel=1e-5)


def test_metrics_csv_columns_and_kl_weight_follow_the_schedule(tmp_path):
    make_trainer(SLCVAE, tmp_path, epochs=1).fit()
    train = rows(tmp_path, "train")
    assert [int(r["step"]) for r in train][:3] == [2, 4, 6]
    # linear warm-up over 10 steps: the weight at the last step of a window (step - 1) / 10
    for r in train:
        assert float(r["kl_weight"]) == pytest.approx(min(1.0, (int(r["step"]) - 1) / 10), abs=1e-6)
        assert float(r["label_weight"]) == pytest.approx(float(r["kl_weight"]))  # label_loss_weight 1
        assert r["label_nll"] and r["label"] and r["kl"]
        assert all(math.isfinite(float(r[k])) for k in ("loss", "nll", "kl", "grad_norm"))


def test_seq2seq_rows_leave_the_latent_columns_empty(tmp_path):
    make_trainer(Seq2Seq, tmp_path, epochs=1).fit()
    for r in rows(tmp_path):
        assert r["kl"] == "" and r["kl_weight"] == "" and r["nll"] != ""


def test_early_stopping_stops_when_validation_stops_improving(tmp_path):
    trainer = make_trainer(Seq2Seq, tmp_path, epochs=50, patience=2)
    losses = iter([3.0, 2.0, 2.5, 2.6, 1.0])
    trainer.validate = lambda: {"nll": (x := next(losses)), "loss": x}
    saved = []
    save = trainer.model.save_pretrained
    trainer.model.save_pretrained = lambda d: (saved.append(trainer.epoch), save(d))
    result = trainer.fit()
    assert result.status == "early_stopped" and result.epoch == 4
    assert result.best_valid_loss == 2.0 and result.best_epoch == 2
    assert saved == [1, 2]  # model/ holds epoch 2's weights
    assert [float(r["loss"]) for r in rows(tmp_path, "valid")] == [3.0, 2.0, 2.5, 2.6]


def test_time_and_step_limits_save_a_checkpoint(tmp_path):
    result = make_trainer(SLCVAE, tmp_path, max_steps=5).fit()
    assert result.status == "max_steps" and result.step == 5
    assert load_checkpoint(result.checkpoint, restore_rng=False)["step"] == 5
    result = make_trainer(Seq2Seq, tmp_path / "t", max_time=1e-9).fit()
    assert result.status == "time_limit" and result.step == 1


@pytest.mark.parametrize("limit", [3, 6])  # mid-epoch; at the end of epoch 1 (6 batches of 8)
def test_resuming_a_run_at_its_limit_trains_no_further_step(tmp_path, limit):
    assert make_trainer(Seq2Seq, tmp_path, max_steps=limit).fit().status == "max_steps"
    files = ("checkpoint.pt", "metrics.csv")
    before = {name: (tmp_path / name).read_bytes() for name in files}
    for _ in range(2):  # every further resume as well
        resumed = make_trainer(Seq2Seq, tmp_path, model_seed=123, max_steps=limit)
        result = resumed.fit(resume=True)
        assert (result.status, result.step, result.epoch) == ("max_steps", limit, 0)
        assert {name: (tmp_path / name).read_bytes() for name in files} == before  # checkpoint and log unchanged
    # a higher limit continues from there
    assert make_trainer(Seq2Seq, tmp_path, max_steps=limit + 1).fit(resume=True).step == limit + 1
    # the time limit likewise: the seconds already trained count
    make_trainer(Seq2Seq, tmp_path / "t", max_time=1e-9).fit()
    before = (tmp_path / "t" / "checkpoint.pt").read_bytes()
    result = make_trainer(Seq2Seq, tmp_path / "t", max_time=1e-9).fit(resume=True)
    assert (result.status, result.step) == ("time_limit", 1)
    assert (tmp_path / "t" / "checkpoint.pt").read_bytes() == before


def test_tensorboard_events_and_plots_are_written(tmp_path):
    trainer = make_trainer(SentenceVAE, tmp_path, epochs=1, tensorboard=True, plots=True)
    trainer.fit()
    assert any(name.startswith("events.out.tfevents") for name in os.listdir(tmp_path / "tb"))
    for png in ("training_curves.png", "latent.png"):
        with open(tmp_path / png, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"


# --------------------------------------------------------------- resume


@pytest.mark.parametrize("name", ["SLCVAE", "SentenceVAE"])
def test_resume_continues_exactly_like_an_uninterrupted_run(name, tmp_path):
    cls = ts.MODELS[name]
    full = make_trainer(cls, tmp_path / "full", epochs=2)
    full.fit()
    expected = params(full.model)

    cut = make_trainer(cls, tmp_path / "cut", epochs=2, max_steps=11)  # mid-way through epoch 2
    assert cut.fit().status == "max_steps"
    resumed = make_trainer(cls, tmp_path / "cut", model_seed=123, epochs=2)  # other init: all state comes from disk
    result = resumed.fit(resume=True)
    assert result.status == "finished" and result.step == full.step
    for k, v in expected.items():
        assert torch.equal(v, resumed.model.state_dict()[k]), k
    # the log of the resumed run equals the uninterrupted one, row for row
    a, b = rows(tmp_path / "full"), rows(tmp_path / "cut")
    key = lambda r: (r["step"], r["split"], r["loss"], r["nll"], r["kl"])  # noqa: E731
    assert [key(r) for r in a] == [key(r) for r in b]


def test_resume_refuses_a_different_batch_size(tmp_path):
    make_trainer(Seq2Seq, tmp_path, max_steps=3).fit()
    with pytest.raises(ValueError, match="batch_size"):
        make_trainer(Seq2Seq, tmp_path, batch_size=4).fit(resume=True)


def test_resume_without_a_checkpoint_names_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="checkpoint.pt"):
        make_trainer(Seq2Seq, tmp_path).fit(resume=True)


def test_ctrl_c_finishes_the_step_saves_and_resumes_exactly(tmp_path):
    full = make_trainer(SLCVAE, tmp_path / "full", epochs=2)
    full.fit()

    trainer = make_trainer(SLCVAE, tmp_path / "cut", epochs=2)
    step = trainer._train_step

    def step_then_ctrl_c(batch):
        out = step(batch)
        if trainer.step == 6:  # the 7th step is running: Ctrl-C arrives in the middle of it
            os.kill(os.getpid(), signal.SIGINT)
        return out

    trainer._train_step = step_then_ctrl_c
    before = signal.signal(signal.SIGINT, signal.default_int_handler)  # a background job may ignore SIGINT
    try:
        result = trainer.fit()
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the trainer put it back
    finally:
        signal.signal(signal.SIGINT, before)
    assert result.status == "interrupted" and result.step == 7
    assert load_checkpoint(result.checkpoint, restore_rng=False)["step"] == 7
    resumed = make_trainer(SLCVAE, tmp_path / "cut", model_seed=9, epochs=2)
    resumed.fit(resume=True)
    for k, v in params(full.model).items():
        assert torch.equal(v, resumed.model.state_dict()[k]), k


# ------------------------------------------------------ failure handling


def test_non_finite_loss_stops_with_a_clear_message_and_keeps_the_checkpoint(tmp_path):
    trainer = make_trainer(SentenceVAE, tmp_path, epochs=1)
    trainer.fit()
    with open(trainer.checkpoint_path, "rb") as f:
        good = f.read()

    trainer = make_trainer(SentenceVAE, tmp_path, epochs=2)
    forward = trainer.model.forward
    calls = [0]

    def poisoned(*args, **kwargs):
        out = forward(*args, **kwargs)
        calls[0] += 1
        if calls[0] == 3:
            out.loss = out.loss * float("nan")
        return out

    trainer.model.forward = poisoned
    with pytest.raises(NonFiniteLossError, match=r"non-finite loss \(nan\) at step 9 .*checkpoint.pt.* intact"):
        trainer.fit(resume=True)
    with open(trainer.checkpoint_path, "rb") as f:
        assert f.read() == good
    assert load_checkpoint(trainer.checkpoint_path, restore_rng=False)["step"] == 6


def test_non_finite_loss_before_any_checkpoint_says_so(tmp_path):
    trainer = make_trainer(Seq2Seq, tmp_path)
    with torch.no_grad():
        trainer.model.decoder.out.weight.fill_(float("inf"))
    with pytest.raises(NonFiniteLossError, match="no checkpoint had been written yet"):
        trainer.fit()
    assert not os.path.exists(trainer.checkpoint_path)


def test_a_crash_in_the_middle_of_saving_leaves_the_last_checkpoint_loadable(tmp_path):
    """SIGKILL while the second checkpoint is half written: the first one stays whole."""
    script = textwrap.dedent(
        f"""
        import os, signal, sys
        sys.path.insert(0, {HERE!r})
        import torch
        import trainer_setup as ts
        from fastvae import SLCVAE
        from fastvae.train import Trainer
        from fastvae.train import checkpoint as ck

        train, valid, vocab = ts.datasets()
        trainer = Trainer(ts.model(SLCVAE, vocab), train, valid, ts.config(epochs=2), run_dir={str(tmp_path)!r})
        saves = [0]
        real_save = torch.save

        def dying_save(obj, f, *a, **k):
            saves[0] += 1
            if saves[0] == 2:  # the end of epoch 2: write part of it, then die
                f.write(b"partial checkpoint bytes" * 1000)
                f.flush()
                os.kill(os.getpid(), signal.SIGKILL)
            return real_save(obj, f, *a, **k)

        ck.torch.save = dying_save
        trainer.fit()
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    saved = load_checkpoint(tmp_path / "checkpoint.pt", restore_rng=False)
    assert saved["epoch"] == 1 and saved["step"] == 6
    assert isinstance(saved["model"], SLCVAE)


# ------------------------------------------------------------- checks


def test_bad_arguments_are_named(tmp_path):
    train, valid, vocab = ts.datasets()
    with pytest.raises(ValueError, match="batch_size"):
        TrainConfig(batch_size=0).check()
    with pytest.raises(ValueError, match="lr"):
        TrainConfig(lr=float("nan")).check()
    with pytest.raises(ValueError, match="warmup_steps|linear"):
        TrainConfig(kl_schedule={"name": "linear"}).check()
    with pytest.raises(ValueError, match="train_data does not fit a SentenceVAE"):
        Trainer(ts.model(SentenceVAE, vocab), train, None, ts.config(), run_dir=tmp_path)
    with pytest.raises(TypeError, match="train_data must be"):
        Trainer(ts.model(Seq2Seq, vocab), [1, 2], None, ts.config(), run_dir=tmp_path)
    with pytest.raises(ValueError, match="vocab_size"):
        Trainer(Seq2Seq(len(vocab) + 1, embed_dim=4, hidden_size=4), train, None, ts.config(), run_dir=tmp_path)
    with pytest.raises(TypeError, match="model must be"):
        Trainer(torch.nn.Linear(2, 2), train, None, ts.config(), run_dir=tmp_path)


def test_device_is_checked_up_front():
    assert usable_device("cpu") == torch.device("cpu")
    assert usable_device(torch.device("cpu")) == torch.device("cpu")
    with pytest.raises(ValueError, match="device must name a device.*'gpu0'"):
        TrainConfig(device="gpu0").check()
    with pytest.raises(ValueError, match="device must be cpu or cuda.*'meta'"):
        TrainConfig(device="meta").check()
    with pytest.raises(ValueError, match="where must name"):
        usable_device(3.5, name="where")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="device is 'cuda', but .* no CUDA device"):
            TrainConfig(device="cuda").check()
    else:
        with pytest.raises(ValueError, match="CUDA device\\(s\\) are visible"):
            usable_device(f"cuda:{torch.cuda.device_count()}")


def test_without_validation_data_the_last_model_is_kept(tmp_path):
    train, _, vocab = ts.datasets()
    trainer = Trainer(ts.model(Seq2Seq, vocab), train, None, ts.config(epochs=1), run_dir=tmp_path)
    result = trainer.fit()
    assert result.best_valid_loss is None and os.path.isdir(result.model_dir)
    reloaded = Seq2Seq.from_pretrained(result.model_dir)
    for k, v in trainer.model.state_dict().items():
        assert torch.equal(v, reloaded.state_dict()[k])


# ------------------------------------------------------------------ DDP

DDP_SCRIPT = """
import json, os, sys
sys.path.insert(0, {here!r})
import torch
import trainer_setup as ts
from fastvae.train import Trainer

name, batch_size, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
train, valid, vocab = ts.datasets(n_train=32)
trainer = Trainer(ts.model(ts.MODELS[name], vocab), train, valid,
                  ts.config(epochs=2, batch_size=batch_size, log_every=1), run_dir=out + "-run")
trainer.fit()
rank = trainer.dist.rank
torch.save(trainer.model.state_dict(), f"{{out}}-rank{{rank}}.pt")
if rank == 0:
    json.dump({{"world": trainer.dist.world_size, "valid": trainer.best_valid_loss}}, open(out + ".json", "w"))
"""


def _run(argv, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("WORLD_SIZE", None)
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=600, cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


@pytest.mark.parametrize("name", ["Seq2Seq", "SLCVAE"])
def test_two_process_ddp_matches_one_process_with_the_doubled_batch(name, tmp_path):
    script = tmp_path / "ddp_train.py"
    script.write_text(DDP_SCRIPT.format(here=HERE))
    _run([sys.executable, str(script), name, "8", str(tmp_path / "single")], tmp_path)
    _run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script), name, "4",
         str(tmp_path / "ddp")],
        tmp_path,
    )
    import json

    info = json.load(open(tmp_path / "ddp.json"))
    assert info["world"] == 2
    ranks = [torch.load(tmp_path / f"ddp-rank{r}.pt") for r in (0, 1)]
    single = torch.load(tmp_path / "single-rank0.pt")
    for k in single:
        assert torch.equal(ranks[0][k], ranks[1][k]), f"{k} differs between the two processes"
    ddp_rows, single_rows = rows(tmp_path / "ddp-run"), rows(tmp_path / "single-run")
    assert [r["step"] for r in ddp_rows] == [r["step"] for r in single_rows]
    if name == "Seq2Seq":  # deterministic: the same steps, up to float summation order
        for k in single:
            torch.testing.assert_close(ranks[0][k], single[k], rtol=1e-4, atol=1e-5)
        for a, b in zip(ddp_rows, single_rows):
            assert float(a["loss"]) == pytest.approx(float(b["loss"]), rel=1e-4)
        assert info["valid"] == pytest.approx(json.load(open(tmp_path / "single.json"))["valid"], rel=1e-4)
    else:  # sampled z differ per process: the same trajectory only statistically
        first_a, first_b = float(ddp_rows[0]["nll"]), float(single_rows[0]["nll"])
        assert first_a == pytest.approx(first_b, rel=0.02)  # step 1: same weights, same examples, different eps


# ------------------------------------------------------------------ edge cases of the Trainer API


def test_a_new_learning_rate_applies_on_resume(tmp_path):
    """The advice after a non-finite loss ('resume with a lower lr') must work: the loaded Adam state keeps the old lr."""
    make_trainer(SLCVAE, tmp_path, max_steps=3, lr=1e-3).fit()
    resumed = make_trainer(SLCVAE, tmp_path, max_steps=4, lr=1e-5, label_lr=2e-5)
    resumed.fit(resume=True)
    assert [g["lr"] for g in resumed.optimizers["cvae"].param_groups] == [1e-5]
    assert [g["lr"] for g in resumed.optimizers["label"].param_groups] == [2e-5]
    assert float(rows(tmp_path, "train")[-1]["lr"]) == pytest.approx(1e-5)


def test_a_fresh_fit_never_overwrites_an_existing_run(tmp_path):
    make_trainer(Seq2Seq, tmp_path, max_steps=2).fit()
    before = open(os.path.join(tmp_path, "metrics.csv")).read()
    with pytest.raises(ValueError, match="already holds a run"):
        make_trainer(Seq2Seq, tmp_path, max_steps=2).fit()
    assert open(os.path.join(tmp_path, "metrics.csv")).read() == before


def test_run_dir_layouts_that_would_fail_at_the_first_save_are_refused_up_front(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "checkpoint.pt").mkdir()
    with pytest.raises(ValueError, match="checkpoint.pt' is not a file"):
        make_trainer(Seq2Seq, tmp_path / "a").fit()
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "model").write_text("x")
    with pytest.raises(ValueError, match="is a file; the best model is saved as a folder"):
        make_trainer(Seq2Seq, tmp_path / "b").fit()
    (tmp_path / "c").write_text("x")
    with pytest.raises(ValueError, match="is a file, not a folder"):
        make_trainer(Seq2Seq, tmp_path / "c").fit()


def test_config_and_fit_arguments_are_checked():
    with pytest.raises(ValueError, match="seed must be at most"):
        TrainConfig(seed=2 * 10**13).check()
    with pytest.raises(ValueError, match="label_weight must be at most"):
        TrainConfig(label_weight=1e300).check()
    for name in ("progress", "tensorboard", "plots"):
        with pytest.raises(ValueError, match=f"{name} must be True or False"):
            TrainConfig(**{name: "no"}).check()
    with pytest.raises(TypeError, match="built from a dict"):
        TrainConfig.from_dict(None)
    train, valid, vocab = ts.datasets(conditional=False)
    trainer = Trainer(ts.model(SentenceVAE, vocab), train, valid, {"epochs": 1, "progress": False}, run_dir="unused")
    assert trainer.config.epochs == 1  # a dict of fields is taken as a TrainConfig
    with pytest.raises(TypeError, match="config must be a TrainConfig"):
        Trainer(ts.model(SentenceVAE, vocab), train, valid, ["epochs"], run_dir="unused")
    with pytest.raises(TypeError, match="resume must be True or False"):
        trainer.fit(resume="no")


def test_a_refused_resume_leaves_the_model_optimizers_and_rng_untouched(tmp_path):
    make_trainer(Seq2Seq, tmp_path, max_steps=3).fit()
    other = make_trainer(Seq2Seq, tmp_path, model_seed=5, batch_size=4)
    before, rng = params(other.model), torch.get_rng_state()
    with pytest.raises(ValueError, match="batch_size"):
        other.fit(resume=True)
    assert all(torch.equal(v, params(other.model)[k]) for k, v in before.items())
    assert torch.equal(rng, torch.get_rng_state())
    # weights that do not fit: refused before any tensor is copied (load_state_dict copies the ones that fit)
    _, _, vocab = ts.datasets()
    wider = Seq2Seq(len(vocab), embed_dim=12, hidden_size=20, num_layers=1)
    before = params(wider)
    with pytest.raises(ValueError, match="do not fit the model"):
        load_checkpoint(os.path.join(tmp_path, "checkpoint.pt"), model=wider)
    assert all(torch.equal(v, params(wider)[k]) for k, v in before.items())


def test_resume_with_other_training_data_is_refused(tmp_path):
    make_trainer(Seq2Seq, tmp_path, max_steps=3).fit()
    from fastvae.data import TextDataset

    _, valid, vocab = ts.datasets()
    smaller = TextDataset(ts.examples(12), vocab)  # the same vocabulary, half the examples
    trainer = Trainer(ts.model(Seq2Seq, vocab), smaller, valid, ts.config(), run_dir=tmp_path)
    with pytest.raises(ValueError, match="cannot resume with 24 training examples: the checkpoint was trained on 48"):
        trainer.fit(resume=True)
