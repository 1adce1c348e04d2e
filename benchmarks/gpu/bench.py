"""GPU benchmarks: fastvae's Triton path against PyTorch's own, on one CUDA device.

    python benchmarks/gpu/bench.py --out DIR [--dtypes fp32,bf16] [--deadline-s 300] [-k PATTERN]

Cases (the shapes of the CPU benchmarks in benchmarks/test_bench_*.py), each
in fp32 and bf16:

* LSTM forward+backward and forward-only, DailyDialog (B64 T20 E=H=32, 2
  layers) and Sentence-VAE (B32 T40 E300 H256): ``fastvae.nn.LSTM`` against
  ``nn.LSTM`` (cuDNN) and the ``lstm_ref`` loop;
* linear + cross-entropy forward+backward (N1280 V10k, H256 and H32) against
  ``F.cross_entropy(F.linear(...))``;
* the SLCVAE latent step (reparameterize + kl_label_loss, B64 Z8 and B512
  Z64) against the ``torch.randn`` idiom, and with eps given to both sides
  against the ``*_ref`` twins;
* a SLCVAE training step (both phases) and a SentenceVAE training step, the
  fused backend against the reference backend.

Every case first runs each candidate once and compares its outputs with
fastvae's (max abs difference / max(1, max |baseline|), within 1e-3 for fp32
and 1e-1 for bf16, whose rounding differs between implementations); then the
candidates are timed interleaved with CUDA events (medians). TF32 is off, so
fp32 is fp32 on both sides. ``DIR/bench.json`` is rewritten after every case;
a case that raises is recorded with its error. Exit status: 0 when every case
ran and agreed, 1 otherwise, 2 without a CUDA device.
"""

import argparse
import datetime
import fnmatch
import json
import math
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
TOLERANCE = {"fp32": 1e-3, "bf16": 1e-1}
ROUNDS = 15  # timed samples per candidate
MIN_SAMPLE_S = 2e-3  # a sample repeats a call until it lasts at least this long
RESULTS_NAME = "bench.json"
V = 10_000

FULL_SHAPES = {
    "lstm": {
        "DailyDialog": dict(B=64, T=20, E=32, H=32, layers=2),
        "Sentence-VAE": dict(B=32, T=40, E=300, H=256, layers=1),
    },
    "linear_ce": {"Sentence-VAE": dict(N=1280, H=256, V=V), "DailyDialog": dict(N=1280, H=32, V=V)},
    "latent": {"DailyDialog": dict(B=64, Z=8), "large": dict(B=512, Z=64)},
    "slcvae": dict(V=V, E=32, H=32, Z=8, layers=2, B=64, T=20),
    "sentence_vae": dict(V=V, E=300, H=256, Z=16, B=32, T=40),
}


class NoCuda(RuntimeError):
    """Raised when the GPU benchmarks are asked for on a machine without a CUDA device."""


def require_cuda():
    """The CUDA device to run on, or :class:`NoCuda` with a message saying why there is none."""
    if not torch.cuda.is_available():
        built = f"built with CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
        raise NoCuda(
            f"no CUDA device: torch.cuda.is_available() is False (torch {torch.__version__}, {built}). "
            "The GPU check needs a machine with an NVIDIA GPU; nothing was run."
        )
    return torch.device("cuda")


@dataclass
class Case:
    """One benchmark: ``build(device, dtype)`` returns {candidate name: callable}, fastvae first.

    Each callable takes no argument and returns a tuple of tensors (outputs
    and gradients); ``compare`` maps a baseline's name to the indices of the
    outputs it is compared on (default: all).
    """

    op: str
    shape: str
    dtype: str
    build: Callable
    compare: dict = None

    @property
    def name(self):
        return f"{self.op} | {self.shape} | {self.dtype}"


# ------------------------------------------------------------------ LSTM


