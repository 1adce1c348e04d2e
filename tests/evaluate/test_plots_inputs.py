"""Edge and bad inputs of fastvae.plots: the output path, numpy labels."""

import os

import pytest

from fastvae import SentenceVAE


def test_plots_write_png_files_only_and_take_numpy_labels(tmp_path):
    import numpy as np

    from fastvae.data import TextDataset, Vocab
    from fastvae.plots import plot_latent_projection

    vocab = Vocab.build([["a", "b", "c"]])
    data = TextDataset([["a", "b"], ["b", "c"], ["c"]], vocab)
    model = SentenceVAE(len(vocab), embed_dim=4, hidden_size=4, latent_size=3)
    for bad, words in ((tmp_path / "x.pdf", "must end in .png"), (tmp_path, "is a directory")):
        with pytest.raises(ValueError, match=words):
            plot_latent_projection(model, data, bad)
    labels = np.array([0, 1, 0])
    out = plot_latent_projection(model, data, tmp_path / "z.png", labels=list(labels))
    assert os.path.getsize(out) > 0
