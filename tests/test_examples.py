"""The paper-reproduction scripts under examples/, end to end on a tiny DailyDialog-format corpus."""

import importlib.util
import json
import os
import random
import shutil

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORDS = "hi hello yes no thanks sure what why where when you i we the a to go see it is good bad fine".split()


def load_script(name):
    spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, "examples", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _fake_corpus(root, name, files, make_line, seed=0):
    """``root/name/<file>`` with ``n`` lines ``make_line(rng)`` for each ``(file, n)`` of ``files``; returns root."""
    rng = random.Random(seed)
    folder = root / name
    folder.mkdir(parents=True)
    for file, n in files:
        (folder / file).write_text("\n".join(make_line(rng) for _ in range(n)) + "\n")
    return root


def _words(rng, low, high):
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(low, high)))


def fake_dailydialog(root, seed=0):
    files = (("dialogues_train.txt", 30), ("dialogues_validation.txt", 6), ("dialogues_test.txt", 6))
    dialogue = lambda rng: " __eou__ ".join(_words(rng, 2, 6) + " ." for _ in range(rng.randint(2, 4))) + " __eou__"  # noqa: E731
    return _fake_corpus(root, "dailydialog", files, dialogue, seed)


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
    # by default BLEU is scored as the SLCVAE authors' code scores it, with every row's context gain
    assert (cooler["bleu_smoothing"], cooler["bleu_formula"]) == ("method7-legacy", "cumulative-3")
    for g in [r["generation"] for r in cooler["protocols"]["greedy"]["rows"].values()] + \
             [b["generation"] for b in cooler["baseline"].values()]:
        assert (g["bleu_formula"], g["bleu_smoothing"]) == ("cumulative-3", "method7-legacy")
        assert g["context_gain_precision"] == pytest.approx(g["bleu_precision"] - g["shuffled_bleu_precision"])
        assert g["context_gain_recall"] == pytest.approx(g["bleu_recall"] - g["shuffled_bleu_recall"])
        spread = g["context_gain_spread"]
        assert spread["resamples"] == 1000 and spread["precision_ci95"][0] <= spread["precision_ci95"][1]
    # another BLEU goes to a results file of its own, baselines included
    for other in (["--bleu-smoothing", "method7"], ["--bleu", "mean-1-3"]):
        with pytest.raises(SystemExit) as info:
            script.main(common + ["--only", "CVAE", "--skip-training", *other])
        assert info.value.code == 2 and json.loads(results.read_text()) == cooler
    # a parallel call that wrote another BLEU meanwhile: refused under the lock, nothing written
    args = script.main.__globals__["argparse"].Namespace(results=str(results), threads=1, bleu_smoothing="method7",
                                                         bleu="cumulative-3", preset=None)
    with pytest.raises(SystemExit, match="now holds BLEU cumulative-3 with method7-legacy"):
        script._update(args, lambda r: r.setdefault("protocols", {}).clear())
    assert json.loads(results.read_text()) == cooler
    # a results file that is not one: a usage error, not a traceback
    not_results = tmp_path / "list.json"
    not_results.write_text("[1, 2]")
    with pytest.raises(SystemExit) as info:
        script.main(common[:4] + ["--results", str(not_results), "--only", "--skip-training"])
    assert info.value.code == 2
    today_file = tmp_path / "dd-today.json"
    today_argv = [a if a != str(results) else str(today_file) for a in common]
    assert script.main(today_argv + ["--only", "CVAE", "--skip-training", "--bleu-smoothing", "method7",
                                     "--bleu", "mean-1-3"]) == 0
    today = json.loads(today_file.read_text())
    assert (today["bleu_smoothing"], today["bleu_formula"]) == ("method7", "mean-1-3")
    row = today["protocols"]["greedy"]["rows"]["CVAE"]["generation"]
    assert (row["bleu_smoothing"], row["bleu_formula"]) == ("method7", "mean-1-3")
    for name in ("Random train responses", "Echo of the last context utterance"):
        assert today["baseline"][name]["generation"]["bleu_smoothing"] == "method7"
    echo, today_echo = (f["baseline"]["Echo of the last context utterance"]["generation"] for f in (cooler, today))
    assert today_echo["bleu_precision"] > 0 and today_echo["bleu_precision"] != echo["bleu_precision"]