class _RefLSTM(torch.nn.Module):
    """The stacked LSTM run on the ``fastvae.ops.lstm_ref`` loop (weights of an nn.LSTM)."""

    def __init__(self, lstm):
        super().__init__()
        self.lstm = lstm

    def forward(self, x):
        from fastvae.ops import lstm_ref

        m = self.lstm
        zeros = x.new_zeros(x.shape[1], m.hidden_size)
        for layer in range(m.num_layers):
            names = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
            x, _, _ = lstm_ref(x, zeros, zeros, *(getattr(m, f"{n}_l{layer}") for n in names))
        return x, None


def _lstm_fn(model, x, grad_y, backward):
    if not backward:
        model.eval()

        def forward():
            with torch.no_grad():
                return (model(x)[0],)

        return forward
    model.train()
    x = x.clone().requires_grad_()
    params = list(model.parameters())

    def step():
        x.grad = None
        for p in params:
            p.grad = None
        y = model(x)[0]
        y.backward(grad_y)
        return (y.detach(), x.grad, *(p.grad for p in params))

    return step


def _lstm_case(shape, spec, dtype_name, backward):
    def build(device, dtype):
        import fastvae

        torch.manual_seed(0)
        reference = torch.nn.LSTM(spec["E"], spec["H"], spec["layers"]).to(device, dtype)
        fused = fastvae.nn.LSTM(spec["E"], spec["H"], spec["layers"]).to(device, dtype)
        fused.load_state_dict(reference.state_dict())
        x = torch.randn(spec["T"], spec["B"], spec["E"], device=device, dtype=dtype)
        grad_y = torch.randn(spec["T"], spec["B"], spec["H"], device=device, dtype=dtype)
        return {
            "fastvae": _lstm_fn(fused, x, grad_y, backward),
            "nn.LSTM (cuDNN)": _lstm_fn(reference, x, grad_y, backward),
            "lstm_ref loop": _lstm_fn(_RefLSTM(reference), x, grad_y, backward),
        }

    label = f"{shape} B{spec['B']} T{spec['T']} E{spec['E']} H{spec['H']} L{spec['layers']}"
    return Case("LSTM fwd+bwd" if backward else "LSTM fwd (no grad)", label, dtype_name, build)


# ------------------------------------------------------------ linear CE


def _linear_ce_case(shape, spec, dtype_name):
    def build(device, dtype):
        from fastvae.ops import linear_cross_entropy

        gen = torch.Generator().manual_seed(0)
        N, H, Vs = spec["N"], spec["H"], spec["V"]
        hidden = torch.randn(N, H, generator=gen).to(device, dtype).requires_grad_()
        weight = (torch.randn(Vs, H, generator=gen) / H**0.5).to(device, dtype).requires_grad_()
        bias = torch.zeros(Vs, device=device, dtype=dtype, requires_grad=True)
        target = torch.randint(0, Vs, (N,), generator=gen)
        target[torch.rand(N, generator=gen) < 0.1] = -100
        target = target.to(device)
        params = (hidden, weight, bias)

        def step_of(loss_fn):
            def step():
                for p in params:
                    p.grad = None
                loss = loss_fn()
                loss.backward()
                return (loss.detach().float().reshape(1), *(p.grad for p in params))

            return step

        return {
            "fastvae": step_of(lambda: linear_cross_entropy(hidden, weight, bias, target, ignore_index=-100)),
            "F.cross_entropy(F.linear)": step_of(
                lambda: F.cross_entropy(F.linear(hidden, weight, bias), target, ignore_index=-100)
            ),
        }

    return Case("linear CE fwd+bwd (mean)", f"{shape} N{spec['N']} H{spec['H']} V{spec['V']}", dtype_name, build)


# ---------------------------------------------------------------- latent


