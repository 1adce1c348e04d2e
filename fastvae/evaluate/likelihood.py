"""The likelihood side of evaluation: NLL, KL, ELBO, perplexities, active units, mutual information and the
importance-weighted NLL of a model over a dataset (:func:`evaluate_likelihood`), and q's parameters
(:func:`posterior_parameters`)."""

import math

import torch

from fastvae.data.dataset import batches
from fastvae.devices import usable_device
from fastvae.evaluate.checks import check_dataset, check_generator, check_model, check_positive_int
from fastvae.models.base import evaluating

LOG_2PI = math.log(2.0 * math.pi)
ACTIVE_UNITS_THRESHOLD = 0.01


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
    check_model(model)
    if not model.has_latent:
        raise TypeError(f"model is a {type(model).__name__}, which has no latent code and no posterior")
    terms = model.likelihood_terms(batch)
    return terms.mu_q, terms.logvar_q


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
    check_model(model)
    check_dataset(model, dataset)
    check_positive_int("batch_size", batch_size)
    if isinstance(iw_samples, bool) or not isinstance(iw_samples, int) or iw_samples < 0:
        raise ValueError(
            f"iw_samples must be a non-negative integer (0: no importance-weighted estimate), got {iw_samples!r}"
        )
    check_generator(generator)
    device = usable_device(device)
    is_vae = model.has_latent
    K = iw_samples if is_vae else 0
    n_sent = n_tok = 0
    rec_total = kl_total = iw_total = mi_total = 0.0
    mus = []
    with evaluating(model):
        for batch in batches(dataset, batch_size, shuffle=False, bucket=True):
            batch = batch.to(device)
            t = model.likelihood_terms(batch)
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
