"""Encoding examples to ids and batching them into :class:`fastvae.models.Batch`."""

from typing import Iterable, Iterator, List, Optional, Sequence, Tuple, Union

import torch

from fastvae.data.corpora import Example
from fastvae.data.vocab import Vocab
from fastvae.models.batch import Batch


class TextDataset:
    """Token ids of a list of examples.

    examples: :class:`Example` objects, or plain token lists (sentence-only
        data, e.g. from :func:`load_lines`: no source, so batches carry no
        context).
    vocab: the :class:`Vocab` that encodes them (unknown words -> ``<unk>``).
    max_length: optional cap on every encoded sequence, ``<eos>`` included
        (>= 1). A longer target keeps its first ``max_length - 1`` tokens
        then ``<eos>``; a longer source keeps its *last* ``max_length - 1``
        tokens (for a dialogue, the utterances nearest the response) then
        ``<eos>``.

    ``targets[i]``/``sources[i]`` are lists of ids ending with ``<eos>``;
    ``groups[i]`` the example's group id.
    """

    def __init__(
        self, examples: Iterable[Union[Example, List[str]]], vocab: Vocab, max_length: Optional[int] = None
    ) -> None:
        if max_length is not None and (isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 1):
            raise ValueError(f"max_length must be an integer >= 1 (room for <eos>) or None, got {max_length!r}")
        examples = list(examples)
        if not examples:
            raise ValueError("TextDataset needs at least one example")
        self.vocab = vocab
        self.max_length = max_length
        conditional = isinstance(examples[0], Example) and examples[0].source is not None
        self.targets, self.sources, self.groups = [], ([] if conditional else None), []
        for i, ex in enumerate(examples):
            if isinstance(ex, Example):
                target, source, group = ex.target, ex.source, ex.group
            else:
                target, source, group = ex, None, i
            if (source is not None) != conditional:
                raise ValueError(f"example {i} {'lacks' if conditional else 'has'} a source, unlike example 0")
            self.targets.append(self._encode(target, keep_end=False))
            if conditional:
                self.sources.append(self._encode(source, keep_end=True))
            self.groups.append(group)

    def _encode(self, tokens, keep_end):
        if isinstance(tokens, str):
            raise TypeError("examples must hold token lists, not strings; tokenize them first")
        if not isinstance(tokens, (list, tuple)) or not all(isinstance(t, str) for t in tokens):
            raise TypeError(f"examples must be Example objects or lists of token strings, got {tokens!r:.60}")
        ids = self.vocab.encode(tokens)
        if self.max_length is not None and len(ids) > self.max_length - 1:
            keep = self.max_length - 1
            ids = (ids[len(ids) - keep :] if keep else []) if keep_end else ids[:keep]
        return ids + [self.vocab.eos_id]

    @property
    def conditional(self) -> bool:
        return self.sources is not None

    def __len__(self) -> int:
        return len(self.targets)


def pad(seqs: Sequence[Sequence[int]], pad_id: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """Lists of ids -> ``(tokens [N, longest] int64 padded with pad_id, lengths [N] int64)``."""
    lengths = torch.tensor([len(s) for s in seqs], dtype=torch.int64)
    out = torch.full((len(seqs), int(lengths.max())), pad_id, dtype=torch.int64)
    for row, s in enumerate(seqs):
        out[row, : len(s)] = torch.tensor(s, dtype=torch.int64)
    return out, lengths


def collate(dataset: TextDataset, indices: Sequence[int]) -> Batch:
    """The :class:`Batch` of ``dataset`` examples at ``indices`` (padded with ``<pad>``)."""
    pad_id = dataset.vocab.pad_id
    target, target_lengths = pad([dataset.targets[i] for i in indices], pad_id)
    if not dataset.conditional:
        return Batch(target, target_lengths)
    context, context_lengths = pad([dataset.sources[i] for i in indices], pad_id)
    return Batch(target, target_lengths, context, context_lengths)


def batch_indices(
    dataset: TextDataset,
    batch_size: int,
    shuffle: bool = True,
    bucket: bool = True,
    generator: Optional[torch.Generator] = None,
    drop_last: bool = False,
    bucket_chunk: int = 50,
) -> List[List[int]]:
    """The dataset positions of each batch :func:`batches` yields, as a list of index lists (no collation)."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    if bucket and (isinstance(bucket_chunk, bool) or not isinstance(bucket_chunk, int) or bucket_chunk < 1):
        raise ValueError(f"bucket_chunk must be an integer >= 1 (batches per sorted chunk), got {bucket_chunk!r}")
    n = len(dataset)
    order = torch.randperm(n, generator=generator).tolist() if shuffle else list(range(n))
    if bucket:
        chunk = batch_size * bucket_chunk
        src = dataset.sources
        key = lambda i: (len(dataset.targets[i]), len(src[i]) if src is not None else 0)  # noqa: E731
        order = [i for start in range(0, n, chunk) for i in sorted(order[start : start + chunk], key=key)]
    cut = [order[s : s + batch_size] for s in range(0, n, batch_size)]
    if drop_last and cut and len(cut[-1]) < batch_size:
        cut.pop()
    if shuffle:
        cut = [cut[i] for i in torch.randperm(len(cut), generator=generator).tolist()]
    return cut


def batches(
    dataset: TextDataset,
    batch_size: int,
    shuffle: bool = True,
    bucket: bool = True,
    generator: Optional[torch.Generator] = None,
    drop_last: bool = False,
    bucket_chunk: int = 50,
    with_indices: bool = False,
) -> Iterator[Union[Batch, Tuple[List[int], Batch]]]:
    """Iterate over ``dataset`` in :class:`Batch` es of ``batch_size`` examples.

    shuffle: visit the examples in a random order (``torch.randperm`` with
        ``generator``), and the batches too.
    bucket: within chunks of ``bucket_chunk * batch_size`` examples, sort by
        (target length, source length) before cutting batches, so a batch
        holds similar lengths and little padding.
    drop_last: leave out a last, smaller batch.
    with_indices: yield ``(indices, batch)``, the dataset positions of each row
        (to find an example's ``groups`` entry, e.g. its references).
    """
    for indices in batch_indices(dataset, batch_size, shuffle, bucket, generator, drop_last, bucket_chunk):
        batch = collate(dataset, indices)
        yield (indices, batch) if with_indices else batch
