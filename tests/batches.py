"""Random padded batches of token ids for the model tests (ids 0..3 are <pad>, <unk>, <sos>, <eos>)."""

import torch

from fastvae import Batch

PAD, UNK, SOS, EOS = 0, 1, 2, 3


def make_batch(vocab_size, B=5, Tc=7, Tx=6, seed=0):
    """Context and target of mixed lengths (the longest is Tc / Tx), targets ending with <eos>."""
    g = torch.Generator().manual_seed(seed)
    target_lengths = torch.randint(1, Tx + 1, (B,), generator=g)
    target_lengths[0] = Tx
    context_lengths = torch.randint(1, Tc + 1, (B,), generator=g)
    context_lengths[-1] = Tc
    target = torch.randint(4, vocab_size, (B, Tx), generator=g)
    context = torch.randint(4, vocab_size, (B, Tc), generator=g)
    for b in range(B):
        target[b, target_lengths[b] - 1] = EOS
        target[b, target_lengths[b] :] = PAD
        context[b, context_lengths[b] :] = PAD
    return Batch(target, target_lengths, context, context_lengths)
