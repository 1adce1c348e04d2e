"""Evaluation of a trained model on a :class:`fastvae.data.TextDataset`.

* :func:`evaluate_likelihood` - reconstruction NLL, KL, ELBO, perplexities,
  active units, mutual information and an importance-weighted NLL estimate.
* :func:`evaluate_generation` - BLEU-P/R and distinct-1/2 of responses
  sampled for every distinct source of a conditional dataset, and the
  context gain: BLEU-P/R minus the BLEU-P/R of the same responses against
  another input's references (:func:`generate_texts` gives the decoded
  samples themselves).
* :func:`evaluate_random_responses` - the same metrics for random training
  responses, a baseline that ignores the input (its context gain is about 0);
  :func:`evaluate_echo_responses` - for each input's own last utterance.
* :func:`write_report` - a report dict as JSON, written atomically.

Notation: x is the target sentence, c the context (conditional models), z the
latent code, q(z|x[,c]) the recognition network, p(z[|c]) the prior
(N(0, I) for SentenceVAE, the prior net for CVAE/SLCVAE). NLLs are in nats,
summed over a sentence's tokens, ``<eos>`` included.
"""

import json
import math
import numbers
import os
import warnings

import torch

from fastvae.data.corpora import EOU
from fastvae.data.dataset import batches, pad
from fastvae.data.vocab import Vocab
from fastvae._files import atomic_write
from fastvae.devices import usable_device
from fastvae.metrics import (
    BOOTSTRAP_RESAMPLES,
    BOOTSTRAP_SEED,
    MEAN_1_3,
    SHUFFLE_SEED,
    bleu_precision_recall,
    check_bleu_formula,
    check_smoothing,
    context_gain,
    derangement,
    distinct_n,
    mean_precision_recall,
)
from fastvae.models import CVAE, Seq2Seq, SentenceVAE
from fastvae.models.base import evaluating

LOG_2PI = math.log(2.0 * math.pi)
ACTIVE_UNITS_THRESHOLD = 0.01

__all__ = [
    "evaluate_likelihood",
    "evaluate_generation",
    "evaluate_random_responses",
    "generate_texts",
    "posterior_parameters",
    "split_by_seen",
    "write_report",
    "default_strategy",
    "ACTIVE_UNITS_THRESHOLD",
]


# ------------------------------------------------------------------ checks


def _check_model(model, conditional_only=False):
    if not isinstance(model, (SentenceVAE, CVAE, Seq2Seq)):
        raise TypeError(f"model must be a fastvae SentenceVAE, CVAE, SLCVAE or Seq2Seq, got {type(model).__name__}")
    if conditional_only and isinstance(model, SentenceVAE):
        raise TypeError(
            "model must be a conditional model (Seq2Seq, CVAE or SLCVAE); a SentenceVAE has no context to condition on"
        )


def _check_dataset(model, dataset):
    if not hasattr(dataset, "targets") or not hasattr(dataset, "conditional"):
        raise TypeError(f"dataset must be a fastvae.data.TextDataset, got {type(dataset).__name__}")
    if len(dataset) == 0:
        raise ValueError("dataset is empty")
    conditional = not isinstance(model, SentenceVAE)
    if conditional and not dataset.conditional:
        raise ValueError(f"dataset has no sources, but a {type(model).__name__} needs a context for every example")
    vocab_size = model.config["vocab_size"]
    if len(dataset.vocab) != vocab_size:
        raise ValueError(f"dataset's vocabulary has {len(dataset.vocab)} tokens, the model's {vocab_size}")


def _check_positive_int(name, value):
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


def _check_seed(seed):
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"shuffle_seed must be an integer, got {seed!r}")


def _check_generator(generator):
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")


# ------------------------------------------------------- per-model pieces


class _Terms:
    """One batch's pieces for evaluation.

    lengths: ``[B]`` target lengths (``<eos>`` included), CPU int64.
    mu_q, logvar_q: ``[B, Z]`` q(z|x[,c]) (None for Seq2Seq).
    mu_p, logvar_p: ``[B, Z]`` p(z[|c]) (zeros for SentenceVAE's N(0, I)).
    rec_nll(z): ``z [B, Z]`` -> ``-log p(x|z[,c])`` per sentence ``[B]``
        (Seq2Seq: ``rec_nll(None)``, the exact NLL).
    """

    def __init__(self, lengths, rec_nll, mu_q=None, logvar_q=None, mu_p=None, logvar_p=None):
        self.lengths, self.rec_nll = lengths, rec_nll
        self.mu_q, self.logvar_q, self.mu_p, self.logvar_p = mu_q, logvar_q, mu_p, logvar_p


