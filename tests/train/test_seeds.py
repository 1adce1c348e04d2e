"""Repeatable seeds: the same command (or Trainer call) with the same seed gives the same losses step by step
and the same weights, for every model type; another seed gives other numbers."""

import csv
import os
import random

import numpy
import pytest
import torch

from fastvae.cli import main
from fastvae.train import Trainer, load_checkpoint, seed_everything

import trainer_setup

CLI_MODELS = ("sentence-vae", "cvae", "slcvae", "seq2seq")
STEPS = 4


@pytest.fixture(autouse=True)
def _restore_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def _losses(run_dir):
    """The metrics of every logged step (wall-clock seconds left out)."""
    with open(os.path.join(run_dir, "metrics.csv"), newline="", encoding="utf-8") as f:
        return [{k: v for k, v in row.items() if k != "seconds"} for row in csv.DictReader(f)]


def _weights(run_dir):
    return load_checkpoint(os.path.join(run_dir, "checkpoint.pt"), restore_rng=False)["model"].state_dict()


def _assert_same_weights(a, b):
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    directory = tmp_path_factory.mktemp("seed-data")
    rng = random.Random(3)
    words = "the a cat dog man sees likes eats finds ball fish bread apple book river house".split()
    pairs = [f"{' '.join(rng.choices(words, k=4))}\t{' '.join(rng.choices(words, k=rng.randint(3, 7)))} ." for _ in range(48)]
    files = {}
    for name, lines in (("train", pairs[:40]), ("valid", pairs[40:])):
        path = directory / f"{name}.tsv"
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        files[name] = str(path)
    return files


def _train(corpus, model, run_dir, seed):
    latent = [] if model == "seq2seq" else ["--latent-size", "4"]
    data = ["--data", "lines"] if model == "sentence-vae" else ["--data", "tsv"]
    if model == "sentence-vae":  # the targets only, one sentence per line
        lines_dir = os.path.dirname(corpus["train"])
        files = []
        for split in ("train", "valid"):
            path = os.path.join(lines_dir, f"{split}.txt")
            if not os.path.exists(path):
                with open(corpus[split], encoding="utf-8") as f, open(path, "w", encoding="utf-8") as out:
                    out.writelines(line.split("\t")[1] for line in f)
            files.append(path)
    else:
        files = [corpus["train"], corpus["valid"]]
    argv = ["train", "--model", model, "--run-dir", str(run_dir), *data, "--train-file", files[0],
            "--valid-file", files[1], "--embed-dim", "8", "--hidden-size", "8", "--num-layers", "1", *latent,
            "--batch-size", "8", "--word-dropout", "0.3", "--max-steps", str(STEPS), "--log-every", "1",
            "--seed", str(seed), "--threads", "1", "--no-progress", "--no-tensorboard", "--no-plots"]
    if model in ("cvae", "slcvae"):
        argv.append("--bow")
    assert main(argv) == 0


@pytest.mark.parametrize("model", CLI_MODELS)
def test_cli_same_seed_same_numbers(model, corpus, tmp_path):
    """The issue's reproduction, per model: two fresh runs of one command with --seed 0 (the process's torch
    generator left elsewhere by the first run) log the same losses at every step and end with the same weights."""
    _train(corpus, model, tmp_path / "a", seed=0)
    torch.rand(1000)  # whatever the process drew in between must not matter
    _train(corpus, model, tmp_path / "b", seed=0)
    first, second = _losses(tmp_path / "a"), _losses(tmp_path / "b")
    assert [row["step"] for row in first if row["split"] == "train"] == [str(s) for s in range(1, STEPS + 1)]
    assert first == second
    _assert_same_weights(_weights(tmp_path / "a"), _weights(tmp_path / "b"))
    _train(corpus, model, tmp_path / "c", seed=1)
    assert _losses(tmp_path / "c") != first  # the seed does decide the numbers


def _api_run(cls, run_dir, seed, disturb):
    train, valid, vocab = trainer_setup.datasets(conditional=cls is not trainer_setup.SentenceVAE)
    torch.rand(disturb)  # the global generator's state before the call must not matter
    random.random()
    seed_everything(seed)
    kwargs = {"word_dropout": 0.3}
    if cls in (trainer_setup.CVAE, trainer_setup.SLCVAE):
        kwargs["bow"] = True
    model = cls(len(vocab), embed_dim=12, hidden_size=16, num_layers=1,
                **({} if cls is trainer_setup.Seq2Seq else {"latent_size": 4}), **kwargs)
    config = trainer_setup.config(seed=seed, max_steps=STEPS, log_every=1)
    result = Trainer(model, train, valid, config, run_dir=str(run_dir)).fit()
    assert result.status == "max_steps"
    return _losses(run_dir), {k: v.clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("name", list(trainer_setup.MODELS))
def test_trainer_same_seed_same_numbers(name, tmp_path):
    """Python API: seed_everything(seed) before building the model + TrainConfig(seed=seed) repeat a run exactly."""
    cls = trainer_setup.MODELS[name]
    losses_a, weights_a = _api_run(cls, tmp_path / "a", seed=5, disturb=3)
    losses_b, weights_b = _api_run(cls, tmp_path / "b", seed=5, disturb=17)
    assert len([row for row in losses_a if row["split"] == "train"]) == STEPS
    assert losses_a == losses_b
    _assert_same_weights(weights_a, weights_b)
    losses_c, weights_c = _api_run(cls, tmp_path / "c", seed=6, disturb=3)
    assert losses_c != losses_a
    assert any(not torch.equal(weights_a[k], weights_c[k]) for k in weights_a)


def test_seed_everything_seeds_torch_python_and_numpy():
    seed_everything(11)
    first = (torch.rand(3), random.random(), numpy.random.rand())
    seed_everything(11)
    second = (torch.rand(3), random.random(), numpy.random.rand())
    assert torch.equal(first[0], second[0]) and first[1:] == second[1:]
    assert seed_everything(2**63 - 1) == 2**63 - 1  # the largest seed torch takes (numpy gets it mod 2**32)
    for bad in (-1, 2**63, 1.5, True, "0"):
        with pytest.raises(ValueError, match="seed"):
            seed_everything(bad)
