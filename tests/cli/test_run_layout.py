"""The run directory holds the names of fastvae.run_layout, and nothing else: what fastvae train and the
Trainer write there, and fastvae evaluate's default report."""

import os

from fastvae import run_layout
from fastvae.cli import main

PAIRS = [f"{s} {v}\t{s} {v} {o} ." for s in ("the cat", "a dog", "my friend") for v in ("sees", "likes")
         for o in ("the ball", "a house")]


def test_a_run_directory_holds_the_layouts_names(tmp_path, capsys):
    (tmp_path / "train.tsv").write_text("\n".join(PAIRS) + "\n", encoding="utf-8")
    (tmp_path / "valid.tsv").write_text("\n".join(PAIRS[:4]) + "\n", encoding="utf-8")
    run_dir = tmp_path / "run"
    argv = ["train", "--model", "cvae", "--run-dir", str(run_dir), "--data", "tsv", "--train-file",
            str(tmp_path / "train.tsv"), "--valid-file", str(tmp_path / "valid.tsv"), "--embed-dim", "8",
            "--hidden-size", "8", "--latent-size", "2", "--num-layers", "1", "--batch-size", "4", "--epochs", "1",
            "--log-every", "1", "--no-progress"]
    assert main(argv) == 0
    assert main(["evaluate", str(run_dir), "--split", "valid", "--no-generation"]) == 0
    capsys.readouterr()
    written = set(os.listdir(run_dir))
    expected = set(run_layout.RUN_OUTPUTS) | {run_layout.CURVES_PLOT, run_layout.LATENT_PLOT,
                                              run_layout.eval_report_name("valid")}
    assert written == expected, written ^ expected
    assert os.path.isdir(run_layout.in_run(run_dir, run_layout.MODEL_DIR))