def _terms(model, batch):
    """The :class:`_Terms` of ``batch`` for ``model`` (the model's own submodules, no dropout in eval mode)."""
    inputs, targets = model._decoder_io(batch)
    if isinstance(model, SentenceVAE):
        lengths, _ = model._check_batch(batch, conditional=False)
        mu, logvar = model.posterior(model.encoder(model.embedding(batch.target), lengths))
        embedded = model.embedding(inputs)
        zeros = torch.zeros_like(mu)
        return _Terms(
            lengths,
            lambda z: model.decoder.nll(embedded, targets, lengths, z, reduction="none"),
            mu, logvar, zeros, zeros,
        )
    if isinstance(model, CVAE):  # SLCVAE too: evaluation uses q, p and the decoder, never the labeling net
        (lengths, _), h_c, (mu_q, logvar_q), (mu_p, logvar_p) = model._posterior_and_prior(batch)
        embedded = model.embedding(inputs)
        return _Terms(
            lengths,
            lambda z: model.decoder.nll(embedded, targets, lengths, torch.cat([h_c, z], dim=1), reduction="none"),
            mu_q, logvar_q, mu_p, logvar_p,
        )
    lengths, context_lengths = model._check_batch(batch, conditional=True)
    h_c = model.context_encoder(model.embedding(batch.context), context_lengths)
    embedded = model.embedding(inputs)
    return _Terms(lengths, lambda _z: model.decoder.nll(embedded, targets, lengths, h_c, reduction="none"))


def _sample(mu, logvar, generator):
    """``z = mu + exp(logvar / 2) * eps``, ``eps ~ N(0, I)`` drawn from ``generator`` (on its device)."""
    gen_device = generator.device if generator is not None else mu.device
    eps = torch.randn(mu.shape, generator=generator, device=gen_device, dtype=mu.dtype).to(mu.device)
    return mu + torch.exp(0.5 * logvar) * eps


def _log_normal(z, mu, logvar):
    """``log N(z; mu, diag exp(logvar))`` summed over the last dim (broadcasting)."""
    return -0.5 * (LOG_2PI + logvar + (z - mu) ** 2 * torch.exp(-logvar)).sum(-1)


def _kl(mu_q, logvar_q, mu_p, logvar_p):
    """Analytic ``KL(N(mu_q, e^logvar_q) || N(mu_p, e^logvar_p))`` per row ``[B]`` (no free bits)."""
    return 0.5 * (logvar_p - logvar_q + (torch.exp(logvar_q) + (mu_q - mu_p) ** 2) * torch.exp(-logvar_p) - 1.0).sum(-1)


def _batch_mutual_info(mu, logvar, z):
    """He et al. (2019)'s minibatch MI estimate for one batch (``mu, logvar, z [B, Z]``).

    ``E_i[-H(q(z|x_i))] - E_i[log q(z_i)]`` with ``log q(z_i) = logsumexp_j log q(z_i|x_j) - log B``.
    """
    B, Z = mu.shape
    neg_entropy = (-0.5 * Z * (LOG_2PI + 1.0) - 0.5 * logvar.sum(-1)).mean()
    log_q_ij = _log_normal(z.unsqueeze(1), mu.unsqueeze(0), logvar.unsqueeze(0))  # [B_i, B_j]
    log_qz = torch.logsumexp(log_q_ij, dim=1) - math.log(B)
    return float(neg_entropy - log_qz.mean())


def posterior_parameters(model, batch):
    """``(mu, logvar)`` of q(z|x) (SentenceVAE) or q(z|x,c) (CVAE, SLCVAE), each ``[B, latent_size]``.

    Runs in whatever mode the model is in (call under ``torch.no_grad()`` and
    ``model.eval()`` for evaluation); TypeError for a Seq2Seq (no latent).
    """
    _check_model(model)
    if isinstance(model, Seq2Seq):
        raise TypeError("model is a Seq2Seq, which has no latent code and no posterior")
    terms = _terms(model, batch)
    return terms.mu_q, terms.logvar_q


# ------------------------------------------------------------- likelihood