def test_reproduce_dailydialog_with_the_slcvae_code_preset(tmp_path, monkeypatch, capsys):
    """--preset slcvae-code: its rows and settings, its own run root and results file, the model flags as overrides."""
    script = load_script("reproduce_dailydialog")
    data = fake_dailydialog(tmp_path / "data")
    monkeypatch.chdir(tmp_path)
    argv = ["--preset", "slcvae-code", "--data-dir", str(data), "--only", "SLCVAE", "SLCVAE-L2", "SLCVAE-L2+prior",
            "--epochs", "1",
            "--embed-dim", "8", "--hidden-size", "8", "--latent-size", "4", "--samples", "3", "--max-inputs", "5",
            "--no-progress"]
    assert script.main(argv) == 0
    results = json.loads((tmp_path / "benchmarks" / "results" / "dailydialog-slcvae-code.json").read_text())
    assert (results["preset"], results["bleu_formula"], results["bleu_smoothing"]) == (
        "slcvae-code", "cumulative-3", "method7-legacy")
    rows = results["protocols"]["greedy"]["rows"]
    assert sorted(rows) == ["SLCVAE", "SLCVAE-L2", "SLCVAE-L2+prior"]
    for name, row in rows.items():
        command = row["train_command"]
        assert command.startswith("fastvae train --preset slcvae-code --model slcvae") and "--patience 0" in command
        assert "--epochs 1" in command and "--hidden-size 8" in command and "--batch-size" not in command
        assert row["run_config"]["preset"]["name"] == "slcvae-code"
        assert row["run_config"]["corpus"]["context_window"] == 1
        assert row["run_config"]["train"]["batch_size"] == 30
        assert row["generation"]["decoding"] == {"strategy": "greedy", "max_length": 40}
        run_dir = name.lower().replace("+", "-")
        assert (tmp_path / "runs" / "dailydialog-slcvae-code" / run_dir / "run.json").is_file()
    assert "--label-loss l2 --label-loss-weight 1 --label-weight-schedule kl" in rows["SLCVAE-L2"]["train_command"]
    assert rows["SLCVAE-L2"]["run_config"]["preset"]["overrides"]["label_loss"] == "l2"
    assert "label_loss" not in rows["SLCVAE"]["run_config"]["preset"]["overrides"]
    prior = rows["SLCVAE-L2+prior"]["run_config"]["preset"]["overrides"]
    assert (prior["label_loss"], prior["label_prior_weight"]) == ("l2", 1.0)
    baseline = results["baseline"]["Random train responses"]["generation"]
    assert baseline["context_gain_precision"] is not None and baseline["bleu_formula"] == "cumulative-3"
    out = capsys.readouterr().out
    assert "| fastvae SLCVAE-L2 |" in out and "| Random train responses |" in out and "context gain R (± sd)" in out
    assert "models trained with --preset slcvae-code" in out
    # rows of the preset and rows without it do not share a results file
    with pytest.raises(SystemExit) as info:
        script.main(["--data-dir", str(data), "--only", "--results",
                     str(tmp_path / "benchmarks" / "results" / "dailydialog-slcvae-code.json")])
    assert info.value.code == 2 and "rows of --preset slcvae-code" in capsys.readouterr().err


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


TINY = ["--epochs", "1", "--embed-dim", "8", "--hidden-size", "8", "--latent-size", "2", "--num-layers", "1"]


@pytest.fixture(scope="module")
def dd_runs(tmp_path_factory):
    """``(data dir, run root)``: tiny Seq2Seq, CVAE and SLCVAE runs (SLCVAE with --label-loss-weight 0.5), trained once."""
    root = tmp_path_factory.mktemp("dd")
    data = fake_dailydialog(root / "data")
    script = load_script("reproduce_dailydialog")
    assert script.main(["--data-dir", str(data), "--run-root", str(root / "runs"), "--results", str(root / "dd.json"),
                        "--samples", "3", "--max-inputs", "4", "--no-progress", "--label-loss-weight", "0.5",
                        "--only", "Seq2Seq+beam", "CVAE", "SLCVAE", *TINY]) == 0
    return data, root / "runs"


