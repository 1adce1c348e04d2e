"""The layout of a run directory: the names of what ``fastvae train`` (the CLI and the Trainer) writes into
it, which the other commands read back. The one place these names are written::

    run.json             the run: model name, corpus, vocabulary and training settings (fastvae train)
    vocab.json           the training data's vocabulary (fastvae train)
    checkpoint.pt        the latest training state, for a resume (Trainer)
    model/               the best model by validation loss: a model folder that stands alone (Trainer)
    metrics.csv          one row per logging window and per validation (Trainer)
    tb/                  TensorBoard events (Trainer)
    training_curves.png  the curves of metrics.csv (Trainer, fastvae plot)
    latent.png           the validation data's posterior means in 2-D (Trainer, fastvae plot)
    eval_<split>.json    fastvae evaluate's report
"""

import os

RUN_FILE = "run.json"
VOCAB_FILE = "vocab.json"
CHECKPOINT_FILE = "checkpoint.pt"
MODEL_DIR = "model"
METRICS_FILE = "metrics.csv"
TENSORBOARD_DIR = "tb"
CURVES_PLOT = "training_curves.png"
LATENT_PLOT = "latent.png"

# what training writes and reads back: no other command may write over these
RUN_OUTPUTS = (RUN_FILE, VOCAB_FILE, CHECKPOINT_FILE, MODEL_DIR, METRICS_FILE, TENSORBOARD_DIR)


def eval_report_name(split):
    """``eval_<split>.json``: where ``fastvae evaluate`` writes its report by default."""
    return f"eval_{split}.json"


def in_run(run_dir, name):
    """The path of ``name`` (one of this module's names) inside ``run_dir``."""
    return os.path.join(os.fspath(run_dir), name)
