"""fastvae.train: KL-weight schedules and atomic, exactly-resumable checkpoints."""

import math
import os
import random

import pytest
import torch

import batches

from fastvae import SLCVAE
from fastvae.train import (
    ConstantSchedule,
    CyclicalSchedule,
    LinearSchedule,
    LogisticSchedule,
    load_checkpoint,
    make_schedule,
    save_checkpoint,
    schedule_from_dict,
)

V, E, H, Z = 30, 8, 8, 4


# ---------------------------------------------------------------- schedules


def test_logistic_values():
    s = LogisticSchedule()  # k=0.0025, x0=2500
    assert s(2500) == pytest.approx(0.5)
    assert s(0) == pytest.approx(1.0 / (1.0 + math.exp(6.25)))
    assert s(3000) == pytest.approx(1.0 / (1.0 + math.exp(-1.25)))
    assert LogisticSchedule(k=0.01, x0=100, max_weight=0.4)(100) == pytest.approx(0.2)
    values = [s(step) for step in range(0, 20001, 250)]
    assert all(a < b or b == 1.0 for a, b in zip(values, values[1:]))  # monotone
    assert s(20000) == pytest.approx(1.0, abs=1e-7)
    # no overflow for huge |k * (step - x0)|, and saturation to exactly 0 / max
    steep = LogisticSchedule(k=1e3, x0=1e6, max_weight=2.0)
    assert steep(0) == 0.0
    assert steep(1e12) == 2.0


def test_linear_values():
    s = LinearSchedule(100, start=0.2, max_weight=1.0)
    assert s(0) == pytest.approx(0.2)
    assert s(50) == pytest.approx(0.6)
    assert s(100) == pytest.approx(1.0)
    assert s(10**6) == pytest.approx(1.0)
    assert LinearSchedule(0, max_weight=0.7)(0) == pytest.approx(0.7)  # no warm-up


def test_cyclical_values():
    s = CyclicalSchedule(100, ratio=0.5, max_weight=2.0)
    for cycle in range(3):
        base = 100 * cycle
        assert s(base) == 0.0  # resets at each cycle start
        assert s(base + 25) == pytest.approx(1.0)
        assert s(base + 50) == pytest.approx(2.0)  # reaches max after ratio * cycle
        assert s(base + 75) == pytest.approx(2.0)  # and holds
        assert s(base + 99) == pytest.approx(2.0)
    assert CyclicalSchedule(10, ratio=1.0)(5) == pytest.approx(0.5)


def test_constant():
    s = ConstantSchedule(0.3)
    assert [s(t) for t in (0, 1, 10**9)] == [0.3, 0.3, 0.3]


