"""A tiny one-to-many corpus and model factory shared by the trainer tests and their subprocess scripts."""

import os

import torch

from fastvae import CVAE, SLCVAE, Seq2Seq, SentenceVAE
from fastvae.data import Example, TextDataset, Vocab
from fastvae.train import TrainConfig

# the folder of this module (tests/): a script run in a subprocess puts it on sys.path to import it
TESTS_DIR = os.path.dirname(os.path.abspath(__file__))

SUBJECTS = ["the cat", "a dog", "my friend", "the old man", "her sister", "the bird"]
VERBS = ["sees", "likes", "finds", "follows"]
OBJECTS = ["the ball", "a house", "the river", "some bread"]


def examples(n_sources=24, seed=0):
    """``n_sources`` sources with two paraphrase targets each (a one-to-many group per source)."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for group in range(n_sources):
        s = SUBJECTS[int(torch.randint(len(SUBJECTS), (1,), generator=g))]
        v = VERBS[int(torch.randint(len(VERBS), (1,), generator=g))]
        o = OBJECTS[int(torch.randint(len(OBJECTS), (1,), generator=g))]
        source = f"{s} {v} {o}".split()
        out.append(Example(source=source, target=f"{o} is what {s} {v}".split(), group=group))
        out.append(Example(source=source, target=f"{s} {v} {o} today".split(), group=group))
    return out


def datasets(conditional=True, n_train=24, n_valid=6):
    train, valid = examples(n_train, seed=0), examples(n_valid, seed=1)
    vocab = Vocab.build([t for ex in train + valid for t in (ex.source, ex.target)])
    if not conditional:
        train, valid = [ex.target for ex in train], [ex.target for ex in valid]
    return TextDataset(train, vocab), TextDataset(valid, vocab), vocab


def model(cls, vocab, seed=0, **kw):
    torch.manual_seed(seed)
    size = dict(embed_dim=12, hidden_size=16, num_layers=1)
    if cls is not Seq2Seq:
        size["latent_size"] = 4
    return cls(len(vocab), **size, **kw)


def config(**kw):
    base = dict(
        epochs=2,
        batch_size=8,
        lr=5e-3,
        kl_schedule={"name": "linear", "warmup_steps": 10},
        log_every=2,
        progress=False,
        tensorboard=False,
        plots=False,
        patience=None,
    )
    base.update(kw)
    return TrainConfig(**base)


MODELS = {"SentenceVAE": SentenceVAE, "CVAE": CVAE, "SLCVAE": SLCVAE, "Seq2Seq": Seq2Seq}
