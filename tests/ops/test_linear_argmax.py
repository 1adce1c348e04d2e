"""fastvae.ops.linear_argmax (the greedy decoding head) vs its reference twin."""

import importlib

import pytest
import torch

import fastvae  # noqa: F401  (registers the ops)
from fastvae.ops import linear_argmax, linear_argmax_ref

from .helpers import ISA_LEVELS, run_at_isa


@pytest.mark.parametrize("R,H,V", [(1, 1, 1), (5, 7, 13), (13, 33, 300), (50, 32, 1000), (97, 16, 1025)])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_matches_reference(R, H, V, bias, dtype):
    g = torch.Generator().manual_seed(R * V + H)
    h = torch.randn(R, H, generator=g, dtype=dtype)
    w = torch.randn(V, H, generator=g, dtype=dtype)
    b = torch.randn(V, generator=g, dtype=dtype) if bias else None
    index, value = linear_argmax(h, w, b)
    ref_index, ref_value = linear_argmax_ref(h, w, b)
    assert index.dtype == torch.int64 and index.shape == (R,)
    assert torch.equal(index, ref_index)
    torch.testing.assert_close(value, ref_value, rtol=1e-5, atol=1e-5)


def test_runs_the_fused_kernel_and_not_the_reference(monkeypatch):
    module = importlib.import_module("fastvae.ops.linear_argmax")

    monkeypatch.setattr(module, "linear_argmax_ref", lambda *a: pytest.fail("reference used"))
    h, w = torch.randn(4, 8), torch.randn(20, 8)
    module.linear_argmax(h, w, None)


def test_ties_go_to_the_lowest_index():
    h = torch.ones(3, 4)
    w = torch.zeros(600, 4)
    w[[7, 300, 599]] = 1.0  # equal best scores in different vocabulary blocks
    index, value = linear_argmax(h, w)
    assert index.tolist() == [7, 7, 7]
    assert value.tolist() == [4.0, 4.0, 4.0]


def test_non_contiguous_inputs():
    h = torch.randn(9, 2 * 11)[:, ::2]
    w = torch.randn(2 * 70, 11)[::2]
    b = torch.randn(140)[::2]
    assert torch.equal(linear_argmax(h, w, b)[0], linear_argmax_ref(h, w, b)[0])


def test_no_features_scores_the_bias_alone():
    # every row after the kernel's first 48-row block used to count the bias twice
    hidden, weight, bias = torch.randn(100, 0), torch.randn(300, 0), torch.randn(300)
    index, value = linear_argmax(hidden, weight, bias)
    ref_index, ref_value = linear_argmax_ref(hidden, weight, bias)
    torch.testing.assert_close(value, ref_value)
    assert torch.equal(index, ref_index)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_without_words_names_weight(dtype):
    with pytest.raises(ValueError, match="weight must hold at least one word"):
        linear_argmax(torch.randn(4, 3, dtype=dtype), torch.randn(0, 3, dtype=dtype))


def test_opcheck():
    h, w, b = torch.randn(6, 5), torch.randn(40, 5), torch.randn(40)
    torch.library.opcheck(torch.ops.fastvae.linear_argmax.default, (h, w, b))
    torch.library.opcheck(torch.ops.fastvae.linear_argmax.default, (h, w, None))


def test_bad_input():
    h, w = torch.randn(4, 8), torch.randn(20, 8)
    with pytest.raises(ValueError, match="weight must have shape"):
        linear_argmax(h, torch.randn(20, 7))
    with pytest.raises(ValueError, match="bias must have shape"):
        linear_argmax(h, w, torch.randn(19))
    with pytest.raises(TypeError, match="hidden must be a floating-point"):
        linear_argmax(h.long(), w)
    with pytest.raises(TypeError, match="weight has dtype"):
        linear_argmax(h, w.double())
    with pytest.raises(ValueError, match="hidden must be 2-D"):
        linear_argmax(h[0], w)
    for bad in (float("nan"), float("inf"), -float("inf")):
        broken = h.clone()
        broken[2, 5] = bad
        with pytest.raises(ValueError, match="hidden contains NaN or infinite"):
            linear_argmax(broken, w)


ISA_CHECK = """
from fastvae.ops import linear_argmax, linear_argmax_ref
g = torch.Generator().manual_seed(0)
for dtype in (torch.float32, torch.float64):
    # rows across token panels, words across register tiles and vocabulary blocks, odd H
    for R, H, V in ((1, 3, 5), (33, 17, 1031), (130, 64, 600)):
        h = torch.randn(R, H, generator=g, dtype=dtype)
        w = torch.randn(V, H, generator=g, dtype=dtype)
        b = torch.randn(V, generator=g, dtype=dtype)
        index, value = linear_argmax(h, w, b)
        ref_index, ref_value = linear_argmax_ref(h, w, b)
        assert torch.equal(index, ref_index), (dtype, R, H, V)
        torch.testing.assert_close(value, ref_value, rtol=1e-5, atol=1e-5)
w = torch.zeros(600, 4)
w[[7, 300, 599]] = 1.0
assert linear_argmax(torch.ones(3, 4), w)[0].tolist() == [7, 7, 7]
# a NaN word next to the best one does not hide it: the kernels skip a tile's selects when its maxima
# hold no new best, and a NaN must not decide that (words 0 and 12 start a register tile on every ISA)
for nan_word, best_word in ((0, 1), (12, 13), (6, 5), (599, 598)):
    w = torch.randn(600, 4, generator=g) * 0.01
    w[nan_word] = float("nan")
    w[best_word] = 1.0
    assert linear_argmax(torch.ones(40, 4), w)[0].tolist() == [best_word] * 40, (nan_word, best_word)
"""


@pytest.mark.parametrize("isa", ISA_LEVELS)
def test_every_isa_level_matches_reference(isa):
    run_at_isa(ISA_CHECK, isa)
