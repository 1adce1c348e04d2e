"""The ``fastvae`` command line: help texts, argument errors (exit 2, one line naming the culprit) and
tiny end-to-end runs of train / evaluate / generate / sample / interpolate / plot / demo."""

import contextlib
import csv
import io
import json
import math
import os
import random
import re
import shutil
import subprocess
import sys

import pytest
import torch

from fastvae.cli import main
from fastvae.train import load_checkpoint

TINY = [
    "--embed-dim", "8", "--hidden-size", "8", "--num-layers", "1", "--batch-size", "8",
    "--epochs", "2", "--no-progress", "--no-tensorboard", "--no-plots", "--threads", "1",
]
SUBJECTS = ["the cat", "a dog", "my friend", "the man", "she", "he"]
VERBS = ["sees", "likes", "eats", "finds", "wants"]
OBJECTS = ["the ball", "a fish", "the bread", "an apple", "the book"]


@pytest.fixture(autouse=True)
def _restore_threads():
    """``--threads 1`` sets torch's process-wide thread count: give the other test files theirs back."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def write(path, lines):
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return str(path)


def sentence_files(directory):
    rng = random.Random(0)
    lines = [f"{rng.choice(SUBJECTS)} {rng.choice(VERBS)} {rng.choice(OBJECTS)} ." for _ in range(60)]
    return write(directory / "train.txt", lines[:48]), write(directory / "valid.txt", lines[48:])


def pair_files(directory):
    """``source<TAB>target``: 12 sources with 4 targets each (one-to-many groups)."""
    rng = random.Random(1)
    pairs = [f"{s} {v}\t{s} {v} {rng.choice(OBJECTS)} ." for s in SUBJECTS[:4] for v in VERBS[:3] for _ in range(4)]
    return write(directory / "train.tsv", pairs[:40]), write(directory / "valid.tsv", pairs[40:])


def run_cli(argv):
    """``(exit code, stdout)`` of ``main(argv)`` (for module fixtures, which cannot use capsys)."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(argv)
    return code, out.getvalue()


def train_argv(model, run_dir, data, train_file, valid_file, *extra):
    latent = [] if model == "seq2seq" else ["--latent-size", "4"]
    return ["train", "--model", model, "--run-dir", str(run_dir), "--data", data, "--train-file", train_file,
            "--valid-file", valid_file, *TINY, *latent, *extra]