@pytest.mark.parametrize(
    "name, kwargs, match",
    [
        ("warmup", {}, "unknown KL schedule"),
        ("linear", {"warmup_steps": -1}, "warmup_steps"),
        ("linear", {}, "bad arguments"),
        ("logistic", {"k": 0}, "k must be > 0"),
        ("logistic", {"kk": 1}, "bad arguments"),
        ("cyclical", {"cycle_steps": 0}, "cycle_steps"),
        ("cyclical", {"cycle_steps": 10, "ratio": 0.0}, "ratio"),
        ("cyclical", {"cycle_steps": 10, "ratio": 1.5}, "ratio"),
        ("constant", {"weight": float("nan")}, "finite"),
        ("constant", {"weight": "1"}, "number"),
        # finite in Python, inf in float32: refused here, not at the first training step
        ("constant", {"weight": 1e300}, "weight must be at most"),
        ("logistic", {"max_weight": 1e39}, "max_weight must be at most"),
        ("linear", {"warmup_steps": 5, "start": 1e300}, "start must be at most"),
    ],
)
def test_factory_errors(name, kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_schedule(name, **kwargs)


def test_negative_step_rejected():
    with pytest.raises(ValueError, match="step"):
        ConstantSchedule(1.0)(-1)


@pytest.mark.parametrize(
    "schedule",
    [LogisticSchedule(k=0.01, x0=300, max_weight=0.5), LinearSchedule(40, start=0.1), CyclicalSchedule(70, 0.25), ConstantSchedule(0.2)],
)
def test_dict_round_trip(schedule):
    d = schedule.to_dict()
    rebuilt = [make_schedule(**d), schedule_from_dict(d), type(schedule).from_dict(d)]
    for other in rebuilt:
        assert other == schedule
        assert [other(t) for t in (0, 13, 35, 300, 1000)] == [schedule(t) for t in (0, 13, 35, 300, 1000)]
    with pytest.raises(ValueError, match="name"):
        schedule_from_dict({k: v for k, v in d.items() if k != "name"})


# ---------------------------------------------------------------- checkpoints


def make_batch(B=5, Tc=7, Tx=6, seed=0):
    return batches.make_batch(V, B=B, Tc=Tc, Tx=Tx, seed=seed)


def build(seed=1, backend="reference"):
    torch.manual_seed(seed)
    model = SLCVAE(V, embed_dim=E, hidden_size=H, latent_size=Z, num_layers=1, backend=backend)
    opts = {
        "cvae": torch.optim.Adam(model.cvae_parameters(), lr=1e-2),
        "label": torch.optim.Adam(model.labeling_parameters(), lr=1e-2),
    }
    return model, opts


def step(model, opts, batch):
    return model.train_step(batch, opts["cvae"], opts["label"], kl_weight=0.5)


@pytest.mark.parametrize("backend", ["reference", "fused"])
def test_checkpoint_exact_resume(tmp_path, backend):
    batch = make_batch()
    model, opts = build(backend=backend)
    for _ in range(2):
        step(model, opts, batch)
    path = tmp_path / "ckpt.pt"
    schedule = LogisticSchedule()
    save_checkpoint(path, model=model, optimizers=opts, step=2, epoch=1, extra={"schedule": schedule.to_dict()})
    py_after_save = random.random()
    expected = step(model, opts, batch)  # (a) the original run goes on

    # (b) a fresh model and optimizers (different init, different RNG), restored
    fresh, fresh_opts = build(seed=123, backend=backend)
    torch.manual_seed(999)
    random.seed(999)
    info = load_checkpoint(path, fresh, fresh_opts)
    assert info["step"] == 2 and info["epoch"] == 1 and info["model"] is fresh
    assert schedule_from_dict(info["extra"]["schedule"]) == schedule
    assert random.random() == py_after_save  # python RNG restored
    got = step(fresh, fresh_opts, batch)  # no explicit generator: the global RNG matters
    assert got == expected
    for p, q in zip(model.parameters(), fresh.parameters()):
        assert torch.equal(p, q)

    # the rebuilt-from-config path, with the optimizers built afterwards
    info = load_checkpoint(path)
    rebuilt = info["model"]
    assert isinstance(rebuilt, SLCVAE) and rebuilt.config == model.config
    rebuilt_opts = {
        "cvae": torch.optim.Adam(rebuilt.cvae_parameters(), lr=1e-2),
        "label": torch.optim.Adam(rebuilt.labeling_parameters(), lr=1e-2),
    }
    load_checkpoint(path, rebuilt, rebuilt_opts)
    assert step(rebuilt, rebuilt_opts, batch) == expected


def test_checkpoint_without_rng_restore_differs(tmp_path):
    """Guards the exact-resume test: the RNG really matters to train_step."""
    batch = make_batch()
    model, opts = build()
    step(model, opts, batch)
    path = tmp_path / "ckpt.pt"
    save_checkpoint(path, model=model, optimizers=opts, step=1, epoch=0)
    expected = step(model, opts, batch)
    fresh, fresh_opts = build(seed=5)
    torch.manual_seed(12345)
    load_checkpoint(path, fresh, fresh_opts, restore_rng=False)
    assert step(fresh, fresh_opts, batch)["loss"] != expected["loss"]


def test_optimizer_name_mismatch(tmp_path):
    model, opts = build()
    path = tmp_path / "ckpt.pt"
    save_checkpoint(path, model=model, optimizers=opts, step=0, epoch=0)
    with pytest.raises(ValueError, match="optimizers"):
        load_checkpoint(path, model, {"cvae": opts["cvae"]})
    with pytest.raises(ValueError, match="optimizers"):
        load_checkpoint(path, model, {"cvae": opts["cvae"], "labels": opts["label"]})


def _saved_state(path):
    return load_checkpoint(path, restore_rng=False)


@pytest.mark.parametrize("error", [KeyboardInterrupt, RuntimeError])
def test_atomic_save_survives_failure_mid_write(tmp_path, monkeypatch, error):
    model, opts = build()
    path = tmp_path / "ckpt.pt"
    save_checkpoint(path, model=model, optimizers=opts, step=7, epoch=3)
    good = path.read_bytes()
    step(model, opts, make_batch())  # the model changes, then the next save breaks

    def broken_save(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04 partial zip")
        raise error("interrupted mid-save")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(error, match="interrupted"):
        save_checkpoint(path, model=model, optimizers=opts, step=8, epoch=3)
    monkeypatch.undo()

    assert path.read_bytes() == good
    assert os.listdir(tmp_path) == ["ckpt.pt"]  # no temp file left behind
    assert _saved_state(path)["step"] == 7


def test_atomic_save_survives_failure_at_replace(tmp_path, monkeypatch):
    model, opts = build()
    path = tmp_path / "ckpt.pt"
    save_checkpoint(path, model=model, optimizers=opts, step=1, epoch=0)

    def broken_replace(src, dst):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, model=model, optimizers=opts, step=2, epoch=0)
    monkeypatch.undo()
    assert os.listdir(tmp_path) == ["ckpt.pt"]
    assert _saved_state(path)["step"] == 1


def test_corrupt_truncated_and_foreign_files(tmp_path):
    model, opts = build()
    path = tmp_path / "ckpt.pt"
    save_checkpoint(path, model=model, optimizers=opts, step=0, epoch=0)
    data = path.read_bytes()

    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(data[: len(data) // 2])
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(data[:40] + b"\x00" * (len(data) - 40))
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(2)}, foreign)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint at all")
    for bad in (truncated, corrupt, foreign, garbage):
        with pytest.raises(ValueError, match=str(bad.name)):
            load_checkpoint(bad)


def test_a_flipped_byte_in_the_tensor_data_is_caught(tmp_path):
    # the zip records carry CRC-32s that torch.load does not check: this used to load silently
    import io
    import struct
    import zipfile

    from fastvae.train.checkpoint import MAGIC

    model, opts = build()
    path = tmp_path / "ckpt.pt"
    save_checkpoint(path, model=model, optimizers=opts, step=0, epoch=0)
    data = bytearray(path.read_bytes())
    records = zipfile.ZipFile(io.BytesIO(bytes(data[len(MAGIC):]))).infolist()
    biggest = max((r for r in records if "/data/" in r.filename), key=lambda r: r.file_size)
    header = len(MAGIC) + biggest.header_offset  # local header: 30 bytes, then the name and extra field
    name_len, extra_len = struct.unpack("<HH", bytes(data[header + 26 : header + 30]))
    data[header + 30 + name_len + extra_len + biggest.file_size // 2] ^= 0x10
    flipped = tmp_path / "flipped.pt"
    flipped.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"flipped.pt.*fails its CRC-32 check"):
        load_checkpoint(flipped)
    load_checkpoint(path)  # the intact file still loads
    # damaged zip headers raise other errors inside zipfile (encrypted flag: RuntimeError; unknown
    # compression: NotImplementedError; deflate: zlib.error): each is the same named ValueError
    entry = bytes(data).index(b"PK\x01\x02")  # the first central-directory entry
    for offset, value in ((8, b"\x01\x00"), (10, b"\x01\x00"), (10, b"\x08\x00")):
        damaged = bytearray(path.read_bytes())
        damaged[entry + offset : entry + offset + 2] = value
        flipped.write_bytes(bytes(damaged))
        with pytest.raises(ValueError, match="flipped.pt' is a corrupt"):
            load_checkpoint(flipped)


def test_missing_file(tmp_path):
    missing = tmp_path / "nope.pt"
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        load_checkpoint(missing)


def test_model_class_mismatch(tmp_path):
    from fastvae import CVAE

    model, opts = build()
    path = tmp_path / "ckpt.pt"
    save_checkpoint(path, model=model, optimizers=opts, step=0, epoch=0)
    other = CVAE(V, embed_dim=E, hidden_size=H, latent_size=Z, num_layers=1, backend="reference")
    with pytest.raises(ValueError, match="SLCVAE"):
        load_checkpoint(path, other)
