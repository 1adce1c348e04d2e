"""Failures said as what they are: a non-finite value made by training is the exit-1 message naming the step and
the last good checkpoint; errors about a file name the file and the key; no advice for an option the command
lacks; temp files of an interrupted save are removed at the next save/load; files follow the umask."""

import json
import os
import random
import signal
import stat
import subprocess
import sys
import textwrap
import time

import pytest
import torch

import trainer_setup as ts
from fastvae import CVAE, SLCVAE
from fastvae._files import TEMP_PREFIX, _host_tag, remove_stale_temps
from fastvae.cli import main
from fastvae.data import Vocab
from fastvae.evaluate import write_report
from fastvae.train import NonFiniteLossError, Trainer, load_checkpoint, save_checkpoint

HERE = ts.TESTS_DIR  # where trainer_setup.py is, for the scripts run in a subprocess


@pytest.fixture(autouse=True)
def _restore_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def pairs(tmp_path):
    rng = random.Random(5)
    words = "the a cat dog man sees likes eats finds ball fish bread".split()
    lines = [f"{' '.join(rng.choices(words, k=3))}\t{' '.join(rng.choices(words, k=rng.randint(2, 5)))} ." for _ in range(40)]
    (tmp_path / "train.tsv").write_text("\n".join(lines[:32]) + "\n", encoding="utf-8")
    (tmp_path / "valid.tsv").write_text("\n".join(lines[32:]) + "\n", encoding="utf-8")
    return str(tmp_path / "train.tsv"), str(tmp_path / "valid.tsv")


def train_argv(run_dir, pairs, *extra):
    return ["train", "--model", "slcvae", "--run-dir", str(run_dir), "--data", "tsv", "--train-file", pairs[0],
            "--valid-file", pairs[1], "--embed-dim", "8", "--hidden-size", "8", "--latent-size", "4",
            "--num-layers", "1", "--batch-size", "8", "--threads", "1", "--no-progress", "--no-tensorboard", *extra]


def poison_recognition(model):
    """Weights a diverged step could leave: the posterior's log-variance overflows, so the sampled z is inf."""
    with torch.no_grad():
        model.recognition.out.weight.fill_(1e30)


# ------------------------------------------------------------------------- non-finite values


def test_a_non_finite_latent_stops_training_as_non_finite_not_as_a_bad_argument(tmp_path):
    """The op that gets the inf z raises ValueError ('argument z contains NaN or infinite values'); inside a
    training step that value came from the weights: the Trainer says so, with the step and the checkpoint."""
    train, valid, vocab = ts.datasets()
    trainer = Trainer(ts.model(SLCVAE, vocab), train, valid, ts.config(epochs=2, plots=True), run_dir=tmp_path)
    forward, calls = trainer.model.forward, [0]

    def diverging(*args, **kwargs):
        calls[0] += 1
        if calls[0] == 8:  # 6 steps and epoch 1's validation: step 7, after epoch 1's checkpoint
            poison_recognition(trainer.model)
        return forward(*args, **kwargs)

    trainer.model.forward = diverging
    with pytest.raises(NonFiniteLossError) as info:
        trainer.fit()
    text = str(info.value)
    assert "argument 'z'" in text and "at step 7 " in text and "cvae phase" in text
    assert f"{trainer.checkpoint_path!r} is intact" in text
    assert load_checkpoint(trainer.checkpoint_path, restore_rng=False)["step"] == 6
    assert os.path.isfile(tmp_path / "training_curves.png")  # the curves up to the divergence


def test_other_value_errors_inside_a_step_are_not_called_non_finite(tmp_path):
    train, valid, vocab = ts.datasets()
    trainer = Trainer(ts.model(CVAE, vocab), train, valid, ts.config(), run_dir=tmp_path)

    def broken(*args, **kwargs):
        raise ValueError("context and target must have the same batch size")

    trainer.model.forward = broken
    with pytest.raises(ValueError, match="same batch size"):
        trainer.fit()


def test_cli_divergence_exits_1_naming_the_step_and_the_checkpoint(tmp_path, pairs, capsys, monkeypatch):
    """The issue's reproduction in small: weights that blow up mid-run make z infinite. Exit status 1 (the
    documented one), one message naming the step and the intact checkpoint; not 'error: ... argument' (exit 2)."""
    forward, calls = SLCVAE.forward, [0]

    def diverging(self, *args, **kwargs):
        calls[0] += 1
        if calls[0] == 6:  # 4 steps and epoch 1's validation: step 5, after the checkpoint of step 4
            poison_recognition(self)
        return forward(self, *args, **kwargs)

    monkeypatch.setattr(SLCVAE, "forward", diverging)
    run_dir = tmp_path / "div"
    assert main(train_argv(run_dir, pairs, "--save-every", "2", "--epochs", "5")) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("fastvae train: non-finite") and "error:" not in err, err
    assert "at step 5 " in err and "checkpoint.pt' is intact" in err and "--" not in err.split("(")[0]
    assert load_checkpoint(run_dir / "checkpoint.pt", restore_rng=False)["step"] == 4