def dd_argv(data, run_root, results, *rest):
    return ["--data-dir", str(data), "--run-root", str(run_root), "--results", str(results), "--no-progress", *rest]


def test_reproduce_dailydialog_explicit_greedy_is_the_default_protocol(dd_runs, tmp_path):
    script = load_script("reproduce_dailydialog")
    data, run_root = dd_runs
    rows = ["--only", "Seq2Seq+beam", "CVAE", "--skip-training", "--samples", "3", "--max-inputs", "4"]
    explicit, default = tmp_path / "explicit.json", tmp_path / "default.json"
    assert script.main(dd_argv(data, run_root, explicit, *rows, "--strategy", "greedy")) == 0
    assert script.main(dd_argv(data, run_root, default, *rows)) == 0
    entry = json.loads(explicit.read_text())["protocols"]["greedy"]
    seq2seq = entry["rows"]["Seq2Seq+beam"]["generation"]
    # Seq2Seq: beam search with beam --samples, as the protocol's text says; the VAEs: greedy per z
    assert seq2seq["strategy"] == "beam" and seq2seq["decoding"]["beam_size"] == 3 and seq2seq["num_samples"] == 3
    assert entry["rows"]["CVAE"]["generation"]["strategy"] == "greedy"
    assert "10" not in entry["decoding"] and "beam = --samples" in entry["decoding"]
    same = json.loads(default.read_text())["protocols"]["greedy"]
    for name in ("Seq2Seq+beam", "CVAE"):
        assert entry["rows"][name]["generation"] == same["rows"][name]["generation"]


def test_reproduce_dailydialog_recomputes_baselines_made_with_other_settings(dd_runs, tmp_path):
    script = load_script("reproduce_dailydialog")
    data, run_root = dd_runs
    results = tmp_path / "dd.json"

    def baselines(*settings):  # --only with no row: the two baselines only
        assert script.main(dd_argv(data, run_root, results, "--only", *settings)) == 0
        out = json.loads(results.read_text())["baseline"]
        return out[script.BASELINE], out[script.ECHO]

    random3, echo4 = baselines("--samples", "3", "--max-inputs", "4")
    assert baselines("--samples", "3", "--max-inputs", "4") == (random3, echo4)  # the same settings: kept
    random2, echo3 = baselines("--samples", "2", "--max-inputs", "3")
    assert random2["generation"]["num_samples"] == 2 and random2["generation"]["inputs"] == 3
    assert random3["settings"] == {"num_samples": 3, "max_inputs": 4} and echo4["settings"] == {"max_inputs": 4}
    assert echo3["generation"]["inputs"] == 3 and echo3["settings"] == {"max_inputs": 3}
    random3, echo = baselines("--samples", "3", "--max-inputs", "3")
    assert random3["generation"]["num_samples"] == 3 and echo == echo3  # --samples does not change the echo

    def strip_settings():  # a file written before baselines recorded their settings
        out = json.loads(results.read_text())
        for value in out["baseline"].values():
            del value["settings"]
        results.write_text(json.dumps(out))
        return out["baseline"][script.BASELINE], out["baseline"][script.ECHO]

    old = strip_settings()
    assert baselines("--samples", "3", "--max-inputs", "3") == old  # its report's num_samples and inputs match
    everything = baselines("--samples", "3")
    assert everything[0]["generation"]["inputs"] > 3 and everything[0]["settings"]["max_inputs"] is None
    old = strip_settings()
    assert baselines("--samples", "3") == old  # it scored every test context: made with no --max-inputs
    assert baselines("--samples", "3", "--max-inputs", "2")[1]["generation"]["inputs"] == 2


