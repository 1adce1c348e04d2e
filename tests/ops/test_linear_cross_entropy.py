"""fastvae.ops.linear_cross_entropy (C++ CPU kernel) against linear_cross_entropy_ref.

The CPU kernel works in chunks of 64 rows (H <= 64) or 256 rows (wider
hidden states) and vocabulary blocks of 256 rows of weight (fewer rows per
chunk above V = 16384), so the odd shapes below straddle both: N = 300,
V = 1100, V = 20000, and H = 80 with N = 300 (a full 256-row chunk, then 44).
"""

import textwrap

import pytest
import torch

import fastvae
from fastvae.ops import linear_cross_entropy, linear_cross_entropy_ref

from .helpers import run_at_isa, run_python, second_order

pytestmark = pytest.mark.skipif(not fastvae.HAS_EXTENSION, reason="fastvae._C is not built")

REDUCTIONS = ["mean", "sum", "none"]
TOL = {torch.float32: 1e-4, torch.float64: 1e-10}


def make_inputs(N, H, V, dtype=torch.float32, bias=True, ignore_every=0, ignore_index=-100, seed=0):
    """hidden [N, H], weight [V, H], bias [V] or None, target [N] (every k-th row ignore_index)."""
    gen = torch.Generator().manual_seed(seed)
    hidden = torch.randn(N, H, generator=gen, dtype=torch.float64).to(dtype)
    weight = (torch.randn(V, H, generator=gen, dtype=torch.float64) / H**0.5).to(dtype)
    b = torch.randn(V, generator=gen, dtype=torch.float64).to(dtype) if bias else None
    target = torch.randint(0, V, (N,), generator=gen)
    if ignore_every:
        target[::ignore_every] = ignore_index
    return hidden, weight, b, target


def leaves(*tensors):
    return [None if t is None else t.detach().clone().requires_grad_() for t in tensors]


def assert_close(actual, expected, tol, what=""):
    """|actual - expected| <= tol * (|expected| + max(1, max|expected|))."""
    scale = max(1.0, expected.abs().max().item()) if expected.numel() else 1.0
    torch.testing.assert_close(actual, expected, rtol=tol, atol=tol * scale, msg=lambda m: f"{what}: {m}")


def run_both(hidden, weight, bias, target, reduction="mean", ignore_index=-100, grad_out=None):
    """Loss and gradients of the fused op and of the reference, same inputs and upstream gradient."""
    results = []
    for fn in (linear_cross_entropy, linear_cross_entropy_ref):
        h, w, b = leaves(hidden, weight, bias)
        loss = fn(h, w, b, target, ignore_index=ignore_index, reduction=reduction)
        g = torch.ones_like(loss) if grad_out is None else grad_out
        loss.backward(g)
        results.append((loss.detach(), h.grad, w.grad, None if b is None else b.grad))
    return results


def check_against_ref(hidden, weight, bias, target, reduction="mean", ignore_index=-100, grad_out=None):
    fused, ref = run_both(hidden, weight, bias, target, reduction, ignore_index, grad_out)
    tol = TOL[hidden.dtype]
    for name, a, b in zip(("loss", "d_hidden", "d_weight", "d_bias"), fused, ref):
        if b is None:
            assert a is None, name
            continue
        assert a.shape == b.shape and a.dtype == b.dtype, name
        assert_close(a, b, tol, name)
    return fused


# ------------------------------------------------------------------ values


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["fp32", "fp64"])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_matches_ref(reduction, dtype):
    check_against_ref(*make_inputs(300, 24, 1100, dtype, ignore_every=7), reduction=reduction)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_vocabulary_splits_chunks(reduction):
    """V = 20000: fewer rows per chunk (the [V, C] buffer is capped), several chunks and blocks."""
    check_against_ref(*make_inputs(300, 8, 20000, ignore_every=5, seed=1), reduction=reduction)


