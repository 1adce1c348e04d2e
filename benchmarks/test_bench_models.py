"""Whole models, fused backend vs the reference backend (same weights, same batch).

* SLCVAE training step (both phases, Adam steps included) at the SLCVAE
  paper's DailyDialog size: V=10,000, E=H=32, Z=8, 2 layers, B=64, T~20.
  Target >= 2.5x.
* SentenceVAE training step at the PTB size: V=10k, E=300, H=256, Z=16,
  B=32, T~40. Target >= 1.5x.
* Generation: 64 contexts x 10 samples, greedy, max_length 30 (sentences per
  second, i.e. the time ratio). Target >= 2x.

The reference backend is the plain PyTorch a careful user writes (unpacked
``nn.LSTM`` wherever that is exact, see ``fastvae.nn.rnn``), and both
candidates of a training step update with ``torch.optim.Adam(fused=True)``.
Each training step is also measured against the reference backend under
``torch.compile`` (default mode, inductor). Dynamo cannot take the whole step:
``nn.LSTM`` (RNN modules are not traced), ``.item()``/``int(tensor)`` in the
input checks, the generator-seeded noise and ``.backward()`` split it into
several graphs, so what is compiled is what a careful user compiles -- the
models' losses (``model.compile()``, and SLCVAE's ``labeling_loss``), with
backward through the compiled graphs and the fused Adam step left outside.
The compile time is not in the ratio: the first steps, compiling from an
empty inductor cache (what a user's first run pays; torch 2.13's cache also
hands AVX-512 code to an AVX2 build when ATEN_CPU_CAPABILITY changes between
runs), are reported apart in the table "torch.compile warm-up of the
reference backend (s)". The smoke run (``--benchmark-disable``) compiles and
checks the compiled step once as well.

The memory allocator: with glibc's default malloc a block above its mmap
threshold (at most 32 MB) is mapped fresh and page-faulted in on every
use, and the reference's [B*T, V] logits and their gradients (51 MB at both
model sizes) are such blocks: on one AVX-512 core they cost the reference
SLCVAE step about half its time (~100,000 page faults, ~170 ms). A careful
user can take that away (``MALLOC_MMAP_THRESHOLD_``/``MALLOC_TRIM_THRESHOLD_``,
or jemalloc/tcmalloc as PyTorch's CPU tuning guide advises), so the rows are
measured again in a child process with both thresholds raised -- no page
faults on either side -- as the rows whose baseline reads "reference
backend, malloc tuned": the speed-up a user who tuned the allocator gets.
"""

import copy
import itertools
import json
import os
import platform
import subprocess
import sys
import time

import pytest
import torch
from torch._inductor.utils import fresh_cache

from fastvae import SLCVAE, Batch, SentenceVAE

V = 10_000
REFERENCE, COMPILED = "reference backend", "reference backend, torch.compile"
WARMUP_TABLE = "torch.compile warm-up of the reference backend (s)"


