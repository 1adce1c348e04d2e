"""A model folder that stands alone: model/ holds config.json, model.safetensors, vocab.json,
tokenizer_config.json and a README.md model card; fastvae generate and from_pretrained + Vocab.from_pretrained
work from a copy of it alone; model/ folders of fastvae 0.1.0 (no vocabulary inside) still load."""

import json
import os
import random
import shutil

import pytest
import torch

import trainer_setup as ts
from fastvae import SLCVAE, SentenceVAE
from fastvae.cli import main
from fastvae.data import Vocab
from fastvae.train import Trainer, load_model_folder, save_model_folder

FILES = ["README.md", "config.json", "model.safetensors", "tokenizer_config.json", "vocab.json"]


@pytest.fixture(autouse=True)
def _restore_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    directory = tmp_path_factory.mktemp("folder")
    rng = random.Random(7)
    words = "the a cat dog man sees likes eats finds ball fish bread".split()
    lines = [f"{' '.join(rng.choices(words, k=3))}\t{' '.join(rng.choices(words, k=rng.randint(2, 5)))} ." for _ in range(48)]
    (directory / "train.tsv").write_text("\n".join(lines[:40]) + "\n", encoding="utf-8")
    (directory / "valid.tsv").write_text("\n".join(lines[40:]) + "\n", encoding="utf-8")
    (directory / "inputs.txt").write_text("the cat sees\na dog eats fish\n", encoding="utf-8")
    argv = ["train", "--model", "slcvae", "--run-dir", str(directory / "run"), "--data", "tsv",
            "--train-file", str(directory / "train.tsv"), "--valid-file", str(directory / "valid.tsv"),
            "--embed-dim", "8", "--hidden-size", "8", "--latent-size", "4", "--num-layers", "1", "--batch-size", "8",
            "--epochs", "2", "--threads", "1", "--no-progress", "--no-tensorboard", "--no-plots"]
    assert main(argv) == 0
    return directory


def generate(capsys, model_path, inputs):
    assert main(["generate", str(model_path), "--input", str(inputs), "--json", "--samples", "3", "--threads", "1"]) == 0
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


def test_model_folder_holds_everything_and_a_card(run):
    model_dir = run / "run" / "model"
    assert sorted(os.listdir(model_dir)) == FILES
    card = (model_dir / "README.md").read_text(encoding="utf-8")
    assert card.startswith("---\nlibrary_name: fastvae\n")  # Hub metadata (YAML front matter)
    assert "- slcvae" in card and "# SLCVAE trained with fastvae" in card
    for words in ("| corpus | tsv |", "| train file | train.tsv |", "| training examples | 40 |",
                  "| validation examples | 8 |", "## Metrics: validation, after epoch", "-ELBO = NLL + KL",
                  "KL(q \\|\\| p)",  # a "|" inside a cell is escaped, or the table breaks
                  "| latent_size | 4 |", "fastvae generate path/to/this/folder"):
        assert words in card, words
    settings = json.loads((model_dir / "tokenizer_config.json").read_text())
    assert settings["tokenizer"] == "fastvae" and settings["eos_token"] == "<eos>"
    assert Vocab.from_pretrained(model_dir) == Vocab.load(run / "run" / "vocab.json")


def test_a_copy_of_the_model_folder_works_alone(run, tmp_path, capsys):
    copy = tmp_path / "colleague" / "my-model"
    shutil.copytree(run / "run" / "model", copy)
    from_run = generate(capsys, run / "run", run / "inputs.txt")
    from_copy = generate(capsys, copy, run / "inputs.txt")
    assert from_copy == from_run and len(from_copy) == 2
    # the Python API from the folder alone: the card's recipe
    model = SLCVAE.from_pretrained(copy)
    vocab = Vocab.from_pretrained(copy)
    ids = torch.tensor([vocab.encode_text("The cat sees")])
    assert ids[0, -1] == vocab.eos_id and vocab.unk_id not in ids[0].tolist()
    tokens, _ = model.generate(ids, torch.tensor([ids.shape[1]]), num_samples=3, strategy="sample",
                               generator=torch.Generator().manual_seed(0))
    assert all(isinstance(" ".join(vocab.decode(t)), str) for t in tokens[0])
    loaded, loaded_vocab = load_model_folder(copy)
    assert isinstance(loaded, SLCVAE) and loaded_vocab == vocab and not loaded.training