@pytest.mark.parametrize("argv, texts", [
    (["--only", "CVAE", "--skip-training", "--hidden-size", "16"], ["--hidden-size 16", "hidden size 8", "cvae"]),
    (["--only", "CVAE", "--epochs", "2", "--num-layers", "2"], ["--num-layers 2", "num layers 1"]),  # a resume
    (["--only", "SLCVAE", "--skip-training", "--label-loss-weight", "0.7"],
     ["--label-loss-weight 0.7", "label loss weight 0.5"]),
    (["--only", "CVAE", "SLCVAE", "--skip-training", "--latent-size", "3"], ["--latent-size 3", "latent size 2"]),
    (["--only", "Seq2Seq+beam", "--skip-training", "--max-vocab", "10"], ["--max-vocab 10", "vocabulary of"]),
])
def test_reproduce_dailydialog_refuses_flags_an_existing_run_would_ignore(dd_runs, tmp_path, capsys, argv, texts):
    script = load_script("reproduce_dailydialog")
    data, run_root = dd_runs
    runs_copy = tmp_path / "runs"
    shutil.copytree(run_root, runs_copy)
    log = (runs_copy / "cvae" / "metrics.csv").read_text()
    with pytest.raises(SystemExit) as info:
        script.main(dd_argv(data, runs_copy, tmp_path / "x.json", *argv))
    err = capsys.readouterr().err
    assert info.value.code == 2 and all(text in err for text in texts), err
    assert not (tmp_path / "x.json").exists() and (runs_copy / "cvae" / "metrics.csv").read_text() == log


def test_reproduce_dailydialog_takes_flags_that_match_or_do_not_apply(dd_runs, tmp_path):
    script = load_script("reproduce_dailydialog")
    data, run_root = dd_runs
    from fastvae.cli import runs

    vocab_size = runs.load_run(str(run_root / "cvae"))[0].config["vocab_size"]
    # Seq2Seq has no latent and no label loss; a --max-vocab above the corpus's words gives the run's vocabulary
    assert script.main(dd_argv(data, run_root, tmp_path / "x.json", "--only", "Seq2Seq+beam", "CVAE", "--skip-training",
                               "--samples", "2", "--max-inputs", "2", "--hidden-size", "8", "--latent-size", "2",
                               "--label-loss-weight", "3", "--max-vocab", "10000")) == 0
    assert script.main(dd_argv(data, run_root, tmp_path / "x.json", "--only", "CVAE", "--skip-training", "--samples",
                               "2", "--max-inputs", "2", "--max-vocab", str(vocab_size))) == 0


def test_reproduce_dailydialog_skip_training_needs_every_run(dd_runs, tmp_path, capsys):
    script = load_script("reproduce_dailydialog")
    data, run_root = dd_runs
    with pytest.raises(SystemExit) as info:
        script.main(dd_argv(data, tmp_path / "nowhere", tmp_path / "x.json", "--only", "SLCVAE", "--skip-training"))
    assert info.value.code == 2 and str(tmp_path / "nowhere" / "slcvae") in capsys.readouterr().err
    assert not (tmp_path / "x.json").exists()
    # a results file already there keeps its commands: a failed call is not recorded
    runs_copy = tmp_path / "runs"
    shutil.copytree(run_root, runs_copy)
    shutil.rmtree(runs_copy / "slcvae")
    results = tmp_path / "dd.json"
    assert script.main(dd_argv(data, runs_copy, results, "--only", "CVAE", "--skip-training", "--samples", "2",
                               "--max-inputs", "2")) == 0
    before = results.read_text()
    with pytest.raises(SystemExit) as info:
        script.main(dd_argv(data, runs_copy, results, "--only", "CVAE", "SLCVAE", "--skip-training", "--samples", "2",
                            "--max-inputs", "2"))
    assert info.value.code == 2 and str(runs_copy / "slcvae") in capsys.readouterr().err
    assert results.read_text() == before


@pytest.mark.parametrize("weight", ["-1", "nan", "inf", "1e39"])
def test_reproduce_dailydialog_checks_label_loss_weight_before_training(tmp_path, capsys, weight):
    script = load_script("reproduce_dailydialog")
    data = fake_dailydialog(tmp_path / "data")
    with pytest.raises(SystemExit) as info:  # the CVAE row, before SLCVAE, would train first
        script.main(dd_argv(data, tmp_path / "runs", tmp_path / "x.json", "--only", "CVAE", "SLCVAE",
                            "--label-loss-weight", weight, *TINY))
    assert info.value.code == 2 and "--label-loss-weight" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists() and not (tmp_path / "x.json").exists()