@pytest.mark.parametrize(
    "N,H,V",
    [(1, 16, 50), (5, 3, 1), (257, 9, 1025), (513, 4, 7), (33, 1, 2048), (300, 80, 700)],
    ids=["N1", "V1", "N-and-V-past-a-chunk", "several-chunks", "H1-four-blocks", "wide-H-two-chunks"],
)
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_odd_shapes(N, H, V, reduction):
    check_against_ref(*make_inputs(N, H, V, ignore_every=3, seed=N), reduction=reduction)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_without_bias(reduction):
    fused = check_against_ref(*make_inputs(70, 12, 300, bias=False, ignore_every=4), reduction=reduction)
    assert fused[3] is None


@pytest.mark.parametrize("threads", [1, 2])
def test_thread_counts(threads):
    """The softmax loops split columns / vocabulary rows over threads, the GEMMs their rows."""
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        for reduction in REDUCTIONS:
            check_against_ref(*make_inputs(300, 24, 1100, ignore_every=7, seed=18), reduction=reduction)
    finally:
        torch.set_num_threads(old)


def test_realistic_shape_fp32():
    """Sentence-VAE scale (smaller N): long softmax rows, rounding in fp32."""
    check_against_ref(*make_inputs(160, 256, 10000, ignore_every=9, seed=3))


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_all_targets_ignored(reduction):
    hidden, weight, bias, target = make_inputs(20, 6, 40)
    target[:] = -100
    loss, d_hidden, d_weight, d_bias = check_against_ref(hidden, weight, bias, target, reduction=reduction)
    assert torch.all(loss == 0)
    for g in (d_hidden, d_weight, d_bias):
        assert torch.all(g == 0) and not torch.isnan(g).any()


@pytest.mark.parametrize("ignore_index", [0, 5, -1])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_custom_ignore_index(ignore_index, reduction):
    """ignore_index inside the class range (e.g. padding = 0) as well as outside."""
    hidden, weight, bias, target = make_inputs(60, 8, 30, seed=4)
    target[::3] = ignore_index
    check_against_ref(hidden, weight, bias, target, reduction=reduction, ignore_index=ignore_index)
    if ignore_index >= 0:  # rows whose target is the ignored class contribute nothing
        none = linear_cross_entropy(hidden, weight, bias, target, ignore_index=ignore_index, reduction="none")
        assert torch.all(none[target == ignore_index] == 0)


def test_non_contiguous_hidden():
    hidden, weight, bias, target = make_inputs(50, 10, 70, ignore_every=6, seed=5)
    wide = torch.randn(50, 20, dtype=hidden.dtype)
    wide[:, ::2] = hidden
    strided = wide[:, ::2]
    assert not strided.is_contiguous()
    for reduction in REDUCTIONS:
        check_against_ref(strided, weight, bias, target, reduction=reduction)


def test_upstream_gradient_scales():
    """(loss * 3).backward() gives 3x the gradients, for "mean" and "sum"."""
    hidden, weight, bias, target = make_inputs(40, 8, 90, ignore_every=5, seed=6)
    for reduction in ("mean", "sum"):
        g = torch.tensor(3.0)
        fused = check_against_ref(hidden, weight, bias, target, reduction=reduction, grad_out=g)
        unit = run_both(hidden, weight, bias, target, reduction)[0]
        for a, b in zip(fused[1:], unit[1:]):
            assert_close(a, 3 * b, 1e-5, "3x")


def test_none_with_random_upstream_gradient():
    hidden, weight, bias, target = make_inputs(300, 8, 1100, ignore_every=4, seed=7)
    grad_out = torch.randn(300, generator=torch.Generator().manual_seed(1))
    check_against_ref(hidden, weight, bias, target, reduction="none", grad_out=grad_out)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_retain_graph_second_backward(reduction):
    """The forward's gradients are handed over once; a second backward recomputes them."""
    hidden, weight, bias, target = make_inputs(40, 8, 90, ignore_every=5, seed=8)
    h, w, b = leaves(hidden, weight, bias)
    loss = linear_cross_entropy(h, w, b, target, reduction=reduction).sum()
    first = torch.autograd.grad(loss, (h, w, b), retain_graph=True)
    second = torch.autograd.grad(2 * loss, (h, w, b))
    for a, b2 in zip(first, second):
        assert_close(b2, 2 * a, 1e-5, "second backward")