def evaluate_likelihood(model, dataset, batch_size=64, iw_samples=0, generator=None, device="cpu"):
    """Likelihood terms of ``model`` over every example of ``dataset`` (a dict of floats).

    The model runs in eval mode (no dropout, no word dropout; its mode is
    restored after) under ``torch.no_grad()``, over
    ``batches(dataset, batch_size, shuffle=False, bucket=True)`` moved to
    ``device`` (where the model must already live; a device this machine
    does not have is a ValueError naming ``device``). Every random draw (z
    from q) comes from ``generator``: the same generator state gives the
    same report.

    Per sentence x (and its context c for conditional models), with one
    ``z ~ q(z|x[,c])`` (reparameterized):

    * ``rec_nll = -log p(x|z[,c])`` - the ELBO's reconstruction ("NLL") term,
      as Sentence-VAE papers report it; for Seq2Seq the exact ``-log p(x|c)``.
    * ``kl = KL(q(z|x[,c]) || p(z[|c]))`` - analytic, unweighted, no free bits.
    * ``elbo = rec_nll + kl`` - the negative ELBO as a positive loss: an upper
      bound on ``-log p(x[|c])`` (in expectation over z).

    Keys of every report: ``model`` (class name), ``sentences``, ``tokens``
    (target tokens, ``<eos>`` included), the dataset means ``rec_nll``,
    ``rec_nll_per_token`` (= total / tokens), ``elbo``, ``ppl_elbo`` =
    ``exp(elbo * sentences / tokens)``, and ``nll``, ``nll_per_token``,
    ``ppl`` = ``exp(nll * sentences / tokens)`` with ``nll_estimate`` saying
    what ``nll`` is: ``"exact"`` (Seq2Seq: ``nll = elbo = rec_nll``),
    ``"iw"`` (``nll = nll_iw``) or ``"elbo"`` (VAEs without ``iw_samples``:
    ``nll = elbo``, an upper bound on the true NLL).

    VAE models (SentenceVAE, CVAE, SLCVAE) also report ``latent_size``, ``kl``,

    * ``active_units`` (Burda et al. 2016): the number of dimensions u with
      ``Var_x(E_q[z_u]) = Var_x(mu_q,u) > active_units_threshold`` (0.01),
      the variance over the whole dataset (unbiased, N - 1; 0 for N = 1);
    * ``mutual_info``: He et al. (2019)'s estimate of ``I_q(x; z) =
      E_x[-H(q(z|x))] - E_z[log q(z)]``, where the aggregate posterior q(z)
      is approximated *within each minibatch*: one ``z_i ~ q(z|x_i)`` per
      example, ``log q(z_i) ~ logsumexp_j log q(z_i|x_j) - log B``. The
      per-batch estimates are averaged weighted by batch size. It is a
      minibatch estimate: biased, and bounded above by ``log B``; for a
      one-example batch it is ~0. For CVAE/SLCVAE the same estimator runs
      on q(z|x,c), aggregated over the batch's (x, c) pairs: it measures
      the information z carries about the (context, response) pair, a
      stand-in for the conditional MI I(x; z | c) (which would need many
      responses per context).

    With ``iw_samples = K > 0`` (VAEs): the importance-weighted estimate
    (Burda et al. 2016) ``nll_iw = -mean_x log (1/K sum_k p(x|z_k[,c])
    p(z_k[|c]) / q(z_k|x[,c]))``, ``z_k ~ q``, a tighter bound than the
    ELBO as K grows, plus ``nll_iw_per_token``, ``ppl_iw`` and
    ``iw_samples``. Seq2Seq ignores ``iw_samples`` (its NLL is exact).

    Errors: TypeError for an unsupported ``model``; ValueError naming
    ``dataset`` (no sources for a conditional model, other vocabulary size),
    ``batch_size`` (< 1) or ``iw_samples`` (< 0).
    """
    _check_model(model)
    _check_dataset(model, dataset)
    _check_positive_int("batch_size", batch_size)
    if isinstance(iw_samples, bool) or not isinstance(iw_samples, int) or iw_samples < 0:
        raise ValueError(
            f"iw_samples must be a non-negative integer (0: no importance-weighted estimate), got {iw_samples!r}"
        )
    _check_generator(generator)
    device = usable_device(device)
    is_vae = not isinstance(model, Seq2Seq)
    K = iw_samples if is_vae else 0
    n_sent = n_tok = 0
    rec_total = kl_total = iw_total = mi_total = 0.0
    mus = []
    with evaluating(model):
        for batch in batches(dataset, batch_size, shuffle=False, bucket=True):
            batch = batch.to(device)
            t = _terms(model, batch)
            B = batch.target.shape[0]
            n_sent += B
            n_tok += int(t.lengths.sum())
            if not is_vae:
                rec_total += float(t.rec_nll(None).sum())
                continue
            z = _sample(t.mu_q, t.logvar_q, generator)
            rec_total += float(t.rec_nll(z).sum())
            kl_total += float(_kl(t.mu_q, t.logvar_q, t.mu_p, t.logvar_p).sum())
            mi_total += _batch_mutual_info(t.mu_q, t.logvar_q, z) * B
            mus.append(t.mu_q.double().cpu())
            if K:
                log_w = []
                for _ in range(K):
                    z_k = _sample(t.mu_q, t.logvar_q, generator)
                    log_w.append(
                        -t.rec_nll(z_k) + _log_normal(z_k, t.mu_p, t.logvar_p) - _log_normal(z_k, t.mu_q, t.logvar_q)
                    )
                log_px = torch.logsumexp(torch.stack(log_w), dim=0) - math.log(K)
                iw_total += float(-log_px.sum())

    report = {
        "model": type(model).__name__,
        "sentences": float(n_sent),
        "tokens": float(n_tok),
        "rec_nll": rec_total / n_sent,
        "rec_nll_per_token": rec_total / n_tok,
    }
    if not is_vae:
        report.update(elbo=report["rec_nll"], nll=report["rec_nll"], nll_estimate="exact")
    else:
        mu = torch.cat(mus)
        variance = mu.var(dim=0, unbiased=True) if mu.shape[0] > 1 else torch.zeros(mu.shape[1], dtype=mu.dtype)
        report.update(
            latent_size=float(mu.shape[1]),
            kl=kl_total / n_sent,
            elbo=(rec_total + kl_total) / n_sent,
            active_units=float((variance > ACTIVE_UNITS_THRESHOLD).sum()),
            active_units_threshold=ACTIVE_UNITS_THRESHOLD,
            mutual_info=mi_total / n_sent,
        )
        if K:
            report.update(
                iw_samples=float(K),
                nll_iw=iw_total / n_sent,
                nll_iw_per_token=iw_total / n_tok,
                ppl_iw=_exp(iw_total / n_tok),
            )
            report.update(nll=report["nll_iw"], nll_estimate="iw")
        else:
            report.update(nll=report["elbo"], nll_estimate="elbo")
    report["ppl_elbo"] = _exp(report["elbo"] * n_sent / n_tok)
    report["nll_per_token"] = report["nll"] * n_sent / n_tok
    report["ppl"] = _exp(report["nll_per_token"])
    return report


