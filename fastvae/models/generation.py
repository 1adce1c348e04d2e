"""Batched decoding: greedy, sampling (temperature, top-k, top-p) and beam search.

All rows (inputs x samples, x beams) advance together through one loop of
single decoding steps (``ConditionalDecoder.step``: the fused single-step
LSTM op on the fused backend). Greedy and sampled rows leave the batch at
their ``<eos>``, so later steps only compute the rows still running; the loop
ends when every row has stopped or ``max_length`` tokens were produced.
"""

from dataclasses import dataclass

import torch

from fastvae.ops import sample_from_logits, sample_from_logits_ref  # noqa: F401  (the twin: re-exported, its old home)

STRATEGIES = ("greedy", "sample", "beam")
# the sampling of ``fastvae generate`` and ``fastvae demo`` by default: several different, still fluent outputs
# per input (greedy decoding per z gives one output per input where z carries little)
SAMPLING_TEMPERATURE = 0.6
SAMPLING_TOP_P = 0.9


@dataclass
class DecodeOptions:
    strategy: str = "greedy"
    max_length: int = 30
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    beam_size: int = 4

    def check(self) -> "DecodeOptions":
        if self.strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {STRATEGIES}, got {self.strategy!r}")
        if isinstance(self.max_length, bool) or not isinstance(self.max_length, int) or self.max_length < 1:
            raise ValueError(f"max_length must be a positive integer, got {self.max_length!r}")
        for name in ("temperature", "top_p"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise TypeError(f"{name} must be a number, got {value!r}")
        if not 0 < self.temperature < float("inf"):
            raise ValueError(f"temperature must be a finite number > 0, got {self.temperature}")
        if isinstance(self.top_k, bool) or not isinstance(self.top_k, int):
            raise TypeError(f"top_k must be an int (0: off), got {self.top_k!r}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0 (0: off), got {self.top_k}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must lie in (0, 1], got {self.top_p}")
        if isinstance(self.beam_size, bool) or not isinstance(self.beam_size, int) or self.beam_size < 1:
            raise ValueError(f"beam_size must be a positive integer, got {self.beam_size!r}")
        return self


def _filter_logits(logits, top_k, top_p):
    """Mask (to -inf) everything outside the top-k and the top-p nucleus."""
    if top_k > 0 and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
        probs = torch.softmax(sorted_logits, dim=-1)
        # drop a token when the mass before it already reaches top_p (the first always stays)
        drop_sorted = (torch.cumsum(probs, dim=-1) - probs) >= top_p
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


def _finish(tokens, lengths, pad_id):
    """Cut at each row's first ``<eos>`` (kept), pad after it; lengths include ``<eos>``."""
    return tokens.masked_fill(torch.arange(tokens.shape[1]).unsqueeze(0) >= lengths.unsqueeze(1), pad_id), lengths


def decode(decoder, embed, state, *, sos_id, eos_id, pad_id, options, generator=None, num_return=1):
    """Decode from ``state`` (``(h, c)`` each ``[L, R, H]``) for R rows.

    embed: callable ``tokens [R] -> [R, E]``. Returns ``tokens [R, max_length]``
    (padded with ``pad_id`` after ``<eos>``) and ``lengths [R]`` (CPU int64,
    counting ``<eos>``; ``max_length`` when a row never produced it).
    num_return: beam search only: the best ``num_return`` hypotheses of each
    row (``num_return <= beam_size``), best first: ``[R * num_return, max_length]``.
    """
    options.check()
    if options.strategy == "beam":
        if not 1 <= num_return <= options.beam_size:
            raise ValueError(f"num_return must lie in 1..beam_size ({options.beam_size}), got {num_return}")
        return _beam(decoder, embed, state, sos_id, eos_id, pad_id, options, num_return)
    if num_return != 1:
        raise ValueError("num_return > 1 needs strategy='beam'")
    R = state[0].shape[1]
    device = state[0].device
    rows = torch.arange(R, device=device)  # the rows still decoding; a row leaves the batch at its <eos>
    prev = torch.full((R,), sos_id, dtype=torch.int64, device=device)
    out = torch.full((R, options.max_length), pad_id, dtype=torch.int64, device=device)
    lengths = torch.full((R,), options.max_length, dtype=torch.int64)
    for t in range(options.max_length):
        hidden, state = decoder.step(embed(prev), state)
        if options.strategy == "greedy":
            token = decoder.out.greedy(hidden)
        else:
            raw = decoder.out.logits(hidden)
            logits = raw / options.temperature if options.temperature != 1.0 else raw
            try:
                token = sample_from_logits(_filter_logits(logits, options.top_k, options.top_p), generator)
            except ValueError:
                if logits is not raw and bool(torch.isfinite(raw).all()):  # finite until divided
                    raise ValueError(f"temperature {options.temperature:g} is too small: the logits divided by it "
                                     "overflow; use a larger temperature or strategy='greedy'") from None
                raise
        out[rows, t] = token
        ended = token == eos_id
        if bool(ended.any()):
            lengths[rows[ended].cpu()] = t + 1
            running = ~ended
            if not bool(running.any()):
                break
            rows, token = rows[running], token[running]
            state = tuple(s[:, running] for s in state)
        prev = token
    return _finish(out.cpu(), lengths, pad_id)


def _beam(decoder, embed, state, sos_id, eos_id, pad_id, options, num_return=1):
    """Beam search per row; returns each row's ``num_return`` best hypotheses (finished or still running)."""
    h, c = state
    L, R, H = h.shape
    k = options.beam_size
    device = h.device
    # every row starts with k copies; only beam 0 is live at first (others at -inf)
    h = h.repeat_interleave(k, dim=1)
    c = c.repeat_interleave(k, dim=1)
    scores = torch.full((R, k), float("-inf"), device=device)
    scores[:, 0] = 0.0
    prev = torch.full((R * k,), sos_id, dtype=torch.int64, device=device)
    history = torch.full((R, k, options.max_length), pad_id, dtype=torch.int64, device=device)
    finished = torch.zeros(R, k, dtype=torch.bool, device=device)
    lengths = torch.full((R, k), options.max_length, dtype=torch.int64, device=device)
    for t in range(options.max_length):
        hidden, (h, c) = decoder.step(embed(prev), (h, c))
        logp = torch.log_softmax(decoder.out.logits(hidden), dim=-1).view(R, k, -1)
        V = logp.shape[-1]
        # a finished beam only extends with <pad> at no cost
        frozen = torch.full_like(logp, float("-inf"))
        frozen[..., pad_id] = 0.0
        logp = torch.where(finished.unsqueeze(-1), frozen, logp)
        total = (scores.unsqueeze(-1) + logp).view(R, k * V)
        scores, flat = torch.topk(total, k, dim=-1)
        beam = torch.div(flat, V, rounding_mode="floor")
        token = flat % V
        rows = (torch.arange(R, device=device).unsqueeze(1) * k + beam).view(-1)
        h, c = h[:, rows], c[:, rows]
        history = history.gather(1, beam.unsqueeze(-1).expand(-1, -1, options.max_length)).clone()
        finished = finished.gather(1, beam)
        lengths = lengths.gather(1, beam)
        history[:, :, t] = token
        newly = (token == eos_id) & ~finished
        lengths = torch.where(newly, torch.full_like(lengths, t + 1), lengths)
        finished |= newly
        if bool(finished.all()):
            break
        prev = token.view(-1)
    best = scores.topk(num_return, dim=-1).indices  # [R, n], best first
    rows = torch.arange(R, device=device).unsqueeze(1)
    tokens = history[rows, best].reshape(R * num_return, -1)
    return _finish(tokens.cpu(), lengths[rows, best].reshape(-1).cpu(), pad_id)