def test_gradient_for_some_inputs_only():
    """Only weight requires grad (frozen encoder), then only hidden (frozen vocabulary)."""
    hidden, weight, bias, target = make_inputs(30, 8, 50, ignore_every=4, seed=9)
    for which in ("weight", "hidden"):
        h = hidden.clone().requires_grad_(which == "hidden")
        w = weight.clone().requires_grad_(which == "weight")
        linear_cross_entropy(h, w, bias, target).backward()
        h_ref = hidden.clone().requires_grad_(which == "hidden")
        w_ref = weight.clone().requires_grad_(which == "weight")
        linear_cross_entropy_ref(h_ref, w_ref, bias, target).backward()
        got, expected = (w.grad, w_ref.grad) if which == "weight" else (h.grad, h_ref.grad)
        assert_close(got, expected, 1e-4, which)


def test_no_grad_forward_matches():
    hidden, weight, bias, target = make_inputs(300, 8, 1100, ignore_every=4, seed=10)
    h, w, b = leaves(hidden, weight, bias)
    for reduction in REDUCTIONS:
        with_grad = linear_cross_entropy(h, w, b, target, reduction=reduction)
        with torch.no_grad():
            without = linear_cross_entropy(h, w, b, target, reduction=reduction)
        assert with_grad.requires_grad and not without.requires_grad
        torch.testing.assert_close(without, with_grad.detach(), rtol=0, atol=0)


def test_nan_in_hidden_propagates():
    hidden, weight, bias, target = make_inputs(8, 4, 20, seed=11)
    hidden[3, 1] = float("nan")
    per_row = linear_cross_entropy(hidden, weight, bias, target, reduction="none")
    assert torch.isnan(per_row[3])
    assert torch.isfinite(per_row[torch.arange(8) != 3]).all()
    assert torch.isnan(linear_cross_entropy(hidden, weight, bias, target))


def test_int32_target_accepted():
    hidden, weight, bias, target = make_inputs(10, 4, 20, seed=12)
    expected = linear_cross_entropy(hidden, weight, bias, target)
    torch.testing.assert_close(linear_cross_entropy(hidden, weight, bias, target.int()), expected)


def test_half_precision_on_cpu_runs_the_reference():
    hidden, weight, bias, target = make_inputs(10, 4, 20, dtype=torch.bfloat16, seed=13)
    got = linear_cross_entropy(hidden, weight, bias, target)
    torch.testing.assert_close(got, linear_cross_entropy_ref(hidden, weight, bias, target))


def test_empty_batch():
    hidden, weight, bias, target = make_inputs(0, 4, 20)
    for reduction in REDUCTIONS:
        h, w, b = leaves(hidden, weight, bias)
        loss = linear_cross_entropy(h, w, b, target, reduction=reduction)
        assert loss.shape == ((0,) if reduction == "none" else ())
        loss.sum().backward()
        assert torch.all(w.grad == 0) and torch.all(b.grad == 0) and h.grad.shape == (0, 4)


# ------------------------------------------------------ gradcheck / opcheck


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_gradcheck(reduction):
    """nondet_tol: gradcheck runs the backward repeatedly; for "mean"/"sum" the first run uses the
    gradients computed in the forward and the later ones recompute them from lse -- equal up to
    float64 rounding, not bit for bit."""
    hidden, weight, bias, target = make_inputs(7, 3, 11, dtype=torch.float64, ignore_every=3, seed=14)
    h, w, b = leaves(hidden, weight, bias)
    assert torch.autograd.gradcheck(
        lambda h, w, b: linear_cross_entropy(h, w, b, target, reduction=reduction), (h, w, b), nondet_tol=1e-12
    )


def opcheck_cases():
    hidden, weight, bias, target = make_inputs(9, 5, 13, ignore_every=4, seed=15)
    h, w, b = leaves(hidden, weight, bias)
    yield "mean-all", (h, w, b, target, -100, "mean", [True, True, True])
    yield "sum-no-bias", (h, w, None, target, -100, "sum", [True, True, False])
    yield "mean-weight-only", (hidden, w, b, target, -100, "mean", [False, True, True])
    yield "none", (h, w, b, target, -100, "none", [False, False, False])
    yield "mean-no-grad-ignore-3", (hidden, weight, bias, target.where(target >= 0, 3), 3, "mean", [False] * 3)