def _exp(x):
    try:
        return math.exp(x)
    except OverflowError:
        return float("inf")


# ------------------------------------------------------------- generation


def _groups(dataset, max_inputs):
    """``[(source ids, [target ids, ...]), ...]`` per group, in order of first appearance."""
    order, members = [], {}
    for i, group in enumerate(dataset.groups):
        if group not in members:
            order.append(group)
            members[group] = []
        members[group].append(i)
    if max_inputs is not None:
        order = order[:max_inputs]
    for g in order:  # one group is one input: a second source under the same id would vanish from the scores
        first = members[g][0]
        for i in members[g][1:]:
            if dataset.sources[i] != dataset.sources[first]:
                raise ValueError(f"examples {first} and {i} share group {g!r} but have different sources; "
                                 "a group is one source with all its references (give each source its own group)")
    return [(dataset.sources[members[g][0]], [dataset.targets[i] for i in members[g]]) for g in order]


def _check_vocab(vocab, dataset):
    """``vocab`` decodes ``dataset``'s ids: a Vocab equal to the one the dataset was encoded with."""
    if not isinstance(vocab, Vocab):
        raise TypeError(f"vocab must be a fastvae.data.Vocab, got {type(vocab).__name__}")
    if getattr(dataset, "vocab", vocab) != vocab:
        raise ValueError("vocab is not the vocabulary dataset was encoded with: its ids would decode to other words")


def _generate_tokens(model, dataset, vocab, num_samples, strategy, max_length, temperature, top_k, top_p, beam_size,
                     batch_size, max_inputs, generator):
    """``[(source tokens, [reference tokens], [sample tokens])]`` per input (token lists, no specials)."""
    _check_model(model, conditional_only=True)
    _check_dataset(model, dataset)
    _check_positive_int("num_samples", num_samples)
    _check_positive_int("batch_size", batch_size)
    if max_inputs is not None:
        _check_positive_int("max_inputs", max_inputs)
    _check_generator(generator)
    _check_vocab(vocab, dataset)
    if len(vocab) != model.config["vocab_size"]:
        raise ValueError(f"vocab has {len(vocab)} tokens, the model's vocabulary {model.config['vocab_size']}")
    device = next(model.parameters()).device
    groups = _groups(dataset, max_inputs)
    out = []
    for start in range(0, len(groups), batch_size):
        chunk = groups[start : start + batch_size]
        context, context_lengths = pad([source for source, _ in chunk], vocab.pad_id)
        tokens, lengths = model.generate(
            context.to(device),
            context_lengths.to(device),
            num_samples=num_samples,
            strategy=strategy,
            max_length=max_length,
            temperature=temperature,
            top_k=top_k,
            top_p=top_p,
            beam_size=beam_size,
            generator=generator,
        )
        tokens, lengths = tokens.cpu(), lengths.cpu()
        for b, (source, targets) in enumerate(chunk):
            samples = [vocab.decode(tokens[b, s, : int(lengths[b, s])]) for s in range(num_samples)]
            out.append((vocab.decode(source), [vocab.decode(t) for t in targets], samples))
    return out


