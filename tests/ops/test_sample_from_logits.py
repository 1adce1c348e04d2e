"""fastvae.ops.sample_from_logits: bad input is a named error.

Its draws against the twin (the softmax distribution, other dtypes, edges)
are tested in tests/test_models.py, next to the decoding that calls it.
"""

import pytest
import torch

from fastvae.ops import sample_from_logits


def test_bad_logits_are_named():
    with pytest.raises(TypeError, match="logits must be a torch.Tensor"):
        sample_from_logits([[0.0, 1.0]])
    with pytest.raises(ValueError, match="V >= 1"):
        sample_from_logits(torch.zeros(3, 0))
