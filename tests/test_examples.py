"""The paper-reproduction scripts under examples/, end to end on a tiny DailyDialog-format corpus."""

import importlib.util
import json
import os
import random

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORDS = "hi hello yes no thanks sure what why where when you i we the a to go see it is good bad fine".split()


def load_script(name):
    spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, "examples", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def fake_dailydialog(root, seed=0):
    rng = random.Random(seed)
    folder = root / "dailydialog"
    folder.mkdir(parents=True)
    for split, n in (("train", 30), ("validation", 6), ("test", 6)):
        lines = []
        for _ in range(n):
            turns = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 6))) + " ." for _ in range(rng.randint(2, 4))]
            lines.append(" __eou__ ".join(turns) + " __eou__")
        (folder / f"dialogues_{split}.txt").write_text("\n".join(lines) + "\n")
    return root


def test_reproduce_dailydialog_trains_evaluates_and_keeps_earlier_rows(tmp_path):
    script = load_script("reproduce_dailydialog")
    data = fake_dailydialog(tmp_path / "data")
    results = tmp_path / "dd.json"
    common = ["--data-dir", str(data), "--run-root", str(tmp_path / "runs"), "--results", str(results),
              "--samples", "3", "--max-inputs", "4", "--no-progress"]
    assert script.main(common + ["--only", "CVAE", "SLCVAE", "--epochs", "1", "--embed-dim", "8",
                                 "--hidden-size", "8", "--latent-size", "2", "--label-loss-weight", "0.5",
                                 "--num-layers", "1"]) == 0
    out = json.loads(results.read_text())
    rows = out["protocols"]["greedy"]["rows"]
    assert sorted(rows) == ["CVAE", "SLCVAE"]
    for name, row in rows.items():
        g = row["generation"]
        assert g["inputs"] == 4 and g["num_samples"] == 3 and g["strategy"] == "greedy"
        assert 0 <= g["bleu_precision"] <= 1.1 and 0 <= g["distinct_2"] <= 1
        assert row["training"]["epochs"] == 1 and row["training"]["best_epoch"] == 1
        assert row["run_config"]["model"] == name.lower()
        assert "--hidden-size 8" in row["train_command"] and "--latent-size 2" in row["train_command"]
        assert "--num-layers 1" in row["train_command"]
        assert len(row["examples_shown"]) == 4
        # the test contexts that occur in the training dialogues are scored apart
        assert g["seen"]["inputs"] + g["unseen"]["inputs"] == 4
    # --label-loss-weight reaches the SLCVAE rows only
    assert "--label-loss-weight 0.5" in rows["SLCVAE"]["train_command"]
    assert "--label-loss-weight" not in rows["CVAE"]["train_command"]
    from fastvae.cli import runs

    slcvae = runs.load_best_or_latest(str(tmp_path / "runs" / "slcvae"))[0]
    assert slcvae.config["label_loss_weight"] == 0.5 and slcvae.config["num_layers"] == 1
    baseline = out["baseline"]["Random train responses"]
    assert baseline["generation"]["strategy"] == "random-response" and baseline["generation"]["inputs"] == 4
    assert baseline["generation"]["seen"]["inputs"] + baseline["generation"]["unseen"]["inputs"] == 4
    echo = out["baseline"]["Echo of the last context utterance"]["generation"]
    assert echo["strategy"] == "echo-context" and echo["inputs"] == 4 and echo["num_samples"] == 1
    assert echo["bleu_precision"] == echo["bleu_recall"]
    assert out["paper"]["SLCVAE"] == [0.214, 0.354, 0.014, 0.078]
    # the same command with a larger budget continues the run (resume), it does not start over:
    # the first epoch's log row (with its wall-clock seconds) stays as it was
    log = tmp_path / "runs" / "cvae" / "metrics.csv"
    first_epoch = [line for line in log.read_text().splitlines() if ",valid," in line]
    assert len(first_epoch) == 1
    assert script.main(common + ["--only", "CVAE", "--epochs", "2", "--embed-dim", "8", "--hidden-size", "8",
                                 "--latent-size", "2"]) == 0
    resumed = json.loads(results.read_text())["protocols"]["greedy"]["rows"]
    assert resumed["CVAE"]["training"]["epochs"] == 2 and resumed["SLCVAE"] == rows["SLCVAE"]
    valid_rows = [line for line in log.read_text().splitlines() if ",valid," in line]
    assert len(valid_rows) == 2 and valid_rows[0] == first_epoch[0]
    out = json.loads(results.read_text())
    assert "--resume --epochs 2" in resumed["CVAE"]["train_command"]
    # a second protocol on the same runs (no training): added next to the first, which stays as it was
    assert script.main(common + ["--only", "CVAE", "--skip-training", "--strategy", "sample"]) == 0
    again = json.loads(results.read_text())
    assert again["protocols"]["greedy"] == out["protocols"]["greedy"]
    sampled = again["protocols"]["sample"]["rows"]["CVAE"]
    assert sampled["generation"]["strategy"] == "sample" and "train_command" not in sampled
    assert again["baseline"] == out["baseline"]
    # sampling at another temperature is a protocol of its own; the others stay as they were
    assert script.main(common + ["--only", "CVAE", "--skip-training", "--strategy", "sample",
                                 "--temperature", "0.5"]) == 0
    cooler = json.loads(results.read_text())
    assert cooler["protocols"]["sample"] == again["protocols"]["sample"]
    entry = cooler["protocols"]["sample-T0.5"]
    assert "temperature 0.5" in entry["decoding"]
    assert entry["rows"]["CVAE"]["generation"]["decoding"]["temperature"] == 0.5
    assert sampled["generation"]["decoding"]["temperature"] == 1.0
    # BLEU with NLTK 3.2.2-3.4.5's method 7 goes to a results file of its own, baselines included
    assert cooler["bleu_smoothing"] == "method7"
    with pytest.raises(SystemExit) as info:
        script.main(common + ["--only", "CVAE", "--skip-training", "--bleu-smoothing", "method7-legacy"])
    assert info.value.code == 2 and json.loads(results.read_text()) == cooler
    legacy_file = tmp_path / "dd-legacy.json"
    legacy_argv = [a if a != str(results) else str(legacy_file) for a in common]
    assert script.main(legacy_argv + ["--only", "CVAE", "--skip-training", "--bleu-smoothing", "method7-legacy"]) == 0
    legacy = json.loads(legacy_file.read_text())
    assert legacy["bleu_smoothing"] == "method7-legacy"
    row = legacy["protocols"]["greedy"]["rows"]["CVAE"]["generation"]
    assert row["bleu_smoothing"] == "method7-legacy"
    for name in ("Random train responses", "Echo of the last context utterance"):
        assert legacy["baseline"][name]["generation"]["bleu_smoothing"] == "method7-legacy"
    echo, legacy_echo = (f["baseline"]["Echo of the last context utterance"]["generation"] for f in (cooler, legacy))
    assert legacy_echo["bleu_precision"] > echo["bleu_precision"] > 0  # the same replies, scored higher