def generate_texts(model, dataset, vocab, num_samples=10, strategy="sample", max_length=30, temperature=1.0, top_k=0,
                   top_p=1.0, beam_size=4, batch_size=64, max_inputs=None, generator=None):
    """Decoded samples per distinct input: ``[{"source": str, "references": [str], "samples": [str]}]``.

    Arguments as :func:`evaluate_generation`. Sentences are tokens joined by
    single spaces, without ``<eos>``, ``<pad>`` or ``<sos>`` (``<unk>`` kept).
    """
    triples = _generate_tokens(model, dataset, vocab, num_samples, strategy, max_length, temperature, top_k, top_p,
                               beam_size, batch_size, max_inputs, generator)
    return [_as_text(t) for t in triples]


def _as_text(triple):
    source, references, samples = triple
    return {
        "source": " ".join(source),
        "references": [" ".join(r) for r in references],
        "samples": [" ".join(s) for s in samples],
    }


def default_strategy(model):
    """The paper's decoding: beam search for a Seq2Seq (no latent to sample), greedy per z for the VAEs."""
    return "beam" if isinstance(model, Seq2Seq) else "greedy"


def evaluate_generation(model, dataset, vocab, num_samples=10, strategy=None, max_length=30, temperature=1.0,
                        top_k=0, top_p=1.0, beam_size=4, batch_size=64, max_inputs=None, generator=None,
                        return_texts=False, seen_sources=None, bleu_smoothing="method7", bleu_formula=MEAN_1_3,
                        shuffle_seed=SHUFFLE_SEED):
    """BLEU-P/R, context gain and distinct-n of responses generated for every distinct input of ``dataset``.

    model: Seq2Seq, CVAE or SLCVAE (TypeError naming ``model`` for a SentenceVAE).
    dataset: a conditional TextDataset. Its examples are grouped by
        ``dataset.groups``: one input per group (its source), whose
        references are the targets of all the group's examples. Only the
        first ``max_inputs`` groups (in order of first appearance) with
        ``max_inputs`` set.
    vocab: the Vocab that decodes ids (references and samples alike).
    num_samples, strategy, max_length, temperature, top_k, top_p, beam_size,
        generator: passed to ``model.generate`` for ``batch_size`` inputs at
        a time (``num_samples`` responses per input; z from the prior).
        ``strategy=None``: the paper's protocol (:func:`default_strategy`:
        greedy per z, Seq2Seq the ``num_samples`` best beam hypotheses), as
        ``fastvae evaluate`` does.

    Returns ``inputs``, ``num_samples``, ``bleu_precision`` and
    ``bleu_recall`` (:func:`fastvae.metrics.corpus_bleu_pr`: mean over
    inputs of the best BLEU per sample / per reference), ``distinct_1``,
    ``distinct_2`` (:func:`fastvae.metrics.distinct_n` over all generated
    samples of all inputs; the SLCVAE paper's definition, which falls as more
    text is pooled), ``intra_distinct_1``/``intra_distinct_2`` (distinct-n
    among one input's samples, averaged over inputs: how different the
    samples of one input are), ``avg_length`` (mean tokens per sample, no
    ``<eos>``), ``strategy`` and ``decoding`` (the settings that shaped the
    samples: ``strategy`` and ``max_length``, plus ``temperature``,
    ``top_k``, ``top_p`` when sampling, ``beam_size`` for beam search). With
    ``return_texts=True``: ``(report, texts)``, ``texts`` as
    :func:`generate_texts` returns them.

    seen_sources: optional, the sources of the training data as id lists
        (``train.sources`` of a TextDataset built with the same vocabulary
        and ``max_length``). The report then also holds ``seen`` and
        ``unseen``: the same metrics over the inputs whose source occurs
        among them and over the rest (:func:`split_by_seen`). Corpora whose
        test contexts repeat training ones (DailyDialog: 23% of the test
        contexts) reward a model that memorizes its training responses;
        ``unseen`` is the score without them.

    bleu_smoothing: the BLEU smoothing (:func:`fastvae.metrics.bleu`):
        ``"method7"`` (the paper's, as the installed NLTK computes it) or
        ``"method7-legacy"`` (as NLTK 3.2.2-3.4.5, the papers' years,
        computed it); recorded in the report as ``bleu_smoothing``.
    bleu_formula: ``"mean-1-3"`` (the mean of BLEU-1..3) or
        ``"cumulative-3"`` (one BLEU-3 with weights 1/3 each: the SLCVAE
        authors' code; with ``bleu_smoothing="method7-legacy"`` their
        scoring exactly); recorded as ``bleu_formula``.

    Context use: the same samples are also scored against the references
    of another input, input ``perm[i]`` for input ``i``, ``perm`` the fixed
    derangement :func:`fastvae.metrics.derangement` of the scored inputs
    with ``shuffle_seed`` (recorded as ``shuffle_seed``).
    ``shuffled_bleu_precision``/``shuffled_bleu_recall`` are those scores,
    ``context_gain_precision``/``context_gain_recall`` BLEU-P/R minus them,
    and ``context_gain_spread`` their spread over a bootstrap of the inputs
    (:func:`fastvae.metrics.context_gain`: standard deviation and 95 %
    interval, 1,000 resamples, seed 0). Responses that do not depend on the
    input have a gain of about 0. With a single input there is no other
    input to shuffle with: these keys are None.
    """
    check_smoothing(bleu_smoothing)
    check_bleu_formula(bleu_formula)
    _check_seed(shuffle_seed)
    if strategy is None:
        _check_model(model)
        strategy = default_strategy(model)
    seen = _seen_mask(dataset, max_inputs, seen_sources)
    triples = _generate_tokens(model, dataset, vocab, num_samples, strategy, max_length, temperature, top_k, top_p,
                               beam_size, batch_size, max_inputs, generator)
    report = _generation_report(triples, num_samples, strategy, seen, bleu_smoothing, bleu_formula, shuffle_seed)
    beam_size = model.beam_width(strategy, beam_size, num_samples)  # the beam that ran
    report["decoding"] = _decoding_settings(strategy, max_length, temperature, top_k, top_p, beam_size)
    if return_texts:
        return report, [_as_text(t) for t in triples]
    return report