# ------------------------------------------------------------------- errors that name the file and the key


def test_an_invalid_value_in_run_json_names_run_json_and_the_key(tmp_path, pairs, capsys):
    run_dir = tmp_path / "run"
    assert main(train_argv(run_dir, pairs, "--max-steps", "2")) == 0
    capsys.readouterr()
    run_json = run_dir / "run.json"
    good = json.loads(run_json.read_text())
    for key, value, words in (("lr", -1.0, ["'train.lr'", "must be"]), ("batch_size", "8", ["'train.batch_size'"]),
                              ("nonsense", 1, ["'train'", "nonsense"])):
        saved = json.loads(json.dumps(good))
        saved["train"][key] = value
        run_json.write_text(json.dumps(saved))
        assert main(["train", "--run-dir", str(run_dir), "--resume", "--max-steps", "3"]) == 2
        err = capsys.readouterr().err.strip()
        assert str(run_json) in err and all(w in err for w in words), err
        assert "--lr" not in err and "--batch-size" not in err, err  # flags the user never passed
    for key, value, word in (("max_length", "abc", "'max_length'"), ("corpus", {"name": "bible", "colour": 1}, "'corpus'")):
        saved = json.loads(json.dumps(good))
        saved[key] = value
        run_json.write_text(json.dumps(saved))
        assert main(["train", "--run-dir", str(run_dir), "--resume", "--max-steps", "3"]) == 2
        err = capsys.readouterr().err.strip()
        assert str(run_json) in err and word in err and "--max-length" not in err, err


def test_a_bad_model_name_in_config_json_names_the_file_and_suggests_no_class(tmp_path, capsys):
    model = ts.model(CVAE, Vocab.build([["a", "b"]]))
    model.save_pretrained(tmp_path / "m")
    config = tmp_path / "m" / "config.json"
    saved = json.loads(config.read_text())
    saved["model"] = "GPT5"
    config.write_text(json.dumps(saved))
    with pytest.raises(ValueError) as info:
        CVAE.from_pretrained(tmp_path / "m")
    text = str(info.value)
    assert str(config) in text and "'model'" in text and "GPT5" in text and "fastvae.GPT5" not in text
    assert "CVAE" in text and "SLCVAE" in text  # the names it could hold
    saved["model"] = "CVAE"
    saved["config"]["hidden_size"] = -3
    config.write_text(json.dumps(saved))
    with pytest.raises(ValueError, match=r"config\.json: key 'config' holds an invalid value: hidden_size"):
        CVAE.from_pretrained(tmp_path / "m")
    with pytest.raises(ValueError, match="backend must be"):  # the caller's argument, not the file's
        CVAE.from_pretrained(tmp_path / "m", backend="tpu")


def test_vocab_json_errors_name_the_key(tmp_path):
    path = tmp_path / "vocab.json"
    path.write_text(json.dumps({"format_version": 1}))
    with pytest.raises(ValueError, match=r"vocab\.json .*key 'tokens' is missing"):
        Vocab.load(path)
    path.write_text(json.dumps({"format_version": 1, "tokens": "abc"}))
    with pytest.raises(ValueError, match="key 'tokens' must be a list"):
        Vocab.load(path)


