"""fastvae.ops.sample_from_logits: its draws follow the softmax (every dtype), edges, and bad input is a named error."""

import pytest
import torch

from fastvae.ops import sample_from_logits


def test_bad_logits_are_named():
    with pytest.raises(TypeError, match="logits must be a torch.Tensor"):
        sample_from_logits([[0.0, 1.0]])
    with pytest.raises(ValueError, match="V >= 1"):
        sample_from_logits(torch.zeros(3, 0))


def test_sample_from_logits_draws_from_the_softmax():
    logits = torch.tensor([[0.0, 1.0, 2.0, -1.0], [3.0, float("-inf"), 0.0, 0.5]])
    n = 40000
    tokens = sample_from_logits(logits.repeat_interleave(n, 0), torch.Generator().manual_seed(0)).view(2, n)
    assert tokens.dtype == torch.int64
    probs = torch.softmax(logits.double(), -1)
    for row in range(2):
        freq = torch.bincount(tokens[row], minlength=4).double() / n
        sd = (probs[row] * (1 - probs[row]) / n).sqrt()
        assert ((freq - probs[row]).abs() <= 5 * sd).all(), (freq, probs[row])
    assert (tokens[1] != 1).all()  # a -inf logit is never drawn


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_sample_from_logits_other_dtypes(dtype):
    # half-precision logits are summed in float32; float64 stays float64
    logits = torch.tensor([[0.0, 1.0, 2.0, -1.0], [3.0, float("-inf"), 0.0, 0.5]], dtype=dtype)
    n = 20000
    tokens = sample_from_logits(logits.repeat_interleave(n, 0), torch.Generator().manual_seed(3)).view(2, n)
    probs = torch.softmax(logits.double(), -1)
    for row in range(2):
        freq = torch.bincount(tokens[row], minlength=4).double() / n
        assert ((freq - probs[row]).abs() <= 5 * (probs[row] * (1 - probs[row]) / n).sqrt()).all(), (freq, probs[row])


def test_sample_from_logits_edges_and_errors():
    inf = float("-inf")
    only = torch.tensor([[0.0, inf, inf], [inf, inf, 5.0], [inf, -3.0, inf]])
    g = torch.Generator().manual_seed(1)
    for _ in range(20):
        assert sample_from_logits(only, g).tolist() == [0, 2, 1]
    huge = torch.tensor([[1e4, 0.0, -1e4]])  # no overflow: the max is subtracted first
    assert sample_from_logits(huge, g).tolist() == [0]
    for bad in ([[0.0, float("nan")]], [[inf, inf]], [[0.0, float("inf")]]):
        with pytest.raises(ValueError, match="logits"):
            sample_from_logits(torch.tensor(bad), g)
    with pytest.raises(ValueError, match="logits"):
        sample_from_logits(torch.zeros(5), g)