def _decoding_settings(strategy, max_length, temperature, top_k, top_p, beam_size):
    """The generation settings that apply to ``strategy`` (the rest are ignored by it, so not reported)."""
    settings = {"strategy": strategy, "max_length": max_length}
    if strategy == "sample":
        settings.update(temperature=temperature, top_k=top_k, top_p=top_p)
    elif strategy == "beam":
        settings["beam_size"] = beam_size
    return settings


def evaluate_random_responses(dataset, responses, vocab, num_samples=10, max_inputs=None, generator=None,
                              seen_sources=None, bleu_smoothing="method7", bleu_formula=MEAN_1_3,
                              shuffle_seed=SHUFFLE_SEED):
    """The same report as :func:`evaluate_generation` for a baseline that ignores the input.

    Every distinct input of the conditional ``dataset`` gets ``num_samples``
    responses drawn uniformly at random (with replacement) from
    ``responses`` -- typically the training targets, ``train.targets`` of a
    :class:`TextDataset` built with the same ``vocab``. It shows which BLEU
    and distinct-n a model reaches without looking at its context at all.

    responses: lists of token ids (a trailing ``<eos>`` is dropped), at least one non-empty.
    vocab: the Vocab that decodes ids (``<unk>`` stays ``<unk>``, as in model outputs).
    generator: a ``torch.Generator`` for the draws (None: the global RNG).

    seen_sources, bleu_smoothing, bleu_formula, shuffle_seed: as in
    :func:`evaluate_generation` (the context gain of this baseline is 0 up
    to the draws' noise: a measure of that noise).

    The report's ``strategy`` is ``"random-response"``.
    """
    check_smoothing(bleu_smoothing)
    check_bleu_formula(bleu_formula)
    _check_seed(shuffle_seed)
    if not getattr(dataset, "conditional", False):
        raise ValueError("dataset must be conditional (examples with a source): the baseline answers sources")
    _check_positive_int("num_samples", num_samples)
    if max_inputs is not None:
        _check_positive_int("max_inputs", max_inputs)
    _check_generator(generator)
    _check_vocab(vocab, dataset)
    responses = [] if isinstance(responses, (str, bytes)) else [r.tolist() if hasattr(r, "tolist") else r for r in responses]
    for r in responses:
        if isinstance(r, (str, bytes)) or not all(isinstance(i, int) and not isinstance(i, bool) for i in r):
            raise TypeError(f"responses must hold token-id lists (e.g. train.targets), got {r!r:.60}")
    pool = [vocab.decode(r) for r in responses]
    pool = [r for r in pool if r]
    if not pool:
        raise ValueError("responses must hold at least one non-empty response")
    seen = _seen_mask(dataset, max_inputs, seen_sources)
    groups = _groups(dataset, max_inputs)
    picks = torch.randint(len(pool), (len(groups), num_samples), generator=generator).tolist()
    triples = [
        (vocab.decode(source), [vocab.decode(t) for t in targets], [pool[i] for i in row])
        for (source, targets), row in zip(groups, picks)
    ]
    return _generation_report(triples, num_samples, "random-response", seen, bleu_smoothing, bleu_formula,
                              shuffle_seed)