@pytest.mark.parametrize("argv, message", [
    (["--temperature", "0.5"], "--temperature applies to --strategy sample only"),
    (["--strategy", "sample", "--temperature", "0"], "--temperature must be a positive number"),
    (["--strategy", "sample", "--temperature", "nan"], "--temperature must be a positive number"),
])
def test_reproduce_dailydialog_rejects_bad_temperature(tmp_path, capsys, argv, message):
    script = load_script("reproduce_dailydialog")
    with pytest.raises(SystemExit) as info:
        script.main(argv + ["--results", str(tmp_path / "x.json")])
    assert info.value.code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "x.json").exists()


def test_reproduce_dailydialog_rejects_unknown_rows(tmp_path, capsys):
    script = load_script("reproduce_dailydialog")
    with pytest.raises(SystemExit) as info:
        script.main(["--only", "CVAE", "VHRED", "--results", str(tmp_path / "x.json")])
    assert info.value.code == 2
    assert "--only: unknown row(s) VHRED" in capsys.readouterr().err
    assert not (tmp_path / "x.json").exists()


@pytest.mark.parametrize("argv, flag", [
    (["--samples", "0"], "--samples"), (["--max-inputs", "0"], "--max-inputs"), (["--threads", "0"], "--threads"),
    (["--minutes", "nan"], "--minutes"), (["--hidden-size", "0"], "--hidden-size"), (["--patience", "-1"], "--patience"),
])
def test_reproduce_dailydialog_checks_its_numbers_before_training(tmp_path, capsys, argv, flag):
    script = load_script("reproduce_dailydialog")
    with pytest.raises(SystemExit) as info:
        script.main(argv + ["--run-root", str(tmp_path / "runs"), "--results", str(tmp_path / "x.json")])
    assert info.value.code == 2 and flag in capsys.readouterr().err
    assert not (tmp_path / "runs").exists() and not (tmp_path / "x.json").exists()


@pytest.mark.parametrize("argv, flag", [(["--epochs", "0"], "--epochs"), (["--threads", "0"], "--threads"),
                                        (["--iw-samples", "-1"], "--iw-samples")])
def test_reproduce_ptb_checks_its_numbers_before_training(tmp_path, capsys, argv, flag):
    script = load_script("reproduce_ptb")
    with pytest.raises(SystemExit) as info:
        script.main(argv + ["--run-dir", str(tmp_path / "run"), "--results", str(tmp_path / "x.json")])
    assert info.value.code == 2 and flag in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