def metric_rows(run_dir):
    with open(os.path.join(run_dir, "metrics.csv"), newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    return pair_files(tmp_path_factory.mktemp("pairs"))


@pytest.fixture(scope="module")
def slcvae_run(tmp_path_factory, pairs):
    run_dir = tmp_path_factory.mktemp("runs") / "slcvae"
    code, out = run_cli(train_argv("slcvae", run_dir, "tsv", *pairs))
    assert code == 0, out
    return str(run_dir)


@pytest.fixture(scope="module")
def svae_run(tmp_path_factory):
    directory = tmp_path_factory.mktemp("lines")
    code, out = run_cli(train_argv("sentence-vae", directory / "svae", "lines", *sentence_files(directory)))
    assert code == 0, out
    return str(directory / "svae")


# ---------------------------------------------------------------------------------------------- help
HELP = {
    (): ["train", "evaluate", "plot", "generate", "sample", "interpolate", "demo"],
    ("train",): ["--model", "--run-dir", "--resume", "--data", "--train-file", "--valid-file", "--epochs",
                 "--batch-size", "--kl-schedule", "--kl-warmup", "--bow", "--threads", "--no-progress"],
    ("evaluate",): ["run_dir", "--split", "--samples", "--iw-samples", "--strategy", "--output", "--write-samples",
                    "--by-overlap"],
    ("plot",): ["run_dir", "--max-points"],
    ("generate",): ["MODEL", "model", "--input", "--samples", "--json", "--strategy", "--top-p", "--beam-size", "--seed"],
    ("sample",): ["MODEL", "--num", "--strategy", "--temperature"],
    ("interpolate",): ["MODEL", "sentence_a", "sentence_b", "--steps", "--max-length"],
    ("demo",): ["--run-dir", "--steps", "--verses", "--show", "--samples", "--eval-inputs", "--temperature",
                "--top-p", "--greedy", "--sequential"],
}


@pytest.mark.parametrize("command", list(HELP), ids=lambda c: c[0] if c else "fastvae")
def test_help(command, capsys):
    with pytest.raises(SystemExit) as info:
        main([*command, "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: fastvae")
    missing = [word for word in HELP[command] if word not in out]
    assert not missing, out


def test_module_entry_point():
    proc = subprocess.run([sys.executable, "-m", "fastvae", "--help"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "usage: fastvae" in proc.stdout and "generate" in proc.stdout


# ------------------------------------------------------------------------------------ argument errors
def assert_error(capsys, argv, *words, command=None):
    """``main(argv)`` exits 2 with one line on stderr naming ``words``."""
    assert main(argv) == 2
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert "\n" not in err, err
    assert err.startswith(f"fastvae {command or argv[0]}: error: "), err
    for word in words:
        assert word in err, err
    return err


@pytest.fixture
def files(tmp_path):
    lines_train, _ = sentence_files(tmp_path)
    tsv_train, _ = pair_files(tmp_path)
    return {"lines": lines_train, "tsv": tsv_train, "run": str(tmp_path / "run")}


@pytest.mark.parametrize(
    "extra, words",
    [
        (["--data", "tsv", "--train-file", "{tsv}"], ["--model", "--resume"]),
        (["--model", "cvae", "--data", "lines", "--train-file", "{lines}"], ["--model cvae", "'lines'"]),
        (["--model", "slcvae", "--data", "tsv", "--train-file", "{tsv}", "--epochs", "0"], ["--epochs", "0"]),
        (["--model", "cvae", "--data", "tsv", "--train-file", "{tsv}", "--batch-size", "-1"], ["--batch-size"]),
        (["--model", "cvae", "--data", "tsv", "--train-file", "{tsv}", "--hidden-size", "0"], ["--hidden-size"]),
        (["--model", "cvae", "--data", "tsv", "--train-file", "{tsv}", "--kl-schedule", "linear"], ["--kl-warmup"]),
        (["--model", "cvae", "--data", "tsv", "--train-file", "{tsv}", "--kl-schedule", "logistic", "--kl-warmup", "9"],
         ["logistic", "--kl-warmup"]),
        (["--model", "cvae", "--data", "tsv", "--train-file", "{tsv}", "--kl-warmup", "9"], ["--kl-warmup"]),
        (["--model", "sentence-vae", "--data", "lines", "--train-file", "{lines}", "--bow"], ["--bow", "sentence-vae"]),
        (["--model", "seq2seq", "--data", "tsv", "--train-file", "{tsv}", "--latent-size", "4"], ["--latent-size"]),
        (["--model", "cvae", "--data", "tsv"], ["train_file"]),
        (["--model", "cvae", "--data", "tsv", "--train-file", "{tsv}", "--max-length", "1"], ["--max-length"]),
        (["--model", "cvae", "--data", "tsv", "--train-file", "{tsv}", "--threads", "0"], ["--threads"]),
        (["--model", "cvae", "--data", "tsv", "--train-file", "{tsv}", "--lr", "-1"], ["--lr"]),
        (["--model", "cvae", "--data", "tsv", "--train-file", "{tsv}", "--max-examples", "0"], ["--max-examples"]),
    ],
    ids=["no-model", "cvae-on-lines", "epochs-0", "batch-size", "hidden-size", "linear-no-warmup",
         "logistic-warmup", "default-logistic-warmup", "bow-svae", "seq2seq-latent", "no-train-file",
         "max-length", "threads", "lr", "max-examples"],
)
def test_train_argument_errors(capsys, files, extra, words):
    argv = ["train", "--run-dir", files["run"], *[a.format(**files) for a in extra]]
    assert_error(capsys, argv, *words)
    assert not os.path.exists(files["run"]), "a refused run must not leave a run directory"


def test_missing_train_file(capsys, tmp_path):
    missing = str(tmp_path / "nope.tsv")
    assert_error(capsys, ["train", "--model", "cvae", "--run-dir", str(tmp_path / "r"), "--data", "tsv",
                          "--train-file", missing], missing)


def test_missing_valid_file(capsys, tmp_path):
    train, _ = pair_files(tmp_path)
    missing = str(tmp_path / "nope.tsv")
    assert_error(capsys, ["train", "--model", "cvae", "--run-dir", str(tmp_path / "r"), "--data", "tsv",
                          "--train-file", train, "--valid-file", missing], missing)


def test_malformed_tsv(capsys, tmp_path):
    bad = write(tmp_path / "bad.tsv", ["a b\tc d", "e f\tg h", "no tab here", "i j\tk l"])
    assert_error(capsys, ["train", "--model", "slcvae", "--run-dir", str(tmp_path / "r"), "--data", "tsv",
                          "--train-file", bad], f"{bad}:3:", "malformed")
    empty_target = write(tmp_path / "empty.tsv", ["a b\tc d", "e f\t  "])
    assert_error(capsys, ["train", "--model", "slcvae", "--run-dir", str(tmp_path / "r"), "--data", "tsv",
                          "--train-file", empty_target], f"{empty_target}:2:")


def test_unknown_choice_is_argparse_error(capsys):
    with pytest.raises(SystemExit) as info:
        main(["train", "--model", "bogus", "--run-dir", "x"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "--model" in err and "invalid choice" in err and "bogus" in err
    with pytest.raises(SystemExit) as info:
        main(["evaluate", "x", "--split", "dev"])
    assert info.value.code == 2
    with pytest.raises(SystemExit) as info:
        main([])
    assert info.value.code == 2


def test_run_dir_errors(capsys, tmp_path, slcvae_run, svae_run):
    nowhere = str(tmp_path / "no-such-run")
    assert_error(capsys, ["generate", nowhere, "--input", "-"], nowhere)
    assert_error(capsys, ["evaluate", nowhere], nowhere)
    assert_error(capsys, ["sample", nowhere], nowhere)
    (tmp_path / "not-a-run").mkdir()
    assert_error(capsys, ["plot", str(tmp_path / "not-a-run")], "run.json")
    assert_error(capsys, ["sample", slcvae_run, "-n", "2"], "sentence-vae")
    assert_error(capsys, ["interpolate", slcvae_run, "a b", "c d"], "sentence-vae")
    assert_error(capsys, ["generate", svae_run, "--input", "-"], "sentence-vae")
    assert_error(capsys, ["evaluate", slcvae_run, "--samples", "0"], "--samples")
    assert_error(capsys, ["evaluate", slcvae_run, "--split", "test"], "test", "--test-file")
    assert_error(capsys, ["generate", slcvae_run, "--samples", "0"], "--samples")
    # library checks name their parameter (top_p, iw_samples); the message names the flag instead
    inputs = write(tmp_path / "in.txt", ["he eats"])
    assert_error(capsys, ["generate", slcvae_run, "--input", inputs, "--top-p", "0"], "--top-p")
    assert_error(capsys, ["generate", slcvae_run, "--input", inputs, "--temperature", "0"], "--temperature")
    assert_error(capsys, ["evaluate", slcvae_run, "--split", "valid", "--iw-samples", "-1"], "--iw-samples")
    assert_error(capsys, ["evaluate", slcvae_run, "--split", "valid", "--max-examples", "0"], "--max-examples")
    assert_error(capsys, ["generate", slcvae_run, "--input", str(tmp_path / "none.txt")], "--input", "none.txt")
    assert_error(capsys, ["sample", svae_run, "-n", "0"], "--num")
    assert_error(capsys, ["interpolate", svae_run, "a b", "c d", "--steps", "1"], "--steps")
    assert_error(capsys, ["train", "--run-dir", nowhere, "--resume"], nowhere, command="train")


def test_threads_and_device_errors(capsys, tmp_path, slcvae_run, svae_run):
    """Every command refuses --threads < 1 and a device it cannot use with one line naming the flag."""
    threads = torch.get_num_threads()
    inputs = write(tmp_path / "in.txt", ["he eats"])
    for argv in (["evaluate", slcvae_run, "--split", "valid"], ["generate", slcvae_run, "--input", inputs],
                 ["sample", svae_run], ["interpolate", svae_run, "a b", "c d"], ["plot", svae_run],
                 ["demo", "--run-dir", str(tmp_path / "demo")]):
        assert_error(capsys, [*argv, "--threads", "0"], "--threads", "0")
        assert torch.get_num_threads() == threads
    assert not (tmp_path / "demo").exists()
    for argv in (["evaluate", slcvae_run, "--split", "valid"], ["generate", slcvae_run, "--input", inputs],
                 ["sample", svae_run], ["interpolate", svae_run, "a b", "c d"]):
        assert_error(capsys, [*argv, "--device", "tpu"], "--device", "'tpu'")
        assert_error(capsys, [*argv, "--device", "mps"], "--device", "cpu or cuda")
        if not torch.cuda.is_available():
            assert_error(capsys, [*argv, "--device", "cuda"], "--device", "no CUDA device")
    run_dir = str(tmp_path / "run")
    train = ["train", "--model", "cvae", "--data", "tsv", "--train-file", pair_files(tmp_path)[0],
             "--run-dir", run_dir]
    assert_error(capsys, [*train, "--device", "bogus"], "--device", "'bogus'")
    if not torch.cuda.is_available():
        assert_error(capsys, [*train, "--device", "cuda"], "--device", "no CUDA device")
    assert not os.path.exists(run_dir), "a refused run must not leave a run directory"


def test_input_and_output_path_errors(capsys, tmp_path, monkeypatch, slcvae_run):
    """Bad --input files and output paths give one line naming the flag and the file, before any work."""
    folder = tmp_path / "folder"
    folder.mkdir()
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes(b"caf\xe9 au lait\n")
    blank = write(tmp_path / "blank.txt", ["", "   "])
    assert_error(capsys, ["generate", slcvae_run, "--input", str(folder)], "--input", str(folder), "not a regular file")
    assert_error(capsys, ["generate", slcvae_run, "--input", str(latin1)], "--input", "latin1.txt", "UTF-8")
    assert_error(capsys, ["generate", slcvae_run, "--input", blank], "--input", "blank.txt", "empty")
    monkeypatch.setattr(sys, "stdin", io.StringIO("\n  \n"))
    assert_error(capsys, ["generate", slcvae_run, "--input", "-"], "--input", "stdin")
    default_report = os.path.join(slcvae_run, "eval_valid.json")
    before = os.path.getmtime(default_report) if os.path.exists(default_report) else None
    for flag in ("--output", "--write-samples"):
        assert_error(capsys, ["evaluate", slcvae_run, "--split", "valid", flag, str(folder)], flag, "is a directory")
    blocker = write(tmp_path / "blocker", ["a file, not a folder"])
    assert_error(capsys, ["evaluate", slcvae_run, "--split", "valid", "--output", os.path.join(blocker, "r.json")],
                 "--output", "cannot create")
    after = os.path.getmtime(default_report) if os.path.exists(default_report) else None
    assert after == before, "a refused evaluation must not run (nor write its default report)"


def test_threads_option_sets_torch_threads(capsys, svae_run):
    assert main(["sample", svae_run, "-n", "2", "--threads", "1"]) == 0  # the autouse fixture restores the count
    assert torch.get_num_threads() == 1
    assert len(capsys.readouterr().out.strip().splitlines()) == 2


# ---------------------------------------------------------------------------------- end to end: tsv
def test_train_writes_run_directory(slcvae_run):
    for name in ("run.json", "vocab.json", "checkpoint.pt", "metrics.csv"):
        assert os.path.isfile(os.path.join(slcvae_run, name)), name
    assert os.path.isdir(os.path.join(slcvae_run, "model")) and os.listdir(os.path.join(slcvae_run, "model"))
    with open(os.path.join(slcvae_run, "run.json"), encoding="utf-8") as f:
        run = json.load(f)
    assert run["model"] == "slcvae" and run["corpus"]["name"] == "tsv"
    assert run["train"]["epochs"] == 2 and run["train"]["batch_size"] == 8
    rows = metric_rows(slcvae_run)
    assert {r["split"] for r in rows} == {"train", "valid"}
    assert [int(r["epoch"]) for r in rows if r["split"] == "valid"] == [1, 2]
    assert all(math.isfinite(float(r["loss"])) for r in rows)


def test_evaluate_report(slcvae_run, tmp_path, capsys):
    output = tmp_path / "report.json"
    samples = tmp_path / "samples.jsonl"
    argv = ["evaluate", slcvae_run, "--split", "valid", "--samples", "3", "--output", str(output),
            "--write-samples", str(samples), "--threads", "1"]
    assert main(argv) == 0
    assert str(output) in capsys.readouterr().out
    report = json.loads(output.read_text(encoding="utf-8"))
    assert report["model"] == "SLCVAE" and report["split"] == "valid" and report["examples"] == 8
    for key in ("nll", "kl", "elbo", "ppl", "active_units", "mutual_info"):
        assert math.isfinite(report["likelihood"][key]), key
    assert report["likelihood"]["nll"] > 0 and report["likelihood"]["ppl"] > 1
    generation = report["generation"]
    for key in ("bleu_precision", "bleu_recall", "distinct_1", "distinct_2"):
        assert math.isfinite(generation[key]) and 0 <= generation[key] <= 1, key
    assert generation["num_samples"] == 3 and generation["inputs"] == 2  # 2 distinct sources in valid.tsv
    items = [json.loads(line) for line in samples.read_text(encoding="utf-8").splitlines()]
    assert len(items) == 2 and all(len(item["samples"]) == 3 for item in items)
    assert generation["bleu_smoothing"] == "method7"
    # the same samples (same seed) scored with NLTK 3.2.2-3.4.5's method 7
    legacy = tmp_path / "legacy.json"
    assert main(argv[:-6] + ["--output", str(legacy), "--threads", "1", "--bleu-smoothing", "method7-legacy"]) == 0
    old = json.loads(legacy.read_text(encoding="utf-8"))["generation"]
    assert old["bleu_smoothing"] == "method7-legacy" and old["distinct_2"] == generation["distinct_2"]
    assert old["bleu_precision"] >= generation["bleu_precision"]
    with pytest.raises(SystemExit):
        main(argv[:-6] + ["--bleu-smoothing", "method5"])
    assert "invalid choice: 'method5'" in capsys.readouterr().err


def test_evaluate_latest_weights(slcvae_run, tmp_path, capsys):
    """--latest scores checkpoint.pt's weights; without it the best model (model/) is scored."""
    from fastvae.cli import runs
    from fastvae.train import load_checkpoint

    run = tmp_path / "run"
    shutil.copytree(slcvae_run, run)
    latest, _, _ = runs.load_run(run, latest=True)
    saved = load_checkpoint(str(run / "checkpoint.pt"), restore_rng=False)["model"]
    assert all(torch.equal(a, b) for a, b in zip(latest.state_dict().values(), saved.state_dict().values()))
    with torch.no_grad():  # make the best model differ from the newest weights
        for p in saved.parameters():
            p.mul_(0.5)
    saved.save_pretrained(run / "model")
    reports = {}
    for flags in ([], ["--latest"]):
        output = tmp_path / f"report{len(flags)}.json"
        assert main(["evaluate", str(run), "--split", "valid", "--no-generation", "--output", str(output),
                     "--threads", "1", *flags]) == 0
        reports[len(flags)] = json.loads(output.read_text(encoding="utf-8"))
    capsys.readouterr()
    assert reports[0]["weights"] == "best (model/)" and reports[1]["weights"] == "latest (checkpoint.pt)"
    assert reports[0]["likelihood"]["elbo"] != reports[1]["likelihood"]["elbo"]
    (run / "checkpoint.pt").unlink()
    assert_error(capsys, ["evaluate", str(run), "--latest"], "checkpoint.pt")


def test_evaluate_by_overlap_scores_seen_and_unseen_sources(slcvae_run, svae_run, tmp_path, capsys):
    """The training split's sources are all seen; valid.tsv's two sources are not in train.tsv."""
    reports = {}
    for split in ("train", "valid"):
        output = tmp_path / f"{split}.json"
        assert main(["evaluate", slcvae_run, "--split", split, "--samples", "2", "--by-overlap", "--output",
                     str(output), "--threads", "1"]) == 0
        reports[split] = json.loads(output.read_text(encoding="utf-8"))["generation"]
    capsys.readouterr()
    train, valid = reports["train"], reports["valid"]
    assert train["inputs"] == 10 and train["seen"]["inputs"] == 10 and train["unseen"] == {"inputs": 0.0}
    assert valid["inputs"] == 2 and valid["seen"] == {"inputs": 0.0} and valid["unseen"]["inputs"] == 2
    for report, part in ((train, "seen"), (valid, "unseen")):  # one part holds every input: it is the whole
        top_only = ("seen", "unseen", "decoding", "bleu_smoothing", "bleu_formula", "shuffle_seed")
        assert {k: v for k, v in report.items() if k not in top_only} == report[part]
    assert_error(capsys, ["evaluate", svae_run, "--by-overlap"], "--by-overlap")
    assert_error(capsys, ["evaluate", slcvae_run, "--split", "valid", "--by-overlap", "--no-generation"],
                 "--by-overlap")


def parse_generate(out):
    """``{input: [outputs]}`` of generate's text output."""
    blocks, current = {}, None
    for line in out.splitlines():
        if line.startswith("> "):
            current = blocks.setdefault(line[2:], [])
        elif line:
            m = re.match(r"^  (\d+)\. ?(.*)$", line)
            assert m and current is not None, line
            assert int(m.group(1)) == len(current) + 1, line
            current.append(m.group(2))
    return blocks


def test_generate_from_file(slcvae_run, tmp_path, capsys):
    inputs = write(tmp_path / "in.txt", ["the cat sees", "", "a dog likes"])
    assert main(["generate", slcvae_run, "--samples", "3", "--input", inputs]) == 0
    blocks = parse_generate(capsys.readouterr().out)
    assert list(blocks) == ["the cat sees", "a dog likes"]
    assert all(len(outputs) == 3 for outputs in blocks.values())


def test_generate_defaults_give_different_outputs_per_input(tmp_path, capsys):
    """The default decoding samples (temperature 0.6, top-p 0.9): several different outputs per input, even where
    z carries nothing; greedy decoding (0.1.0's default) then gives copies. A Seq2Seq has no z at all."""
    from fastvae.cli import build_parser

    args = build_parser().parse_args(["generate", "somewhere"])
    assert (args.strategy, args.temperature, args.top_p) == ("sample", 0.6, 0.9)
    run_dir = str(tmp_path / "s2s")
    assert main(train_argv("seq2seq", run_dir, "tsv", *pair_files(tmp_path))) == 0
    capsys.readouterr()
    inputs = write(tmp_path / "in.txt", ["the cat sees", "a dog likes"])
    assert main(["generate", run_dir, "--samples", "5", "--input", inputs, "--json"]) == 0
    sampled = [json.loads(line)["outputs"] for line in capsys.readouterr().out.splitlines()]
    assert main(["generate", run_dir, "--samples", "5", "--input", inputs, "--json", "--strategy", "greedy"]) == 0
    greedy = [json.loads(line)["outputs"] for line in capsys.readouterr().out.splitlines()]
    assert len(sampled) == len(greedy) == 2
    for by_default, by_greedy in zip(sampled, greedy):
        assert len(set(by_default)) >= 3, by_default
        assert len(set(by_greedy)) == 1, by_greedy


def test_generate_json(slcvae_run, tmp_path, capsys):
    inputs = write(tmp_path / "in.txt", ["the cat sees", "a dog likes", "she eats"])
    assert main(["generate", slcvae_run, "--samples", "3", "--input", inputs, "--json", "--strategy", "sample",
                 "--top-k", "5"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3
    objects = [json.loads(line) for line in lines]
    assert [o["input"] for o in objects] == ["the cat sees", "a dog likes", "she eats"]
    assert all(len(o["outputs"]) == 3 and all(isinstance(t, str) for t in o["outputs"]) for o in objects)


def test_generate_from_stdin_is_reproducible(slcvae_run, monkeypatch, capsys):
    outs = []
    for _ in range(2):
        monkeypatch.setattr(sys, "stdin", io.StringIO("the man finds\nmy friend wants\n"))
        assert main(["generate", slcvae_run, "--samples", "2", "--strategy", "sample", "--seed", "3"]) == 0
        outs.append(capsys.readouterr().out)
    blocks = parse_generate(outs[0])
    assert list(blocks) == ["the man finds", "my friend wants"] and all(len(v) == 2 for v in blocks.values())
    assert outs[0] == outs[1]
    monkeypatch.setattr(sys, "stdin", io.StringIO("\n  \n"))
    assert_error(capsys, ["generate", slcvae_run], "stdin")


@pytest.mark.parametrize("model", ["cvae", "seq2seq"])
def test_other_conditional_models(model, tmp_path, capsys):
    run_dir = str(tmp_path / model)
    assert main(train_argv(model, run_dir, "tsv", *pair_files(tmp_path))) == 0
    capsys.readouterr()
    inputs = write(tmp_path / "in.txt", ["he likes"])
    strategy = ["--strategy", "beam", "--beam-size", "2"] if model == "seq2seq" else []
    assert main(["generate", run_dir, "--samples", "2", "--input", inputs, "--json", *strategy]) == 0
    (obj,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert obj["input"] == "he likes" and len(obj["outputs"]) == 2
    report = str(tmp_path / "r.json")
    assert main(["evaluate", run_dir, "--split", "valid", "--samples", "2", "--output", report, "--threads", "1"]) == 0
    with open(report, encoding="utf-8") as f:
        generation = json.load(f)["generation"]
    assert math.isfinite(generation["bleu_precision"])


# ------------------------------------------------------------------------ end to end: sentence-vae
def test_sample(svae_run, capsys):
    assert main(["sample", svae_run, "-n", "4"]) == 0
    out = capsys.readouterr().out
    assert out.count("\n") == 4 and out.endswith("\n")
    assert main(["sample", svae_run, "-n", "4"]) == 0
    assert capsys.readouterr().out == out  # same --seed, same sentences


def test_interpolate(svae_run, capsys):
    assert main(["interpolate", svae_run, "a b", "c d", "--steps", "3"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3
    assert [line[:4] for line in lines] == ["0.00", "0.50", "1.00"]


def test_plot(svae_run, slcvae_run, capsys):
    for run_dir in (svae_run, slcvae_run):
        for name in ("training_curves.png", "latent.png"):
            path = os.path.join(run_dir, name)
            if os.path.exists(path):
                os.remove(path)
        assert main(["plot", run_dir]) == 0
        out = capsys.readouterr().out
        for name in ("training_curves.png", "latent.png"):
            path = os.path.join(run_dir, name)
            with open(path, "rb") as f:
                assert f.read(8) == b"\x89PNG\r\n\x1a\n", path
            assert name in out


# ------------------------------------------------------------------------------------------- resume
def test_resume(tmp_path, capsys):
    run_dir = str(tmp_path / "run")
    argv = train_argv("cvae", run_dir, "tsv", *pair_files(tmp_path))
    assert main(argv) == 0
    capsys.readouterr()
    assert_error(capsys, argv, "--resume", run_dir)
    flags = ["--no-progress", "--no-tensorboard", "--no-plots", "--threads", "1"]
    assert_error(capsys, ["train", "--run-dir", run_dir, "--resume", "--batch-size", "4", *flags], "--batch-size",
                 "--resume")
    assert_error(capsys, ["train", "--run-dir", run_dir, "--resume", "--hidden-size", "16", *flags], "--hidden-size")
    assert_error(capsys, ["train", "--run-dir", run_dir, "--resume", "--kl-schedule", "constant", *flags],
                 "--kl-schedule")
    assert [int(r["epoch"]) for r in metric_rows(run_dir) if r["split"] == "valid"] == [1, 2]
    assert main(["train", "--run-dir", run_dir, "--resume", "--epochs", "3", *flags]) == 0
    assert "finished 3 epochs" in capsys.readouterr().out
    rows = metric_rows(run_dir)
    assert [int(r["epoch"]) for r in rows if r["split"] == "valid"] == [1, 2, 3]
    assert [int(r["epoch"]) for r in rows if r["split"] == "train"] == [1, 2, 3]
    with open(os.path.join(run_dir, "run.json"), encoding="utf-8") as f:
        assert json.load(f)["train"]["epochs"] == 3


def test_ctrl_c_in_a_real_process_saves_exits_130_and_resumes(tmp_path):
    """SIGINT to a running ``python -m fastvae train``: the step finishes, a checkpoint is saved, exit 130."""
    import signal
    import time

    run_dir = str(tmp_path / "run")
    train, valid = pair_files(tmp_path)
    argv = [sys.executable, "-m", "fastvae", "train", "--model", "slcvae", "--run-dir", run_dir, "--data", "tsv",
            "--train-file", train, "--valid-file", valid, "--embed-dim", "8", "--hidden-size", "8",
            "--num-layers", "1", "--batch-size", "8", "--epochs", "100000", "--patience", "0", "--log-every", "1",
            "--no-progress", "--no-tensorboard", "--no-plots", "--threads", "1"]  # no early stop: it runs until the signal
    # the default SIGINT disposition even when this test runs in a background job (which ignores SIGINT)
    reset = lambda: signal.signal(signal.SIGINT, signal.SIG_DFL)  # noqa: E731
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=reset)
    metrics = os.path.join(run_dir, "metrics.csv")
    deadline = time.monotonic() + 120
    while not os.path.exists(metrics) and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.2)
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, out + err
    assert "interrupted at step" in out and "--resume" in out
    from fastvae.train import load_checkpoint

    step = load_checkpoint(os.path.join(run_dir, "checkpoint.pt"), restore_rng=False)["step"]
    assert step >= 1
    # continue with a finite number of epochs: the resumed run ends at its last epoch
    epochs = int(step // 5) + 2  # 40 examples / 8 per batch = 5 steps per epoch
    assert main(["train", "--run-dir", run_dir, "--resume", "--epochs", str(epochs), "--no-progress",
                 "--no-tensorboard", "--no-plots", "--threads", "1"]) == 0
    assert load_checkpoint(os.path.join(run_dir, "checkpoint.pt"), restore_rng=False)["step"] == 5 * epochs


# --------------------------------------------------------------------------------------------- demo
@pytest.mark.slow
def test_demo(tmp_path, capsys):
    """Both models train to the stated step count (in parallel: the CVAE in a background process), the renderings
    are sampled (top-p nucleus), model/ is a model folder whose card holds the test metrics."""
    run_dir = str(tmp_path / "demo")
    argv = ["demo", "--run-dir", run_dir, "--steps", "3", "--verses", "20", "--show", "1", "--samples", "2",
            "--eval-inputs", "3", "--no-progress", "--threads", "1"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    for word in ("KJV:", "WEB:", "SLCVAE", "CVAE", "BLEU-P", "distinct-2", "sampled at temperature 0.6, top-p 0.9",
                 "step limit reached at step 3"):
        assert word in out, word
    assert out.count("step limit reached at step 3") == 2  # both models, no time cap
    for name in ("slcvae", "cvae"):
        assert load_checkpoint(os.path.join(run_dir, name, "checkpoint.pt"), restore_rng=False)["step"] == 3
        card = open(os.path.join(run_dir, name, "model", "README.md"), encoding="utf-8").read()
        assert "## Metrics: the Bible test split" in card and "| steps | 3 |" in card and "BLEU-P" in card
    # the runs stay usable, and a second demo into the same folder is refused (demo has no --resume)
    inputs = write(tmp_path / "in.txt", ["in the beginning god created the heaven"])
    assert main(["generate", os.path.join(run_dir, "slcvae"), "--samples", "2", "--input", inputs, "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)["outputs"]) == 2
    err = assert_error(capsys, argv, "already holds a run")
    assert "--resume" not in err
    greedy = ["demo", "--run-dir", str(tmp_path / "greedy"), "--steps", "2", "--verses", "20", "--show", "1",
              "--samples", "2", "--eval-inputs", "2", "--no-progress", "--threads", "1", "--greedy", "--sequential"]
    assert main(greedy) == 0
    out = capsys.readouterr().out
    assert "greedy per z" in out and "in the background" not in out
    assert_error(capsys, ["demo", "--run-dir", str(tmp_path / "t0"), "--temperature", "0"], "--temperature")
    assert_error(capsys, ["demo", "--run-dir", str(tmp_path / "t0"), "--top-p", "1.5"], "--top-p")


# ------------------------------------------------------------------ runs that must not be damaged


def test_evaluate_never_overwrites_the_runs_own_files(capsys, tmp_path, slcvae_run):
    """An --output or --write-samples onto run.json (or another run file) would destroy the run it reads."""
    before = {name: open(os.path.join(slcvae_run, name), "rb").read() for name in ("run.json", "vocab.json")}
    base = ["evaluate", slcvae_run, "--split", "valid"]
    for name in ("run.json", "vocab.json", "checkpoint.pt", os.path.join("model", "config.json")):
        assert_error(capsys, [*base, "--output", os.path.join(slcvae_run, name)], "--output", "the run's own")
    assert_error(capsys, [*base, "--write-samples", os.path.join(slcvae_run, "run.json")], "--write-samples")
    same = str(tmp_path / "same.json")
    assert_error(capsys, [*base, "--output", same, "--write-samples", same], "--write-samples", "same file")
    assert_error(capsys, [*base, "--no-generation", "--write-samples", str(tmp_path / "s.jsonl")],
                 "--write-samples", "--no-generation")
    # decoding flags are refused before the likelihood pass, not after it
    assert_error(capsys, [*base, "--strategy", "sample", "--temperature", "inf"], "--temperature", "finite")
    with pytest.raises(SystemExit) as info:  # an argparse error: usage line, then the message
        main([*base, "--seed", str(2**70)])
    assert info.value.code == 2 and "argument --seed" in capsys.readouterr().err
    assert not os.path.exists(same)
    assert before == {name: open(os.path.join(slcvae_run, name), "rb").read() for name in before}
    # a report next to the run's files is fine
    assert main([*base, "--no-generation", "--output", os.path.join(slcvae_run, "eval_mine.json")]) == 0


def test_train_refuses_a_folder_with_another_runs_files(capsys, tmp_path, slcvae_run):
    pairs = pair_files(tmp_path)
    copy = tmp_path / "copy"
    shutil.copytree(slcvae_run, copy)
    os.remove(copy / "checkpoint.pt")  # the model/ of another run, nothing to resume
    assert_error(capsys, train_argv("cvae", copy, "tsv", *pairs), "already holds", "remove it")
    assert json.loads((copy / "run.json").read_text())["model"] == "slcvae"  # untouched
    blocker = write(tmp_path / "a-file", ["x"])
    assert_error(capsys, train_argv("cvae", blocker, "tsv", *pairs), "--run-dir", "is a file")


def test_resume_refuses_data_and_backend_changes(capsys, tmp_path, slcvae_run):
    base = ["train", "--run-dir", slcvae_run, "--resume", "--epochs", "9", "--no-progress"]
    for extra, flag in ((["--data", "ptb"], "--data"), (["--min-freq", "5"], "--min-freq"),
                        (["--backend", "reference"], "--backend")):
        assert_error(capsys, [*base, *extra], flag, "cannot change on --resume")


def test_run_json_holds_absolute_paths_and_is_validated(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    pair_files(tmp_path)
    argv = train_argv("cvae", "run", "tsv", "train.tsv", "valid.tsv", "--max-steps", "1")
    assert main(argv) == 0
    corpus = json.loads((tmp_path / "run" / "run.json").read_text())["corpus"]
    assert corpus["train_file"] == str(tmp_path / "train.tsv") and corpus["valid_file"] == str(tmp_path / "valid.tsv")
    monkeypatch.chdir("/")  # evaluating from elsewhere reads the same files
    assert main(["evaluate", str(tmp_path / "run"), "--split", "valid", "--no-generation", "--latest"]) == 0
    capsys.readouterr()
    run_json = tmp_path / "run" / "run.json"
    good = run_json.read_text()
    for bad, words in (('"model": "transformer"', ["unknown model", "transformer"]),
                       ('"corpus": "ptb"', ["'corpus' must be an object"])):
        saved = json.loads(good)
        key, value = bad.split(": ")
        saved[key.strip('"')] = json.loads(value)
        run_json.write_text(json.dumps(saved))
        assert_error(capsys, ["evaluate", str(tmp_path / "run")], str(run_json), *words)
    run_json.write_bytes(b"\xff\xfe{")
    assert_error(capsys, ["evaluate", str(tmp_path / "run")], str(run_json), "corrupt")


def test_error_names_the_file_not_an_option_it_shares_a_name_with(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    write(tmp_path / "epochs", ["", " "])
    valid = pair_files(tmp_path)[1]
    assert_error(capsys, train_argv("cvae", "r1", "tsv", "data", valid), "data is not a regular file")
    err = assert_error(capsys, train_argv("cvae", "r2", "tsv", "epochs", valid), "epochs", "is empty")
    assert "--epochs" not in err and "--data is" not in err


def test_plot_with_a_single_point(capsys, svae_run):
    assert main(["plot", svae_run, "--max-points", "1"]) == 0
    assert capsys.readouterr().out.strip().endswith("latent.png")


def test_beam_wider_than_the_vocabulary_is_refused(capsys, slcvae_run, tmp_path):
    inputs = write(tmp_path / "in.txt", ["the cat eats"])
    assert_error(capsys, ["generate", slcvae_run, "--input", inputs, "--strategy", "beam", "--beam-size", "100000"],
                 "--beam-size", "vocabulary size")


def test_demo_stops_when_its_training_is_interrupted(tmp_path, capsys, monkeypatch):
    """Ctrl-C / SIGTERM while the first model trains: exit 130 as train does, not on to the second model."""
    from fastvae.cli import demo, train

    started = []

    def interrupted(args):
        started.append(args.model)
        os.makedirs(args.run_dir, exist_ok=True)
        return 130

    monkeypatch.setattr(train, "run", interrupted)
    assert main(["demo", "--run-dir", str(tmp_path / "demo"), "--no-progress", "--threads", "1", "--sequential"]) == 130
    assert started == [demo.MODELS[0]]
    assert_error(capsys, ["demo", "--run-dir", str(tmp_path / "x"), "--steps", "0"], "--steps")


@pytest.mark.slow
def test_demo_stops_the_background_model_when_the_first_is_interrupted(tmp_path, capsys, monkeypatch):
    """In parallel mode, an interrupted first model stops the background one too (SIGTERM: it saves and exits)."""
    from fastvae.cli import train

    def interrupted(args):
        os.makedirs(args.run_dir, exist_ok=True)
        return 130

    monkeypatch.setattr(train, "run", interrupted)
    monkeypatch.setattr("fastvae.cli.demo._cores", lambda: 2)
    assert main(["demo", "--run-dir", str(tmp_path / "demo"), "--no-progress", "--verses", "20"]) == 130
    out = capsys.readouterr().out
    assert "CVAE in the background" in out and "CVAE (trained in the background)" in out


@pytest.mark.parametrize("extra, flag", [
    (["--kl-x0", "-100"], "--kl-x0"), (["--kl-k", "0"], "--kl-k"), (["--kl-max", "nan"], "--kl-max"),
    (["--kl-schedule", "cyclical", "--kl-cycle", "10", "--kl-ratio", "2"], "--kl-ratio"),
    (["--embed-dropout", "2"], "--embed-dropout"), (["--word-dropout", "-1"], "--word-dropout"),
    (["--max-vocab", "3"], "--max-vocab"), (["--min-freq", "0"], "--min-freq"),
])
def test_train_errors_name_the_flag_not_the_library_parameter(capsys, tmp_path, extra, flag):
    run_dir = tmp_path / "run"
    err = assert_error(capsys, train_argv("cvae", run_dir, "tsv", *pair_files(tmp_path), *extra), flag)
    assert err.split("error: ", 1)[1].startswith(flag), err
    assert not run_dir.exists()


def test_train_refuses_flags_the_model_or_corpus_would_ignore(capsys, tmp_path):
    pairs = pair_files(tmp_path)
    run_dir = tmp_path / "run"
    for extra, words in ((["--label-weight", "0.5"], ["--label-weight", "--model cvae"]),
                         (["--label-lr", "1e-4"], ["--label-lr", "SLCVAE only"]),
                         (["--bible-max-length", "20"], ["--bible-max-length", "--data tsv"]),
                         (["--data-dir", str(tmp_path)], ["--data-dir", "--data tsv"]),
                         (["--test-file", str(tmp_path / "missing.tsv")], ["--test-file", "missing.tsv"])):
        assert_error(capsys, train_argv("cvae", run_dir, "tsv", *pairs, *extra), *words)
    assert_error(capsys, ["train", "--model", "cvae", "--run-dir", str(run_dir), "--train-file", pairs[0]],
                 "--train-file", "--data bible")
    assert not run_dir.exists()


def test_inputs_outside_the_vocabulary_are_warned_about(capsys, tmp_path, slcvae_run, svae_run):
    inputs = write(tmp_path / "in.txt", ["the cat eats", "the cat eats quantum xylophones"] + ["zebra"] * 7)
    assert main(["generate", slcvae_run, "--input", inputs, "--samples", "1"]) == 0
    err = capsys.readouterr().err
    assert "input line 1" not in err
    assert "input line 2: 2 of 5 tokens are not in the run's vocabulary" in err and "'quantum', 'xylophones'" in err
    assert err.count("warning: input line") == 5 and "3 more input(s)" in err  # 8 inputs with unknown words
    assert main(["interpolate", svae_run, "the cat sees the ball .", "quantum xylophones hum"]) == 0
    err = capsys.readouterr().err
    assert "sentence_b: 3 of 3 tokens" in err and "sentence_a" not in err


def test_out_of_memory_is_one_line_and_other_runtime_errors_keep_their_traceback(capsys, tmp_path, monkeypatch):
    argv = train_argv("cvae", tmp_path / "run", "tsv", *pair_files(tmp_path), "--hidden-size", "10000000")
    err = assert_error(capsys, argv, "out of memory", "can't allocate memory", "--hidden-size")
    assert "Traceback" not in err
    import fastvae.cli as cli

    build = cli.build_parser

    def buggy(args):
        raise RuntimeError("index out of range")

    def with_a_buggy_sample_command():
        parser = build()
        for action in parser._subparsers._group_actions:
            action.choices["sample"].set_defaults(func=buggy)
        return parser

    monkeypatch.setattr(cli, "build_parser", with_a_buggy_sample_command)
    with pytest.raises(RuntimeError, match="index out of range"):  # a bug keeps its traceback
        main(["sample", str(tmp_path)])


def test_resume_may_lower_the_learning_rate(capsys, tmp_path):
    run_dir = str(tmp_path / "run")
    assert main(train_argv("cvae", run_dir, "tsv", *pair_files(tmp_path), "--max-steps", "2", "--log-every", "1")) == 0
    flags = ["--no-progress", "--no-tensorboard", "--no-plots", "--threads", "1", "--log-every", "1"]
    assert main(["train", "--run-dir", run_dir, "--resume", "--max-steps", "4", "--lr", "1e-5",
                 "--max-grad-norm", "1", *flags]) == 0
    with open(os.path.join(run_dir, "run.json"), encoding="utf-8") as f:
        saved = json.load(f)["train"]
    assert saved["lr"] == 1e-5 and saved["max_grad_norm"] == 1.0
    assert float(metric_rows(run_dir)[-1]["lr"]) == pytest.approx(1e-5)


def test_built_in_corpus_root_is_stored_so_evaluate_and_resume_work_from_anywhere(capsys, tmp_path, monkeypatch):
    """A ptb/dailydialog run found via $FASTVAE_DATA (or ../shared/data) stores that root, absolute, in run.json."""
    ptb = tmp_path / "data" / "ptb"
    ptb.mkdir(parents=True)
    train, valid = sentence_files(ptb)
    os.replace(train, ptb / "ptb.train.txt")
    os.replace(valid, ptb / "ptb.valid.txt")
    shutil.copy(ptb / "ptb.valid.txt", ptb / "ptb.test.txt")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FASTVAE_DATA", "data")  # relative to where train runs
    run_dir = str(tmp_path / "run")
    argv = ["train", "--model", "sentence-vae", "--run-dir", run_dir, "--data", "ptb", *TINY, "--latent-size", "4",
            "--max-steps", "2"]
    assert main(argv) == 0
    run_json = tmp_path / "run" / "run.json"
    assert json.loads(run_json.read_text())["corpus"]["data_dir"] == str(tmp_path / "data")
    # another folder (its ../shared/data does not exist), another shell: no FASTVAE_DATA
    monkeypatch.delenv("FASTVAE_DATA")
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    evaluate = ["evaluate", run_dir, "--split", "test", "--latest", "--threads", "1"]
    assert main(evaluate) == 0
    assert json.loads((tmp_path / "run" / "eval_test.json").read_text())["examples"] == 12
    flags = ["--no-progress", "--no-tensorboard", "--no-plots", "--threads", "1"]
    assert main(["train", "--run-dir", run_dir, "--resume", "--max-steps", "3", *flags]) == 0
    out = capsys.readouterr().out
    assert "step limit reached at step 3" in out and "--resume --max-steps N (N > 3)" in out  # the limit is saved
    # an explicit --data-dir still overrides the stored root
    assert_error(capsys, [*evaluate, "--data-dir", str(tmp_path / "nowhere")], str(tmp_path / "nowhere" / "ptb"))
    # run.json of older versions (data_dir null) still reads the data from $FASTVAE_DATA
    saved = json.loads(run_json.read_text())
    saved["corpus"]["data_dir"] = None
    run_json.write_text(json.dumps(saved))
    assert_error(capsys, evaluate, "no ptb data at", os.path.join("..", "shared", "data", "ptb"))
    monkeypatch.setenv("FASTVAE_DATA", str(tmp_path / "data"))
    assert main(evaluate) == 0
