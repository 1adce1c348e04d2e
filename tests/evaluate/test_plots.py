"""fastvae.plots: training curves from metrics.csv and the latent projection, as PNG files."""

import csv

import pytest
import torch

from fastvae import CVAE, SLCVAE, Seq2Seq, SentenceVAE
from fastvae.data import Example, TextDataset, Vocab
from fastvae.plots import _project_2d, plot_latent_projection, plot_training_curves

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
COLUMNS = "step,epoch,split,loss,nll,kl,label,label_nll,bow,kl_weight,label_weight,lr,grad_norm,seconds".split(",")
WORDS = "the a cat dog sat ran on in mat park big small red blue".split()
SMALL = dict(embed_dim=8, hidden_size=8, num_layers=1, backend="reference")


def assert_png(path, min_bytes=2000):
    with open(path, "rb") as f:
        data = f.read()
    assert data[:8] == PNG_MAGIC
    assert min_bytes < len(data) < 5_000_000


def write_metrics(path, rows, columns=COLUMNS):
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: row.get(k, "") for k in columns})
    return path


def training_rows(with_kl=True):
    rows = []
    for step in range(10, 110, 10):
        row = dict(step=step, epoch=step // 50, split="train", loss=5 - step / 50, nll=4 - step / 60, lr=1e-3, grad_norm=1.0)
        if with_kl:
            row.update(kl=step / 100, kl_weight=min(1.0, step / 80))
        rows.append(row)
        if step % 50 == 0:
            rows.append(dict(step=step, epoch=step // 50, split="valid", loss=4.9 - step / 60, nll=3.9 - step / 70,
                             kl=(step / 90 if with_kl else None)))
    return rows


# ------------------------------------------------------------ training curves


def test_training_curves_png_next_to_the_csv(tmp_path):
    path = write_metrics(tmp_path / "metrics.csv", training_rows())
    out = plot_training_curves(path)
    assert out == str(tmp_path / "training_curves.png")
    assert_png(out)


def test_training_curves_explicit_path_and_empty_panels_skipped(tmp_path):
    # Seq2Seq-like log: no kl, no weights; only loss and NLL panels
    path = write_metrics(tmp_path / "metrics.csv", training_rows(with_kl=False))
    without = plot_training_curves(path, tmp_path / "out" / "curves.png")
    assert without == str(tmp_path / "out" / "curves.png")
    assert_png(without)
    full = plot_training_curves(write_metrics(tmp_path / "full.csv", training_rows()), tmp_path / "full.png")
    import matplotlib.image

    # one panel per row of the figure: 2 panels (loss, NLL) against 4 (loss, NLL, KL, weights)
    assert matplotlib.image.imread(without).shape[0] < matplotlib.image.imread(full).shape[0]


def test_training_curves_only_required_columns(tmp_path):
    path = write_metrics(tmp_path / "m.csv", [dict(step=1, split="train", loss=2.0), dict(step=2, split="train", loss=1.5)],
                         columns=["step", "split", "loss"])
    assert_png(plot_training_curves(path))


@pytest.mark.parametrize(
    "text, match",
    [
        ("", "empty"),
        ("step,epoch,split,nll\n1,0,train,2.0\n", "loss"),
        ("step,split,loss\n", "no rows"),
        ("step,split,loss\n1,train,abc\n", "line 2"),
        ("step,split,loss\n1,train,2.0,7\n", "line 2"),
        ("step,split,loss\n1,train\n", "line 2"),
        ("step,split,loss\n1,train,\n2,train,\n", "no values"),
    ],
)
def test_training_curves_malformed_csv_names_the_file(tmp_path, text, match):
    path = tmp_path / "broken_metrics.csv"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ValueError, match=match) as info:
        plot_training_curves(path)
    assert "broken_metrics.csv" in str(info.value)
    assert not (tmp_path / "training_curves.png").exists()


def test_training_curves_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothere.csv"):
        plot_training_curves(tmp_path / "nothere.csv")