def evaluate_echo_responses(dataset, vocab, separator=EOU, max_inputs=None, seen_sources=None,
                            bleu_smoothing="method7", bleu_formula=MEAN_1_3, shuffle_seed=SHUFFLE_SEED):
    """The same report for a baseline that answers every input with its own last segment.

    The reply is the part of the input's source after its last ``separator``
    token (DailyDialog: the utterance just before the response; the whole
    source when it holds no separator). No model, no randomness: one
    response per input, so BLEU-precision equals BLEU-recall. It shows how
    much BLEU mere overlap with the context earns.

    dataset: a conditional TextDataset; vocab: the Vocab that decodes ids.
    seen_sources, bleu_smoothing, bleu_formula, shuffle_seed: as in
    :func:`evaluate_generation`. The report's ``strategy`` is ``"echo-context"``.
    """
    check_smoothing(bleu_smoothing)
    check_bleu_formula(bleu_formula)
    _check_seed(shuffle_seed)
    if not getattr(dataset, "conditional", False):
        raise ValueError("dataset must be conditional (examples with a source): the baseline echoes sources")
    if max_inputs is not None:
        _check_positive_int("max_inputs", max_inputs)
    if not isinstance(separator, str):
        raise TypeError(f"separator must be a token (str), got {type(separator).__name__}")
    _check_vocab(vocab, dataset)
    seen = _seen_mask(dataset, max_inputs, seen_sources)
    triples = []
    for source, targets in _groups(dataset, max_inputs):
        words = vocab.decode(source)
        cut = len(words) - words[::-1].index(separator) if separator in words else 0
        triples.append((words, [vocab.decode(t) for t in targets], [words[cut:]]))
    return _generation_report(triples, 1, "echo-context", seen, bleu_smoothing, bleu_formula, shuffle_seed)


def split_by_seen(dataset, seen_sources, max_inputs=None):
    """Which inputs of the conditional ``dataset`` have a source that occurs in ``seen_sources``.

    One bool per distinct input, in the order :func:`evaluate_generation`
    scores them (groups in order of first appearance, the first
    ``max_inputs`` with it set). Sources are compared as id sequences, as
    the model sees them (after the vocabulary and ``max_length``), so both
    sides must come from the same vocabulary and ``max_length``.

    seen_sources: an iterable of id lists (e.g. ``train.sources``); a
        TextDataset is taken to mean its ``sources``.
    """
    if not getattr(dataset, "conditional", False):
        raise ValueError("dataset must be conditional (examples with a source) to compare its sources")
    if max_inputs is not None:
        _check_positive_int("max_inputs", max_inputs)
    if isinstance(seen_sources, (str, bytes)):
        raise TypeError("seen_sources must hold id lists, not a string")
    if hasattr(seen_sources, "sources"):
        if seen_sources.sources is None:
            raise ValueError("seen_sources is a dataset without sources (sentence-only data)")
        if len(seen_sources.vocab) != len(dataset.vocab):
            raise ValueError(f"seen_sources was encoded with a {len(seen_sources.vocab)}-token vocabulary, "
                             f"dataset with {len(dataset.vocab)} tokens: ids would not compare")
        seen_sources = seen_sources.sources
    try:
        known = {tuple(int(i) for i in source) for source in seen_sources}
    except TypeError as err:
        raise TypeError(f"seen_sources must be an iterable of id lists: {err}") from None
    return [tuple(source) in known for source, _ in _groups(dataset, max_inputs)]


def _seen_mask(dataset, max_inputs, seen_sources):
    return None if seen_sources is None else split_by_seen(dataset, seen_sources, max_inputs)