def fake_ptb(root, seed=0):
    files = (("ptb.train.txt", 40), ("ptb.valid.txt", 8), ("ptb.test.txt", 8))
    return _fake_corpus(root, "ptb", files, lambda rng: _words(rng, 3, 8), seed)


def test_reproduce_ptb_resumes_to_epochs_and_records_what_ran(tmp_path):
    script = load_script("reproduce_ptb")
    data = fake_ptb(tmp_path / "data")
    results = tmp_path / "ptb.json"
    common = ["--data-dir", str(data), "--run-dir", str(tmp_path / "run"), "--results", str(results),
              "--iw-samples", "2", "--no-progress"]
    assert script.main(common + ["--epochs", "1"]) == 0
    first = json.loads(results.read_text())
    assert first["epochs_trained"] == 1 and "--epochs 1" in first["train_command"]
    assert first["run_config"]["model"] == "sentence-vae" and first["run_config"]["train"]["epochs"] == 1
    assert script.main(common + ["--resume", "--epochs", "2"]) == 0
    resumed = json.loads(results.read_text())
    assert resumed["epochs_trained"] == 2 and "--resume --epochs 2" in resumed["train_command"]
    assert "--embed-dim" not in resumed["train_command"] and resumed["run_config"]["train"]["epochs"] == 2
    assert script.main(common + ["--skip-training"]) == 0
    evaluated = json.loads(results.read_text())
    assert evaluated["train_command"] is None and evaluated["run_config"] == resumed["run_config"]
    assert evaluated["epochs_trained"] == 2


def test_reproduce_ptb_skip_training_needs_the_run(tmp_path, capsys):
    script = load_script("reproduce_ptb")
    with pytest.raises(SystemExit) as info:
        script.main(["--skip-training", "--run-dir", str(tmp_path / "nope"), "--results", str(tmp_path / "x.json")])
    assert info.value.code == 2 and str(tmp_path / "nope") in capsys.readouterr().err
    assert not (tmp_path / "x.json").exists()


def test_compare_nltk_bleu_against_the_installed_release(tmp_path, capsys):
    """The checker finds no difference between fastvae's method7 and the installed NLTK's, and finds the legacy one's."""
    import nltk

    script = load_script("compare_nltk_bleu")
    release = os.path.dirname(os.path.dirname(os.path.abspath(nltk.__file__)))  # holds nltk/translate/bleu_score.py
    samples = tmp_path / "samples.jsonl"
    samples.write_text(json.dumps({"source": "x", "references": ["i am fine thanks", "good"],
                                   "samples": ["i am good", "fine", "thanks a lot"]}) + "\n\n")
    assert script.main([release, str(samples), "--smoothing", "method7"]) == 0
    assert "6 sample/reference pairs; largest |BLEU difference| 0 " in capsys.readouterr().out
    assert script.main([release, str(samples)]) == 1  # method7-legacy: the releases before 3.5 differ from today's
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"samples": ["a"]}\n')
    with pytest.raises(SystemExit, match="bad.jsonl:1: not a --write-samples line"):
        script.main([release, str(bad)])
    with pytest.raises(SystemExit, match="no nltk/translate/bleu_score.py"):
        script.main([str(tmp_path), str(samples)])
    bad.write_text('{"samples": [1], "references": ["a"]}\n')
    with pytest.raises(SystemExit, match="bad.jsonl:1: not a --write-samples line"):
        script.main([release, str(bad)])
    bad.write_bytes(b"\xff\xfe{}\n")
    with pytest.raises(SystemExit, match="is not UTF-8 text"):
        script.main([release, str(bad)])
    capsys.readouterr()
    for argv, message in ((["--smoothing", "method9"], "--smoothing: invalid choice"),
                          (["--tolerance", "nan"], "--tolerance must be a number >= 0")):
        with pytest.raises(SystemExit) as info:
            script.main([release, str(samples)] + argv)
        assert info.value.code == 2 and message in capsys.readouterr().err
