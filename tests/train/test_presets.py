"""fastvae.presets and ``fastvae train --preset``: the documented sizes, overrides recorded, the preset's
evaluation protocol, and a preset run that resumes bit for bit."""

import json
import os

import pytest
import torch

from fastvae import CVAE, SLCVAE, Seq2Seq
from fastvae.cli import main
from fastvae.data import Vocab
from fastvae.presets import PRESETS, SLCVAE_CODE_DIFFERENCES, get_preset
from fastvae.train import TrainConfig, load_checkpoint
from test_examples import fake_dailydialog

# the setting of the SLCVAE authors' code (config_utils.KgCVAEConfig), as fastvae builds it
DOCUMENTED = dict(embed_dim=200, hidden_size=300, bidirectional=True, latent_size=200, num_layers=1,
                  prior_hidden_size=400, word_dropout=0.0, embed_dropout=0.0, bow=False, label_loss="sigmoid-ce",
                  label_loss_weight=0.1, label_prior_weight=0.0)
QUIET = ["--no-progress", "--no-tensorboard", "--no-plots", "--threads", "1"]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return str(fake_dailydialog(tmp_path_factory.mktemp("dd")))


def read_json(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def test_slcvae_code_resolves_to_the_documented_sizes():
    preset = get_preset("slcvae-code")
    assert sorted(PRESETS) == ["slcvae-code"] and preset.model == "slcvae"
    assert preset.model_kwargs("slcvae") == DOCUMENTED
    assert preset.model_kwargs(CVAE) == {k: v for k, v in DOCUMENTED.items() if not k.startswith("label_")}
    assert preset.model_kwargs("seq2seq") == dict(embed_dim=200, hidden_size=300, bidirectional=True, num_layers=1,
                                                  word_dropout=0.0, embed_dropout=0.0)
    assert preset.model_kwargs("slcvae", latent_size=64)["latent_size"] == 64
    with pytest.raises(ValueError, match="Seq2Seq does not take latent_size"):
        preset.model_kwargs("seq2seq", latent_size=64)
    config = preset.train_config()
    assert isinstance(config, TrainConfig)
    assert (config.epochs, config.batch_size, config.lr, config.max_grad_norm) == (45, 30, 1e-3, 5.0)
    assert config.kl_schedule == {"name": "linear", "warmup_steps": 10000, "start": 0.0, "max_weight": 1.0}
    assert config.label_weight_schedule == "constant" and config.patience is None and config.free_bits == 0.0
    assert preset.train_config(batch_size=8).batch_size == 8
    config.kl_schedule["warmup_steps"] = 1  # a copy: the preset itself is unchanged
    assert preset.train_config().kl_schedule["warmup_steps"] == 10000
    assert dict(preset.data) == dict(data="dailydialog", context_window=1, max_vocab=10002, min_freq=1, max_length=None)
    assert dict(preset.evaluation) == dict(num_samples=10, strategy="greedy", max_length=40,
                                           bleu_formula="cumulative-3", bleu_smoothing="method7-legacy")
    assert preset.differences == SLCVAE_CODE_DIFFERENCES and any("GRU" in d for d in preset.differences)
    assert json.loads(json.dumps(preset.to_dict()))["model_options"] == DOCUMENTED
    with pytest.raises(ValueError, match="unknown preset 'slcvae'; choose one of slcvae-code"):
        get_preset("slcvae")


def test_the_preset_model_has_the_documented_shapes():
    vocab = Vocab.build([[f"w{i}" for i in range(50)]])
    model = get_preset("slcvae-code").build_model("slcvae", vocab)
    assert isinstance(model, SLCVAE) and model.config["vocab_size"] == len(vocab)
    assert model.embedding.weight.shape == (len(vocab), 200)
    lstm = model.context_encoder.lstm
    assert (lstm.input_size, lstm.hidden_size, lstm.num_layers, lstm.bidirectional) == (200, 300, 1, True)
    assert model.context_encoder.output_size == 600  # the context vector: 2 x 300
    assert model.decoder.lstm.hidden_size == 300  # one hidden size in fastvae's models (the code's decoder: 400)
    assert model.prior.out.out_features == 400 and model.prior.hidden.out_features == 400  # mu, logvar of Z = 200
    assert model.label_head.out_features == 200
    assert model.decoder.init_state.in_features == 600 + 200


def test_cli_preset_builds_the_documented_model_and_schedule(data_dir, tmp_path):
    run_dir = str(tmp_path / "run")
    assert main(["train", "--preset", "slcvae-code", "--data-dir", data_dir, "--run-dir", run_dir,
                 "--max-steps", "1", *QUIET]) == 0
    run = read_json(os.path.join(run_dir, "run.json"))
    assert run["model"] == "slcvae" and run["corpus"]["name"] == "dailydialog"
    assert run["corpus"]["context_window"] == 1 and run["max_length"] is None
    assert run["preset"] == {"name": "slcvae-code", "overrides": {"max_steps": 1}}
    train = run["train"]
    assert (train["epochs"], train["batch_size"], train["lr"], train["max_grad_norm"]) == (45, 30, 1e-3, 5.0)
    assert train["kl_schedule"] == {"name": "linear", "warmup_steps": 10000, "start": 0.0, "max_weight": 1.0}
    assert train["label_weight_schedule"] == "constant" and train["patience"] is None
    model = load_checkpoint(os.path.join(run_dir, "checkpoint.pt"), restore_rng=False)["model"]
    assert {k: model.config[k] for k in DOCUMENTED} == DOCUMENTED
    # the context is the previous utterance alone: no <eou> in any source
    assert "<eou>" not in Vocab.load(os.path.join(run_dir, "vocab.json")).itos


def test_cli_flags_override_the_preset_and_are_recorded(data_dir, tmp_path):
    run_dir = str(tmp_path / "run")
    assert main(["train", "--preset", "slcvae-code", "--data-dir", data_dir, "--run-dir", run_dir,
                 "--embed-dim", "8", "--hidden-size", "8", "--latent-size", "4", "--no-bidirectional",
                 "--context-window", "3", "--label-loss", "l2", "--label-weight-schedule", "kl", "--batch-size", "8",
                 "--kl-warmup", "50", "--max-vocab", "20", "--max-steps", "2", *QUIET]) == 0
    run = read_json(os.path.join(run_dir, "run.json"))
    assert run["preset"]["overrides"] == {
        "embed_dim": 8, "hidden_size": 8, "latent_size": 4, "bidirectional": False, "context_window": 3,
        "label_loss": "l2", "label_weight_schedule": "kl", "batch_size": 8, "kl_warmup": 50, "max_vocab": 20,
        "max_steps": 2}
    assert run["corpus"]["context_window"] == 3
    assert run["train"]["batch_size"] == 8 and run["train"]["label_weight_schedule"] == "kl"
    assert run["train"]["kl_schedule"] == {"name": "linear", "warmup_steps": 50, "start": 0.0, "max_weight": 1.0}
    model = load_checkpoint(os.path.join(run_dir, "checkpoint.pt"), restore_rng=False)["model"]
    assert (model.config["embed_dim"], model.config["hidden_size"], model.config["latent_size"]) == (8, 8, 4)
    assert model.config["bidirectional"] is False and model.config["label_loss"] == "l2"
    assert model.config["label_loss_weight"] == 0.1 and model.config["num_layers"] == 1  # the preset's, kept
    assert model.config["vocab_size"] == 20
    # another model takes the sizes that apply to it
    cvae_dir = str(tmp_path / "cvae")
    assert main(["train", "--preset", "slcvae-code", "--model", "cvae", "--data-dir", data_dir, "--run-dir", cvae_dir,
                 "--hidden-size", "8", "--embed-dim", "8", "--latent-size", "4", "--max-steps", "1", *QUIET]) == 0
    cvae = load_checkpoint(os.path.join(cvae_dir, "checkpoint.pt"), restore_rng=False)["model"]
    assert isinstance(cvae, CVAE) and not isinstance(cvae, SLCVAE) and cvae.config["bidirectional"] is True
    seq_dir = str(tmp_path / "seq2seq")
    assert main(["train", "--preset", "slcvae-code", "--model", "seq2seq", "--data-dir", data_dir, "--run-dir",
                 seq_dir, "--hidden-size", "8", "--embed-dim", "8", "--max-steps", "1", *QUIET]) == 0
    assert isinstance(load_checkpoint(os.path.join(seq_dir, "checkpoint.pt"), restore_rng=False)["model"], Seq2Seq)


@pytest.mark.parametrize("argv, message", [
    (["--model", "cvae", "--label-loss", "l2"], "--label-loss does not apply to --model cvae"),
    (["--model", "cvae", "--label-weight-schedule", "kl"], "--label-weight-schedule does not apply to --model cvae"),
    (["--model", "seq2seq", "--latent-size", "4"], "--latent-size does not apply to --model seq2seq"),
    (["--data", "ptb", "--context-window", "2"], "--context-window does not apply to --data ptb"),
    (["--context-window", "0"], "--context-window must be an integer >= 1 (utterances), got 0"),
])
def test_cli_preset_refuses_flags_that_do_not_apply(data_dir, tmp_path, capsys, argv, message):
    code = main(["train", "--preset", "slcvae-code", "--data-dir", data_dir, "--run-dir", str(tmp_path / "r"),
                 "--max-steps", "1", *argv, *QUIET])
    assert code == 2 and message in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "r" / "run.json")