def test_a_model_folder_of_fastvae_0_1_0_still_loads(run, tmp_path, capsys):
    """0.1.0 wrote only config.json and the weights into model/, the vocabulary one level up."""
    old_run = tmp_path / "old-run"
    shutil.copytree(run / "run", old_run)
    for name in ("README.md", "tokenizer_config.json", "vocab.json"):
        os.remove(old_run / "model" / name)
    expected = generate(capsys, run / "run", run / "inputs.txt")
    assert generate(capsys, old_run / "model", run / "inputs.txt") == expected
    assert generate(capsys, old_run, run / "inputs.txt") == expected
    lone = tmp_path / "lone"
    shutil.copytree(old_run / "model", lone)
    assert main(["generate", str(lone), "--input", str(run / "inputs.txt")]) == 2
    err = capsys.readouterr().err
    assert "vocab.json is missing" in err and str(lone) in err


def test_commands_that_need_the_run_say_so_for_a_model_folder(run, capsys):
    assert main(["evaluate", str(run / "run" / "model")]) == 2
    err = capsys.readouterr().err
    assert "is a model folder, not a run directory" in err and "run.json" in err


def test_sentence_vae_folder_and_the_whitespace_tokenizer(tmp_path, capsys):
    vocab = Vocab.build([["Hello,", "world"], ["the", "cat"]], tokenizer="whitespace")
    torch.manual_seed(0)
    model = SentenceVAE(len(vocab), embed_dim=4, hidden_size=4, latent_size=2, num_layers=1)
    save_model_folder(tmp_path / "svae", model, vocab, trained_on={"corpus": "ptb"})
    back = Vocab.from_pretrained(tmp_path / "svae")
    assert back.tokenizer == "whitespace" and back.tokenize("Hello, world") == ["Hello,", "world"]
    assert Vocab.from_pretrained(tmp_path / "svae").encode_text("Hello, world") == vocab.encode(["Hello,", "world"]) + [3]
    card = (tmp_path / "svae" / "README.md").read_text()
    assert "fastvae sample path/to/this/folder" in card and "| corpus | ptb |" in card
    assert main(["sample", str(tmp_path / "svae"), "-n", "2", "--threads", "1"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 2


def test_save_and_load_errors(tmp_path):
    vocab = Vocab.build([["a", "b"]])
    model = ts.model(SLCVAE, vocab)
    with pytest.raises(ValueError, match="vocab has 5 tokens but the model.s vocab_size is 6"):
        save_model_folder(tmp_path / "m", model, Vocab.build([["a", "b"]], max_size=5))
    with pytest.raises(TypeError, match="vocab must be a fastvae.data.Vocab"):
        save_model_folder(tmp_path / "m", model, ["a"])
    with pytest.raises(FileNotFoundError, match="no model folder"):
        load_model_folder(tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="config.json, model.safetensors missing"):
        load_model_folder(tmp_path / "empty")
    save_model_folder(tmp_path / "m", model, vocab)
    (tmp_path / "m" / "tokenizer_config.json").write_text(json.dumps({"tokenizer": "sentencepiece"}))
    with pytest.raises(ValueError, match=r"tokenizer_config\.json: key 'tokenizer' is 'sentencepiece'"):
        load_model_folder(tmp_path / "m")
    with pytest.raises(ValueError, match="tokenizer must be one of"):
        Vocab(["<pad>", "<unk>", "<sos>", "<eos>"], tokenizer="bpe")


def test_trainer_model_folder_and_its_card(tmp_path):
    train, valid, vocab = ts.datasets()
    trainer = Trainer(ts.model(SLCVAE, vocab), train, valid, ts.config(epochs=1), run_dir=tmp_path,
                      data_description={"corpus": "toy paraphrases"})
    trainer.fit()
    assert sorted(os.listdir(tmp_path / "model")) == FILES
    card = (tmp_path / "model" / "README.md").read_text()
    assert "| corpus | toy paraphrases |" in card and "| seed | 0 |" in card and "| epochs | 1 |" in card
    with pytest.raises(TypeError, match="data_description must be a dict"):
        Trainer(ts.model(SLCVAE, vocab), train, valid, ts.config(), run_dir=tmp_path / "x", data_description="toy")