@pytest.mark.parametrize("case", [c[0] for c in opcheck_cases()])
def test_opcheck_fwd(case):
    args = dict(opcheck_cases())[case]
    torch.library.opcheck(torch.ops.fastvae.linear_ce_fwd.default, args)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_opcheck_bwd(reduction):
    hidden, weight, bias, target = make_inputs(9, 5, 13, ignore_every=4, seed=16)
    _, lse, *_ = torch.ops.fastvae.linear_ce_fwd(hidden, weight, bias, target, -100, "none", [False] * 3)
    grad = torch.randn(9) if reduction == "none" else torch.tensor(0.7)
    torch.library.opcheck(
        torch.ops.fastvae.linear_ce_bwd.default,
        (grad, hidden, weight, bias, target, lse, -100, reduction, [True, True, True]),
    )


def test_raw_op_contract():
    """linear_ce_fwd: gradients only where requested; 'none' refuses forward gradients."""
    hidden, weight, bias, target = make_inputs(9, 5, 13, seed=17)
    loss, lse, dh, dw, db = torch.ops.fastvae.linear_ce_fwd(hidden, weight, None, target, -100, "sum", [False, True, True])
    assert loss.shape == () and lse.shape == (9,) and dh.numel() == 0 and dw.shape == (13, 5) and db.numel() == 0
    torch.testing.assert_close(lse, torch.logsumexp(hidden @ weight.t(), 1))
    with pytest.raises(ValueError, match="grad_mask"):
        torch.ops.fastvae.linear_ce_fwd(hidden, weight, bias, target, -100, "none", [True, False, False])
    with pytest.raises(ValueError, match="target"):
        torch.ops.fastvae.linear_ce_fwd(hidden, weight, bias, target + 13, -100, "sum", [False] * 3)


# -------------------------------------------------------------- bad inputs


def bad_input_cases():
    hidden, weight, bias, target = make_inputs(6, 4, 10)
    return {
        "hidden-H": (ValueError, "weight", (hidden, weight[:, :3], bias, target)),
        "bias-V": (ValueError, "bias", (hidden, weight, bias[:9], target)),
        "target-N": (ValueError, "target", (hidden, weight, bias, target[:5])),
        "hidden-1d": (ValueError, "hidden", (hidden[0], weight, bias, target)),
        "int-hidden": (TypeError, "hidden", (hidden.long(), weight, bias, target)),
        "float-target": (TypeError, "target", (hidden, weight, bias, target.float())),
        "dtype-mismatch": (TypeError, "weight", (hidden, weight.double(), bias, target)),
        "target-too-big": (ValueError, r"target\[2\] = 10", (hidden, weight, bias, target.index_fill(0, torch.tensor([2]), 10))),
        "target-negative": (ValueError, r"target\[1\] = -3", (hidden, weight, bias, target.index_fill(0, torch.tensor([1]), -3))),
        "empty-vocabulary": (ValueError, "weight", (hidden, weight[:0], bias[:0], target.clamp(max=-100))),
    }


@pytest.mark.parametrize("case", list(bad_input_cases()))
def test_bad_inputs(case):
    error, match, args = bad_input_cases()[case]
    for fn in (linear_cross_entropy, linear_cross_entropy_ref):
        with pytest.raises(error, match=match):
            fn(*args)


def test_bad_reduction_and_ignore_index():
    hidden, weight, bias, target = make_inputs(6, 4, 10)
    with pytest.raises(ValueError, match="reduction"):
        linear_cross_entropy(hidden, weight, bias, target, reduction="avg")
    with pytest.raises(TypeError, match="ignore_index"):
        linear_cross_entropy(hidden, weight, bias, target, ignore_index=1.5)
    with pytest.raises(ValueError, match="ignore_index must fit in int64"):
        linear_cross_entropy(torch.randn(2, 3), torch.randn(4, 3), None, torch.tensor([0, 1]), ignore_index=2**70)