def random_batch(B, T, seed, conditional):
    g = torch.Generator().manual_seed(seed)

    def tokens(length):
        lengths = torch.randint(max(1, length // 2), length + 1, (B,), generator=g)
        lengths[0] = length
        x = torch.randint(4, V, (B, length), generator=g)
        x[torch.arange(length).unsqueeze(0) >= lengths.unsqueeze(1)] = 0
        x[torch.arange(B), lengths - 1] = 3
        return x, lengths

    target, target_lengths = tokens(T)
    if not conditional:
        return Batch(target, target_lengths)
    context, context_lengths = tokens(T)
    return Batch(target, target_lengths, context, context_lengths)


def twins(cls, **kw):
    torch.manual_seed(0)
    fused = cls(V, backend="fused", **kw)
    ref = cls(V, backend="reference", **kw)
    ref.load_state_dict(fused.state_dict())
    return fused, ref


def adam(params, lr):
    return torch.optim.Adam(params, lr=lr, fused=True)


def slcvae_stepper(batch):
    """``model -> step``: one SLCVAE train step (both phases, a fused Adam each) on ``batch``."""

    def stepper(model):
        cvae, label = adam(model.cvae_parameters(), 1e-4), adam(model.labeling_parameters(), 1e-4)
        seeds = itertools.count(1)

        def step():
            gen = torch.Generator().manual_seed(next(seeds))
            out = model.train_step(batch, cvae, label, kl_weight=0.5, generator=gen)
            return (torch.tensor([out["loss"], out["label_nll"]]),)

        return step

    return stepper


def sentence_vae_stepper(batch):
    """``model -> step``: one SentenceVAE train step (fused Adam) on ``batch``."""

    def stepper(model):
        opt = adam(model.parameters(), 1e-3)
        seeds = itertools.count(1)

        def step():
            opt.zero_grad(set_to_none=True)
            out = model(batch, kl_weight=0.5, generator=torch.Generator().manual_seed(next(seeds)))
            out.loss.backward()
            opt.step()
            return (out.loss.detach().reshape(1),)

        return step

    return stepper


def compile_losses(model):
    """What a careful user compiles of a model's training step: its losses (forward, SLCVAE's labeling loss)."""
    model.compile()
    if isinstance(model, SLCVAE):
        model.labeling_loss = torch.compile(model.labeling_loss)


def compiled_reference(model, stepper):
    """``(step, first_s)``: ``model`` compiled (from an empty inductor cache) and warmed up, then put back at
    its start; ``first_s``: the first step's seconds, compiling included."""
    start = copy.deepcopy(model.state_dict())
    compile_losses(model)
    with fresh_cache():
        step = stepper(model)
        t0 = time.perf_counter()
        step()
        first_s = time.perf_counter() - t0
        step()  # a second step compiles whatever the first one's guards send back to dynamo
    model.load_state_dict(start)
    return stepper(model), first_s  # fresh optimizers and seeds: the same start as the fused candidate


def train_step_bench(ratio_bench, extra_table, baseline, cls, stepper, case, shape, target, **kw):
    fused, ref = twins(cls, **kw)
    first_s = None
    if baseline == COMPILED:
        ref_step, first_s = compiled_reference(ref, stepper)
    else:
        ref_step = stepper(ref)
    row = ratio_bench(case, shape, baseline, stepper(fused), ref_step, target=target)
    if row is not None and first_s is not None:
        step_s = row["baseline_ms"] / 1e3
        extra_table(
            WARMUP_TABLE,
            {
                "case": case,
                "shape": shape,
                "baseline": baseline,
                "first step (s)": f"{first_s:.1f}",
                "compiled step (ms)": f"{row['baseline_ms']:.1f}",
                "compile time (s)": f"{first_s - step_s:.1f}",
            },
        )


@pytest.mark.parametrize("baseline", [REFERENCE, COMPILED])
def test_slcvae_training_step(ratio_bench, extra_table, baseline):
    train_step_bench(
        ratio_bench, extra_table, baseline, SLCVAE,
        slcvae_stepper(random_batch(64, 20, seed=1, conditional=True)),
        "SLCVAE train step (both phases)", "DailyDialog V10k E=H32 Z8 L2 B64 T20", 2.5,
        embed_dim=32, hidden_size=32, latent_size=8, num_layers=2,
    )


@pytest.mark.parametrize("baseline", [REFERENCE, COMPILED])
def test_sentence_vae_training_step(ratio_bench, extra_table, baseline):
    train_step_bench(
        ratio_bench, extra_table, baseline, SentenceVAE,
        sentence_vae_stepper(random_batch(32, 40, seed=2, conditional=False)),
        "SentenceVAE train step", "PTB V10k E300 H256 Z16 B32 T40", 1.5,
        embed_dim=300, hidden_size=256, latent_size=16,
    )


def test_generation(ratio_bench):
    fused, ref = twins(SLCVAE, embed_dim=32, hidden_size=32, latent_size=8, num_layers=2)
    batch = random_batch(64, 20, seed=3, conditional=True)

    def generator_of(model):
        def gen():
            tokens, lengths = model.generate(
                batch.context, batch.context_lengths, num_samples=10, max_length=30,
                generator=torch.Generator().manual_seed(4),
            )
            return tokens.float(), lengths.float()

        return gen

    ratio_bench(
        "generation 64 x 10 greedy",
        "DailyDialog V10k E=H32 L2 max_len 30",
        REFERENCE,
        generator_of(fused),
        generator_of(ref),
        target=2.0,
    )


# Both thresholds above anything these models allocate (glibc reads them at start-up, hence a child process).
TUNED_MALLOC = {"MALLOC_MMAP_THRESHOLD_": str(2**32), "MALLOC_TRIM_THRESHOLD_": str(2**34)}
TUNED = ", malloc tuned"  # appended to the baseline of the rows measured so
TUNED_ROWS = "training_step and not compile or generation"  # this file's rows the child measures


def test_models_with_a_tuned_malloc(add_ratio_row, timing_enabled, tmp_path):
    """The training-step and generation rows again, in a child process whose malloc never maps fresh pages."""
    if not timing_enabled or platform.libc_ver()[0] != "glibc":
        return  # the smoke run times nothing; the thresholds are glibc's
    rows_out = tmp_path / "rows.json"
    env = {k: v for k, v in os.environ.items() if k != "FASTVAE_BENCH_SAVE"}
    env.update(TUNED_MALLOC, FASTVAE_BENCH_ROWS_OUT=str(rows_out))
    child = subprocess.run(
        [sys.executable, "-m", "pytest", __file__, "-q", "-p", "no:cacheprovider", "-k", TUNED_ROWS],
        env=env, capture_output=True, text=True, timeout=1800,
    )
    assert child.returncode == 0, child.stdout[-3000:] + child.stderr[-3000:]
    rows = json.loads(rows_out.read_text())
    assert sorted((r["case"], r["baseline"]) for r in rows) == [
        ("SLCVAE train step (both phases)", REFERENCE), ("SentenceVAE train step", REFERENCE),
        ("generation 64 x 10 greedy", REFERENCE)], rows
    for r in rows:
        add_ratio_row({**r, "baseline": r["baseline"] + TUNED})