def test_context_window_without_a_preset(data_dir, tmp_path):
    run_dir = str(tmp_path / "run")
    assert main(["train", "--model", "cvae", "--data", "dailydialog", "--data-dir", data_dir, "--run-dir", run_dir,
                 "--context-window", "1", "--embed-dim", "8", "--hidden-size", "8", "--latent-size", "4",
                 "--max-steps", "1", *QUIET]) == 0
    run = read_json(os.path.join(run_dir, "run.json"))
    assert run["corpus"]["context_window"] == 1 and "preset" not in run


def _model_state(run_dir):
    return load_checkpoint(os.path.join(run_dir, "checkpoint.pt"), restore_rng=False)["model"].state_dict()


def test_a_preset_run_resumes_bit_for_bit(data_dir, tmp_path):
    """Full preset sizes, 6 steps straight vs 3 steps, stop, resume to 6: the same weights, bit for bit.

    51 training examples / batch 30 = 2 steps per epoch: the cut falls inside epoch 2, and the runs pass
    three validations and the epoch boundaries on both sides of it.
    """
    common = ["--data-dir", data_dir, "--seed", "3", *QUIET]
    full, cut = str(tmp_path / "full"), str(tmp_path / "cut")
    assert main(["train", "--preset", "slcvae-code", "--run-dir", full, "--max-steps", "6", *common]) == 0
    assert main(["train", "--preset", "slcvae-code", "--run-dir", cut, "--max-steps", "3", *common]) == 0
    assert main(["train", "--run-dir", cut, "--resume", "--max-steps", "6", "--no-progress", "--no-tensorboard",
                 "--no-plots", "--threads", "1"]) == 0
    a, b = _model_state(full), _model_state(cut)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    # the metrics logs agree row for row, wall-clock seconds aside
    with open(os.path.join(full, "metrics.csv")) as f1, open(os.path.join(cut, "metrics.csv")) as f2:
        header = f1.readline().strip().split(",")
        assert f2.readline().strip().split(",") == header
        seconds = header.index("seconds")
        drop = lambda line: [v for i, v in enumerate(line.strip().split(",")) if i != seconds]  # noqa: E731
        assert [drop(r) for r in f1] == [drop(r) for r in f2]
    assert main(["train", "--run-dir", cut, "--resume", "--preset", "slcvae-code", *QUIET]) == 2