def _latent_case(shape, spec, dtype_name, eps_given):
    """One SLCVAE latent step. Sampled: fastvae's in-kernel Philox noise against the ``torch.randn`` idiom,
    compared on what does not depend on the noise (kl, the prior's gradients). Eps given: both sides get the
    same eps, fastvae against the ``*_ref`` twins, everything compared."""
    def build(device, dtype):
        from fastvae.ops import kl_label_loss, kl_label_loss_ref, reparameterize, reparameterize_ref

        torch.manual_seed(0)
        B, Z = spec["B"], spec["Z"]
        leaves = [(torch.randn(B, Z) * 0.5).to(device, dtype).requires_grad_() for _ in range(4)]
        z_label = torch.randn(B, Z).to(device, dtype)
        eps = torch.randn(B, Z).to(device, dtype) if eps_given else None

        def step_of(reparam, loss, noise):
            mu_q, logvar_q, mu_p, logvar_p = leaves

            def step():
                for t in leaves:
                    t.grad = None
                z = reparam(mu_q, logvar_q, noise())
                total, kl, _ = loss(mu_q, logvar_q, mu_p, logvar_p, z, z_label, 1.0, 0.5)
                total.mean().backward()
                return (total.detach(), kl.detach(), *(t.grad for t in leaves))

            return step

        if eps_given:
            return {
                "fastvae": step_of(reparameterize, kl_label_loss, lambda: eps),
                "*_ref, eps given": step_of(reparameterize_ref, kl_label_loss_ref, lambda: eps),
            }
        return {
            "fastvae": step_of(reparameterize, kl_label_loss, lambda: None),
            "torch.randn idiom": step_of(reparameterize_ref, kl_label_loss_ref, lambda: torch.randn_like(leaves[0])),
        }

    op = "reparameterize + kl_label_loss fwd+bwd" + (" (eps given)" if eps_given else "")
    compare = None if eps_given else {"torch.randn idiom": (1, 4, 5)}  # kl, d mu_p, d logvar_p
    return Case(op, f"{shape} B{spec['B']} Z{spec['Z']}", dtype_name, build, compare)


# ---------------------------------------------------------------- models


