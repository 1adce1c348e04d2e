"""Evaluation of a trained model on a :class:`fastvae.data.TextDataset`.

* :func:`evaluate_likelihood` (``likelihood.py``) - reconstruction NLL, KL,
  ELBO, perplexities, active units, mutual information and an
  importance-weighted NLL estimate.
* :func:`evaluate_generation` (``generation.py``) - BLEU-P/R and
  distinct-1/2 of responses sampled for every distinct source of a
  conditional dataset, and the context gain: BLEU-P/R minus the BLEU-P/R of
  the same responses against another input's references
  (:func:`generate_texts` gives the decoded samples themselves; the scores
  are computed in ``scoring.py``).
* :func:`evaluate_random_responses` (``baselines.py``) - the same metrics for
  random training responses, a baseline that ignores the input (its context
  gain is about 0); :func:`evaluate_echo_responses` - for each input's own
  last utterance.
* :func:`write_report` (``report.py``) - a report dict as JSON, written atomically.
* ``checks.py`` - the argument checks (named TypeError/ValueError), also
  used by :mod:`fastvae.plots`.

Notation: x is the target sentence, c the context (conditional models), z the
latent code, q(z|x[,c]) the recognition network, p(z[|c]) the prior
(N(0, I) for SentenceVAE, the prior net for CVAE/SLCVAE). NLLs are in nats,
summed over a sentence's tokens, ``<eos>`` included.
"""

from fastvae.evaluate.baselines import evaluate_echo_responses, evaluate_random_responses
from fastvae.evaluate.generation import default_strategy, evaluate_generation, generate_texts
from fastvae.evaluate.likelihood import ACTIVE_UNITS_THRESHOLD, LOG_2PI, evaluate_likelihood, posterior_parameters
from fastvae.evaluate.report import write_report
from fastvae.evaluate.scoring import split_by_seen

__all__ = [
    "evaluate_likelihood",
    "evaluate_generation",
    "evaluate_random_responses",
    "evaluate_echo_responses",
    "generate_texts",
    "posterior_parameters",
    "split_by_seen",
    "write_report",
    "default_strategy",
    "ACTIVE_UNITS_THRESHOLD",
    "LOG_2PI",
]