# ---------------------------------------------------------- latent projection


@pytest.fixture(scope="module")
def data():
    g = torch.Generator().manual_seed(0)

    def sentence():
        n = int(torch.randint(1, 6, (1,), generator=g))
        return [WORDS[int(j)] for j in torch.randint(0, len(WORDS), (n,), generator=g)]

    examples = [Example(sentence(), sentence(), i) for i in range(30)]
    vocab = Vocab.build([WORDS])
    return vocab, TextDataset(examples, vocab), TextDataset([e.target for e in examples], vocab)


@pytest.mark.parametrize("cls, latent_size", [(SentenceVAE, 4), (SentenceVAE, 2), (SentenceVAE, 1), (CVAE, 3), (SLCVAE, 4)])
def test_latent_projection_png(tmp_path, data, cls, latent_size):
    vocab, conditional, plain = data
    model = cls(len(vocab), latent_size=latent_size, **SMALL).train()
    dataset = plain if cls is SentenceVAE else conditional
    out = plot_latent_projection(model, dataset, tmp_path / "latent.png", max_points=20, batch_size=7)
    assert out == str(tmp_path / "latent.png")
    assert_png(out)
    assert model.training  # mode restored


def test_latent_projection_with_labels(tmp_path, data):
    vocab, _, plain = data
    model = SentenceVAE(len(vocab), latent_size=4, **SMALL)
    labels = [i % 4 for i in range(len(plain))]
    assert_png(plot_latent_projection(model, plain, tmp_path / "labels.png", labels=labels))
    many = list(range(len(plain)))  # more than 20 values: a colour bar instead of a legend
    assert_png(plot_latent_projection(model, plain, tmp_path / "many.png", labels=many))
    with pytest.raises(ValueError, match="labels"):
        plot_latent_projection(model, plain, tmp_path / "x.png", labels=labels[:-1])
    with pytest.raises(ValueError, match="labels"):
        plot_latent_projection(model, plain, tmp_path / "x.png", labels=[None] * len(plain))


def test_latent_projection_errors(tmp_path, data):
    vocab, conditional, plain = data
    with pytest.raises(TypeError, match="model"):
        plot_latent_projection(Seq2Seq(len(vocab), **SMALL), conditional, tmp_path / "x.png")
    with pytest.raises(ValueError, match="dataset"):
        plot_latent_projection(CVAE(len(vocab), latent_size=4, **SMALL), plain, tmp_path / "x.png")
    with pytest.raises(ValueError, match="max_points"):
        plot_latent_projection(SentenceVAE(len(vocab), latent_size=4, **SMALL), plain, tmp_path / "x.png", max_points=0)
    assert not (tmp_path / "x.png").exists()


def test_projection_is_pca():
    g = torch.Generator().manual_seed(0)
    # points on a plane in 5-D: the first two principal components keep all the variance
    basis = torch.linalg.qr(torch.randn(5, 2, generator=g, dtype=torch.float64))[0]  # [5, 2] orthonormal
    coords = torch.randn(50, 2, generator=g, dtype=torch.float64) * torch.tensor([3.0, 1.0], dtype=torch.float64)
    means = coords @ basis.T + 7.0
    points, labels = _project_2d(means)
    assert points.shape == (50, 2) and labels[0].startswith("PC 1")
    # distances between points are preserved (a rotation of the centred plane)
    torch.testing.assert_close(torch.cdist(points, points), torch.cdist(means, means), rtol=1e-6, atol=1e-5)
    assert float(points[:, 0].var()) > float(points[:, 1].var())
    ones, _ = _project_2d(torch.arange(4.0).unsqueeze(1))
    assert ones[:, 1].abs().sum() == 0 and ones[:, 0].tolist() == [0.0, 1.0, 2.0, 3.0]
    two = torch.randn(6, 2)
    assert torch.equal(_project_2d(two)[0], two)