def _generation_report(triples, num_samples, strategy, seen, smoothing, formula, shuffle_seed):
    # BLEU (NLTK, the costly part) once per input, against its own references and against those of input
    # perm[i]; the seen/unseen parts average the same per-input scores
    bleu = [bleu_precision_recall(samples, references, smoothing, formula) for _, references, samples in triples]
    shuffled = None
    if len(triples) > 1:
        perm = derangement(len(triples), shuffle_seed)
        shuffled = [bleu_precision_recall(samples, triples[j][1], smoothing, formula)
                    for (_, _, samples), j in zip(triples, perm)]
    report = _scores(triples, bleu, shuffled, num_samples, strategy)
    report.update(bleu_smoothing=smoothing, bleu_formula=formula, shuffle_seed=shuffle_seed)
    if seen is not None:
        for name, keep in (("seen", True), ("unseen", False)):
            kept = [i for i, s in enumerate(seen) if s == keep]
            # an empty part has nothing to score: only its count
            report[name] = (_scores([triples[i] for i in kept], [bleu[i] for i in kept],
                                    None if shuffled is None else [shuffled[i] for i in kept], num_samples, strategy)
                            if kept else {"inputs": 0.0})
    return report


_NO_GAIN = dict.fromkeys(("shuffled_bleu_precision", "shuffled_bleu_recall", "context_gain_precision",
                          "context_gain_recall", "context_gain_spread"))


def _scores(triples, bleu, shuffled, num_samples, strategy):
    """The report's metrics over ``triples``; ``bleu``/``shuffled`` hold their (BLEU-P, BLEU-R) per input
    against their own / the shuffled references (``shuffled`` None: a single input, no context gain)."""
    all_samples = [s for _, _, samples in triples for s in samples]
    precision, recall = mean_precision_recall(bleu)
    return {
        "inputs": float(len(triples)),
        "num_samples": float(num_samples),
        "bleu_precision": precision,
        "bleu_recall": recall,
        "distinct_1": float(distinct_n(all_samples, 1)),
        "distinct_2": float(distinct_n(all_samples, 2)),
        "intra_distinct_1": sum(distinct_n(t[2], 1) for t in triples) / len(triples),
        "intra_distinct_2": sum(distinct_n(t[2], 2) for t in triples) / len(triples),
        "avg_length": sum(len(s) for s in all_samples) / max(len(all_samples), 1),
        "strategy": strategy,
        **(_NO_GAIN if shuffled is None else context_gain(bleu, shuffled, BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED)),
    }


# ------------------------------------------------------------------ report


def _plain(value, where="", non_finite=None):
    """Numbers (Python, NumPy, 0-d tensors) -> plain float/int/bool; containers recursively.

    NaN and infinities become ``None`` (JSON has no such numbers); their key
    paths are appended to ``non_finite`` when it is a list.
    """
    if isinstance(value, dict):
        return {str(k): _plain(v, f"{where}.{k}" if where else str(k), non_finite) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v, f"{where}[{i}]", non_finite) for i, v in enumerate(value)]
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            return [_plain(v, f"{where}[{i}]", non_finite) for i, v in enumerate(value.tolist())]
        value = value.item()
    elif getattr(value, "shape", None) == () and hasattr(value, "item"):  # NumPy scalars (np.float32, np.bool_)
        value = value.item()
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        value = float(value)
        if math.isfinite(value):
            return value
        if non_finite is not None:
            non_finite.append(where)
        return None
    raise TypeError(f"report holds a {type(value).__name__}, which JSON cannot store: {value!r}")


def write_report(path, report):
    """Write ``report`` (a dict) to ``path`` as JSON: sorted keys, indent 2, numbers as plain floats/ints.

    Atomic: written to a temporary file in the same directory, then renamed
    over ``path`` (its directory is created if needed), with the umask's
    permissions (:func:`fastvae._files.atomic_write`). Returns ``path``.
    NaN and infinite values (a diverged model's NLL) are written as ``null``,
    with a warning naming them, so any JSON reader can load the file.
    """
    if not isinstance(report, dict):
        raise TypeError(f"report must be a dict, got {type(report).__name__}")
    non_finite = []
    data = _plain(report, non_finite=non_finite)
    if non_finite:
        shown = ", ".join(non_finite[:8]) + (f" and {len(non_finite) - 8} more" if len(non_finite) > 8 else "")
        warnings.warn(f"report values that are NaN or infinite are written as null (JSON has no such numbers): {shown}",
                      stacklevel=2)
    def write(f):
        json.dump(data, f, indent=2, sort_keys=True, allow_nan=False)
        f.write("\n")

    return atomic_write(os.fspath(path), write, binary=False)