def test_demo_into_a_used_folder_advises_no_resume(tmp_path, capsys):
    """demo has no --resume: a second demo into one folder says to remove it or choose another --run-dir."""
    (tmp_path / "demo" / "slcvae").mkdir(parents=True)
    (tmp_path / "demo" / "slcvae" / "checkpoint.pt").write_bytes(b"x")
    assert main(["demo", "--run-dir", str(tmp_path / "demo"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert "already holds a run" in err and "--run-dir" in err and "--resume" not in err, err


def test_train_into_a_used_folder_still_advises_resume(tmp_path, pairs, capsys):
    assert main(train_argv(tmp_path / "run", pairs, "--max-steps", "1")) == 0
    capsys.readouterr()
    assert main(train_argv(tmp_path / "run", pairs, "--max-steps", "1")) == 2
    assert "pass --resume" in capsys.readouterr().err


# ----------------------------------------------------------------- temp files of interrupted saves


def _dead_pid():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _temps(directory):
    return sorted(n for n in os.listdir(directory) if n.startswith(TEMP_PREFIX) or n.endswith(".tmp"))


def _leave_temps(directory):
    """A temp file of a killed writer, one of fastvae 0.1.0 (old enough), and one of a live writer."""
    dead = directory / f"{TEMP_PREFIX}{_host_tag()}-{_dead_pid()}-abcd1234-checkpoint.pt"
    legacy = directory / f"{TEMP_PREFIX}x1y2z3w4-model.safetensors"
    legacy_vocab = directory / "vocab.json.tmp"
    live = directory / f"{TEMP_PREFIX}{_host_tag()}-{os.getppid()}-efgh5678-config.json"
    for path in (dead, legacy, legacy_vocab, live):
        path.write_bytes(b"half a file")
    old = time.time() - 3600
    for path in (legacy, legacy_vocab):
        os.utime(path, (old, old))
    return live.name


@pytest.mark.parametrize("operation", ["save_checkpoint", "load_checkpoint", "save_pretrained", "from_pretrained",
                                       "vocab_save", "vocab_load", "write_report"])
def test_stale_temp_files_are_removed_at_the_next_save_or_load(tmp_path, operation):
    vocab = Vocab.build([["a", "b"]])
    model = ts.model(CVAE, vocab)
    save_checkpoint(tmp_path / "checkpoint.pt", model=model, optimizers={}, step=1, epoch=0)
    model.save_pretrained(tmp_path)
    vocab.save(tmp_path / "vocab.json")
    live = _leave_temps(tmp_path)
    {
        "save_checkpoint": lambda: save_checkpoint(tmp_path / "checkpoint.pt", model=model, optimizers={}, step=2, epoch=0),
        "load_checkpoint": lambda: load_checkpoint(tmp_path / "checkpoint.pt", restore_rng=False),
        "save_pretrained": lambda: model.save_pretrained(tmp_path),
        "from_pretrained": lambda: CVAE.from_pretrained(tmp_path),
        "vocab_save": lambda: vocab.save(tmp_path / "vocab.json"),
        "vocab_load": lambda: Vocab.load(tmp_path / "vocab.json"),
        "write_report": lambda: write_report(tmp_path / "report.json", {"a": 1}),
    }[operation]()
    assert _temps(tmp_path) == [live]  # a live writer's file stays


def test_a_save_killed_mid_write_leaves_a_temp_file_that_the_next_load_removes(tmp_path):
    script = textwrap.dedent(
        f"""
        import os, signal, sys
        sys.path.insert(0, {HERE!r})
        import torch
        import trainer_setup as ts
        from fastvae import CVAE
        from fastvae.data import Vocab
        from fastvae.train import checkpoint as ck

        model = ts.model(CVAE, Vocab.build([["a", "b"]]))
        ck.save_checkpoint({str(tmp_path / "checkpoint.pt")!r}, model=model, optimizers={{}}, step=1, epoch=0)

        def dying_save(obj, f, *a, **k):
            f.write(b"partial checkpoint bytes" * 100)
            f.flush()
            os.kill(os.getpid(), signal.SIGKILL)

        ck.torch.save = dying_save
        ck.save_checkpoint({str(tmp_path / "checkpoint.pt")!r}, model=model, optimizers={{}}, step=2, epoch=0)
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert len(_temps(tmp_path)) == 1  # kill -9: nothing could clean up
    assert load_checkpoint(tmp_path / "checkpoint.pt", restore_rng=False)["step"] == 1
    assert _temps(tmp_path) == []


def test_remove_stale_temps_leaves_other_files_alone(tmp_path):
    for name in ("checkpoint.pt", ".tmpfile", "notes.tmp", f"{TEMP_PREFIX}folder"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / f"{TEMP_PREFIX}dir-1-x-y").mkdir()
    recent_legacy = tmp_path / f"{TEMP_PREFIX}abcdefgh.json"  # a 0.1.0 writer may still be at work
    recent_legacy.write_bytes(b"x")
    assert remove_stale_temps(tmp_path) == []
    assert remove_stale_temps(tmp_path / "missing") == []


# ----------------------------------------------------------------------------------- the umask


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_run_files_follow_the_umask(tmp_path, pairs, umask, capsys):
    old = os.umask(umask)
    try:
        assert main(train_argv(tmp_path / "run", pairs, "--epochs", "1")) == 0
    finally:
        os.umask(old)
    expected = 0o666 & ~umask
    run = tmp_path / "run"
    files = [run / n for n in ("checkpoint.pt", "run.json", "vocab.json", "metrics.csv")]
    files += [run / "model" / n for n in ("config.json", "model.safetensors", "vocab.json", "tokenizer_config.json",
                                          "README.md")]
    for path in files:
        assert stat.S_IMODE(os.stat(path).st_mode) == expected, (path, oct(os.stat(path).st_mode))