def test_refuses_double_backward_by_name():
    h = torch.randn(5, 4, requires_grad=True)
    loss = linear_cross_entropy(h, torch.randn(6, 4), None, torch.randint(0, 6, (5,)))
    with pytest.raises(RuntimeError, match="fastvae.ops.linear_cross_entropy is differentiable once"):
        second_order(loss, h)


# ------------------------------------------------------- ISA variants, memory


@pytest.mark.parametrize("isa", ["generic", "avx2"])
def test_other_isa_variants(isa):
    """The softmax loops compiled for each ISA level (and the BLAS GEMM path) agree with the reference, in
    chunks of 64 tokens (H = 16) and of 256 (H = 80: one full chunk, then 44 tokens)."""
    code = """
        import torch, fastvae
        from fastvae.ops import linear_cross_entropy as f, linear_cross_entropy_ref as r
        g = torch.Generator().manual_seed(0)
        for H, red in ((16, "mean"), (16, "none"), (80, "mean"), (80, "none")):
            h, w = torch.randn(300, H, generator=g), torch.randn(1100, H, generator=g) / H**0.5
            b = torch.randn(1100, generator=g)
            t = torch.randint(0, 1100, (300,), generator=g); t[::5] = -100
            out = []
            for fn in (f, r):
                x = [v.clone().requires_grad_() for v in (h, w, b)]
                loss = fn(*x, t, reduction=red)
                loss.backward(torch.ones_like(loss))
                out.append([loss.detach()] + [v.grad for v in x])
            for a, e in zip(*out):
                torch.testing.assert_close(a, e, rtol=1e-4, atol=1e-4 * max(1.0, e.abs().max().item()))
        print(torch.ops.fastvae.cpu_capability())
    """
    assert f"isa={isa}" in run_at_isa(textwrap.dedent(code), isa)


PEAK_RSS_SCRIPT = """
    import resource, sys, torch, fastvae
    from fastvae.ops import linear_cross_entropy, linear_cross_entropy_ref
    torch.set_num_threads(1)
    fn = linear_cross_entropy if sys.argv[1] == "fused" else linear_cross_entropy_ref
    def peak_kb():
        # VmHWM: peak RSS of this process image. ru_maxrss would do, but Linux carries it over
        # from the parent across fork + exec: a child of a large pytest process starts at the
        # parent's RSS and the peak of a smaller call never shows.
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    def step(N, H, V):
        g = torch.Generator().manual_seed(0)
        h = torch.randn(N, H, generator=g).requires_grad_()
        w = (torch.randn(V, H, generator=g) / 16).requires_grad_()
        b = torch.zeros(V).requires_grad_()
        t = torch.randint(0, V, (N,), generator=g)
        return (h, w, b, t)
    warm = step(8, 16, 32)
    fn(*warm).backward()
    inputs = step(N, H, V)
    before = peak_kb()
    fn(*inputs).backward()
    print(peak_kb() - before)
"""


def peak_rss_kb(which, N, H, V):
    code = f"N, H, V = {N}, {H}, {V}\n" + textwrap.dedent(PEAK_RSS_SCRIPT).replace("sys.argv[1]", repr(which))
    result = run_python(code)
    assert result.returncode == 0, result.stderr[-3000:]
    return int(result.stdout.strip().splitlines()[-1])


def test_peak_memory_far_below_the_reference():
    """The [N, V] logits are never formed: fused forward+backward grows peak RSS far less than the reference.

    Reference: logits, log-softmax and their gradient, 3 x N*V*4 B = 48 MB here;
    fused: d_weight (4 MB) plus a chunk buffer of at most 256 x V.
    """
    N, H, V = 1024, 128, 8192
    fused, ref = peak_rss_kb("fused", N, H, V), peak_rss_kb("ref", N, H, V)
    assert ref > 30_000, f"reference grew only {ref} kB; the measurement is broken"
    assert fused < 0.35 * ref, f"fused grew {fused} kB, reference {ref} kB"
