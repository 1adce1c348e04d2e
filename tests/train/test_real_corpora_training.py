"""Train and evaluate briefly on the real corpora through the CLI (skipped only where the data directory is absent)."""

import json
import math
import os

import pytest

from fastvae.cli import main

DATA = os.environ.get("FASTVAE_DATA", os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared", "data"))
SMALL = ["--embed-dim", "16", "--hidden-size", "16", "--num-layers", "1", "--batch-size", "16", "--epochs", "1",
         "--max-examples", "160", "--max-length", "30", "--no-progress", "--no-tensorboard", "--no-plots", "--threads", "1"]


@pytest.mark.skipif(not os.path.isdir(os.path.join(DATA, "dailydialog")), reason="shared DailyDialog data absent")
def test_slcvae_on_dailydialog(tmp_path):
    run = str(tmp_path / "dd")
    assert main(["train", "--model", "slcvae", "--data", "dailydialog", "--data-dir", DATA, "--run-dir", run,
                 "--latent-size", "4", *SMALL]) == 0
    out = str(tmp_path / "eval.json")
    assert main(["evaluate", run, "--max-examples", "40", "--samples", "3", "--output", out, "--threads", "1"]) == 0
    report = json.load(open(out))
    assert report["corpus"] == "dailydialog" and report["split"] == "test"
    assert report["generation"]["inputs"] == 40  # DailyDialog: one reference per context
    for key in ("bleu_precision", "bleu_recall", "distinct_1", "distinct_2"):
        assert math.isfinite(report["generation"][key])
    assert math.isfinite(report["likelihood"]["elbo"]) and report["likelihood"]["kl"] >= 0


@pytest.mark.skipif(not os.path.isdir(os.path.join(DATA, "ptb")), reason="shared PTB data absent")
def test_sentence_vae_on_ptb(tmp_path, capsys):
    run = str(tmp_path / "ptb")
    assert main(["train", "--model", "sentence-vae", "--data", "ptb", "--data-dir", DATA, "--run-dir", run,
                 "--latent-size", "4", *SMALL]) == 0
    capsys.readouterr()
    assert main(["evaluate", run, "--max-examples", "50", "--iw-samples", "3", "--output", str(tmp_path / "e.json")]) == 0
    report = json.load(open(tmp_path / "e.json"))["likelihood"]
    assert report["sentences"] == 50 and report["nll_iw"] <= report["elbo"] + 1e-3
    capsys.readouterr()
    assert main(["sample", run, "-n", "3"]) == 0
    assert len(capsys.readouterr().out.strip().splitlines()) == 3