def test_evaluate_uses_the_runs_preset_protocol_unless_flags_say_otherwise(data_dir, tmp_path, capsys):
    run_dir = str(tmp_path / "run")
    assert main(["train", "--preset", "slcvae-code", "--data-dir", data_dir, "--run-dir", run_dir, "--embed-dim", "8",
                 "--hidden-size", "8", "--latent-size", "4", "--epochs", "1", *QUIET]) == 0
    out = str(tmp_path / "eval.json")
    assert main(["evaluate", run_dir, "--samples", "2", "--output", out, "--threads", "1", "--random-baseline"]) == 0
    report = read_json(out)
    g = report["generation"]
    assert (g["bleu_formula"], g["bleu_smoothing"], g["decoding"]) == (
        "cumulative-3", "method7-legacy", {"strategy": "greedy", "max_length": 40})
    assert report["preset"] == "slcvae-code"
    assert g["context_gain_precision"] == pytest.approx(g["bleu_precision"] - g["shuffled_bleu_precision"])
    baseline = report["baselines"]["random_responses"]
    assert baseline["strategy"] == "random-response" and baseline["bleu_formula"] == "cumulative-3"
    assert baseline["inputs"] == g["inputs"] and baseline["num_samples"] == 2
    assert main(["evaluate", run_dir, "--samples", "2", "--output", out, "--threads", "1", "--bleu", "mean-1-3",
                 "--bleu-smoothing", "method7", "--max-length", "12"]) == 0
    g = read_json(out)["generation"]
    assert (g["bleu_formula"], g["bleu_smoothing"], g["decoding"]["max_length"]) == ("mean-1-3", "method7", 12)
    capsys.readouterr()
    assert main(["evaluate", run_dir, "--random-baseline", "--no-generation", "--output", out]) == 2
    assert "--random-baseline goes with the generation metrics" in capsys.readouterr().err