def _random_batch(B, T, vocab, seed, conditional):
    from fastvae import Batch

    g = torch.Generator().manual_seed(seed)

    def tokens(length):
        lengths = torch.randint(max(1, length // 2), length + 1, (B,), generator=g)
        lengths[0] = length
        x = torch.randint(4, vocab, (B, length), generator=g)
        x[torch.arange(length).unsqueeze(0) >= lengths.unsqueeze(1)] = 0
        x[torch.arange(B), lengths - 1] = 3
        return x, lengths

    target, target_lengths = tokens(T)
    if not conditional:
        return Batch(target, target_lengths)
    context, context_lengths = tokens(T)
    return Batch(target, target_lengths, context, context_lengths)


def _model_twins(cls, spec, device, dtype, **kw):
    torch.manual_seed(0)
    fused = cls(spec["V"], backend="fused", embed_dim=spec["E"], hidden_size=spec["H"], latent_size=spec["Z"], **kw)
    ref = cls(spec["V"], backend="reference", embed_dim=spec["E"], hidden_size=spec["H"], latent_size=spec["Z"], **kw)
    ref.load_state_dict(fused.state_dict())
    return fused.to(device, dtype), ref.to(device, dtype)


def _slcvae_case(spec, dtype_name):
    def build(device, dtype):
        from fastvae import SLCVAE

        models = _model_twins(SLCVAE, spec, device, dtype, num_layers=spec["layers"])
        batch = _random_batch(spec["B"], spec["T"], spec["V"], 1, conditional=True).to(device)

        def stepper(model):
            cvae = torch.optim.Adam(model.cvae_parameters(), lr=1e-4)
            label = torch.optim.Adam(model.labeling_parameters(), lr=1e-4)
            seed = [0]

            def step():
                seed[0] += 1
                out = model.train_step(batch, cvae, label, kl_weight=0.5,
                                       generator=torch.Generator().manual_seed(seed[0]))
                return (torch.tensor([out["loss"], out["label_nll"]]),)

            return step

        return {"fastvae": stepper(models[0]), "reference backend": stepper(models[1])}

    label = f"DailyDialog V{spec['V']} E=H{spec['H']} Z{spec['Z']} L{spec['layers']} B{spec['B']} T{spec['T']}"
    return Case("SLCVAE train step (both phases)", label, dtype_name, build)


def _sentence_vae_case(spec, dtype_name):
    def build(device, dtype):
        from fastvae import SentenceVAE

        models = _model_twins(SentenceVAE, spec, device, dtype)
        batch = _random_batch(spec["B"], spec["T"], spec["V"], 2, conditional=False).to(device)

        def stepper(model):
            opt = torch.optim.Adam(model.parameters(), lr=1e-3)
            seed = [0]

            def step():
                seed[0] += 1
                opt.zero_grad(set_to_none=True)
                out = model(batch, kl_weight=0.5, generator=torch.Generator().manual_seed(seed[0]))
                out.loss.backward()
                opt.step()
                return (out.loss.detach().float().reshape(1),)

            return step

        return {"fastvae": stepper(models[0]), "reference backend": stepper(models[1])}

    label = f"PTB V{spec['V']} E{spec['E']} H{spec['H']} Z{spec['Z']} B{spec['B']} T{spec['T']}"
    return Case("SentenceVAE train step", label, dtype_name, build)


def cases(shapes=None, dtypes=tuple(DTYPES)):
    """Every benchmark case, for ``shapes`` (default: the benchmark shapes) and each dtype name."""
    shapes = shapes or FULL_SHAPES
    out = []
    for dt in dtypes:
        for backward in (True, False):
            out += [_lstm_case(name, spec, dt, backward) for name, spec in shapes["lstm"].items()]
        out += [_linear_ce_case(name, spec, dt) for name, spec in shapes["linear_ce"].items()]
        for eps_given in (False, True):
            out += [_latent_case(name, spec, dt, eps_given) for name, spec in shapes["latent"].items()]
        out.append(_slcvae_case(shapes["slcvae"], dt))
        out.append(_sentence_vae_case(shapes["sentence_vae"], dt))
    return out


# ------------------------------------------------------- checking and timing


def relative_difference(got, expected):
    """max |got - expected| / max(1, max |expected|) (in fp32); inf on a shape mismatch or a NaN."""
    if got.shape != expected.shape:
        return float("inf")
    if got.numel() == 0:
        return 0.0
    got, expected = got.float(), expected.float()
    diff = (got - expected).abs().max().item()
    if diff != diff:  # NaN
        return float("inf")
    return diff / max(1.0, expected.abs().max().item())


def compare(fast_out, base_out, indices=None):
    """The largest :func:`relative_difference` over the compared outputs (all when ``indices`` is None)."""
    if len(fast_out) != len(base_out):
        return float("inf")
    picked = range(len(fast_out)) if indices is None else indices
    return max((relative_difference(fast_out[i], base_out[i]) for i in picked), default=0.0)


def _synchronize(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _sample_s(fn, n, device):
    """Seconds per call over ``n`` calls: CUDA events on a GPU (the GPU timeline, launch gaps included)."""
    _synchronize(device)
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(n):
            fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1e3 / n
    start = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - start) / n


def interleaved_medians(candidates, device, rounds=ROUNDS, min_sample_s=MIN_SAMPLE_S):
    """Median seconds per call of each callable, samples interleaved (A B, B A, ...) after a warm-up."""
    repeats = {}
    for name, fn in candidates.items():
        per_call = min(_sample_s(fn, 1, device) for _ in range(3))
        repeats[name] = max(1, int(min_sample_s / max(per_call, 1e-7)) + 1)
    samples = {name: [] for name in candidates}
    names = list(candidates)
    for r in range(rounds):
        for name in names if r % 2 == 0 else reversed(names):
            samples[name].append(_sample_s(candidates[name], repeats[name], device))
    return {name: statistics.median(s) for name, s in samples.items()}


def run_case(case, device, timing=True, rounds=ROUNDS):
    """Rows (one per baseline) of ``case``: agreement with fastvae and, if ``timing``, the medians."""
    candidates = case.build(device, DTYPES[case.dtype])
    outputs = {name: fn() for name, fn in candidates.items()}
    _synchronize(device)
    medians = interleaved_medians(candidates, device, rounds) if timing else {}
    fast_name, *baselines = candidates
    rows = []
    for name in baselines:
        error = compare(outputs[fast_name], outputs[name], (case.compare or {}).get(name))
        row = {
            "op": case.op,
            "shape": case.shape,
            "dtype": case.dtype,
            "baseline": name,
            "max_rel_diff": error if math.isfinite(error) else None,  # None: NaN or a shape mismatch
            "agree": error <= TOLERANCE[case.dtype],
        }
        if timing:
            row.update(
                fastvae_ms=medians[fast_name] * 1e3,
                baseline_ms=medians[name] * 1e3,
                speedup=medians[name] / medians[fast_name],
            )
        rows.append(row)
    return rows


# ---------------------------------------------------------------- results


def machine_info(device, argv):
    info = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(["python", "benchmarks/gpu/bench.py", *argv]),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "tf32": {"matmul": torch.backends.cuda.matmul.allow_tf32, "cudnn": torch.backends.cudnn.allow_tf32},
        "cudnn_benchmark": torch.backends.cudnn.benchmark,
        "rounds": ROUNDS,
    }
    try:
        import triton

        info["triton"] = triton.__version__
    except ImportError:
        info["triton"] = None
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info["gpu"] = props.name
        info["capability"] = f"{props.major}.{props.minor}"
        info["multiprocessors"] = props.multi_processor_count
    return info


def write_results(path, info, rows, errors, complete):
    """Write the results file atomically (its folder is created)."""
    record = {"machine": info, "complete": complete, "rows": rows, "errors": errors}
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    text = json.dumps(record, indent=1, allow_nan=False, default=str) + "\n"  # strict JSON: no NaN/inf
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)
    return record


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description="fastvae GPU benchmarks (fused Triton path vs PyTorch)")
    parser.add_argument("--out", required=True, help=f"folder for {RESULTS_NAME}")
    parser.add_argument("--dtypes", default=",".join(DTYPES), help="comma-separated, of: %(default)s")
    parser.add_argument("--deadline-s", type=float, default=None,
                        help="start no case after this many seconds (the file says which ran)")
    parser.add_argument("-k", dest="pattern", default="*", help="only cases whose name matches this glob")
    args = parser.parse_args(argv)
    args.dtypes = [d.strip() for d in args.dtypes.split(",") if d.strip()]
    unknown = [d for d in args.dtypes if d not in DTYPES]
    if unknown or not args.dtypes:
        parser.error(f"--dtypes takes names from {', '.join(DTYPES)}, got {unknown or 'nothing'}")
    if args.deadline_s is not None and args.deadline_s <= 0:
        parser.error(f"--deadline-s must be positive, got {args.deadline_s}")
    return args


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    try:
        device = require_cuda()
    except NoCuda as exc:
        print(f"bench.py: {exc}", file=sys.stderr)
        return 2
    start = time.monotonic()
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cudnn.benchmark = True
    info = machine_info(device, argv)
    path = os.path.join(args.out, RESULTS_NAME)
    selected = [c for c in cases(dtypes=args.dtypes) if fnmatch.fnmatch(c.name, f"*{args.pattern}*")]
    rows, errors, complete = [], [], True
    for k, case in enumerate(selected):
        if args.deadline_s is not None and time.monotonic() - start > args.deadline_s:
            errors += [{"case": c.name, "error": "not run: deadline reached"} for c in selected[k:]]
            complete = False
            break
        try:
            new = run_case(case, device)
        except Exception as exc:  # recorded, and the next case runs
            errors.append({"case": case.name, "error": f"{type(exc).__name__}: {exc}"})
            print(f"ERROR   {case.name}: {type(exc).__name__}: {exc}", flush=True)
        else:
            rows += new
            for r in new:
                verdict = "ok" if r["agree"] else "DIFFERS"
                print(f"{verdict:7s} {case.name} vs {r['baseline']}: {r['speedup']:.2f}x "
                      f"({r['baseline_ms']:.3f} / {r['fastvae_ms']:.3f} ms), diff {r['max_rel_diff']}", flush=True)
        write_results(path, info, rows, errors, complete=False)
    write_results(path, info, rows, errors, complete)
    ok = complete and not errors and all(r["agree"] for r in rows)
    print(f"{len(rows)} rows, {len(errors)} errors; results: {path}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
