"""Check fastvae's BLEU against the ``bleu_score.py`` of another NLTK release, sample by sample.

    pip download nltk==3.4.5 --no-deps -d old && unzip -q old/nltk-3.4.5.zip -d old
    fastvae evaluate runs/slcvae --split test --write-samples samples.jsonl
    python examples/compare_nltk_bleu.py old/nltk-3.4.5 samples.jsonl   # cumulative-3, method7-legacy

NLTK_DIR is an unpacked NLTK source release; only its
``nltk/translate/bleu_score.py`` is loaded (old releases no longer import as
a whole on current Pythons), with the installed NLTK's ``nltk.util``.
SAMPLES is a JSON-lines file as ``fastvae evaluate --write-samples`` writes
it (``{"samples": [...], "references": [...]}``, tokens joined by spaces).
Every sample is scored against every reference with that release's
``sentence_bleu`` and ``SmoothingFunction().method7`` and with fastvae's
:func:`fastvae.metrics.bleu` (``--smoothing``), both in the formula
``--bleu``: ``cumulative-3`` (default: one BLEU-3 with weights 1/3 each, as
the SLCVAE authors' ``utils.get_bleu_stats`` calls it) or ``mean-1-3``
(BLEU-1, -2 and -3 averaged). A BLEU-n for which the release raises
ZeroDivisionError (NLTK 3.2.2-3.4.5 on a one-token sample) counts 0, as
fastvae's legacy smoothing gives it (and as the authors' code, which
caught every error, scored it).

Prints the number of pairs and the largest difference; exits 0 when every
difference is within ``--tolerance`` (default 1e-12), 1 otherwise.
"""

import argparse
import importlib.util
import json
import os
import sys
import warnings

from fastvae.metrics import BLEU_FORMULAS, CUMULATIVE_3, LEGACY_METHOD7, bleu

FORMULA_ORDERS = {"mean-1-3": (1, 2, 3), "cumulative-3": (3,)}  # the BLEU-n each formula averages


def load_release(nltk_dir):
    path = os.path.join(nltk_dir, "nltk", "translate", "bleu_score.py")
    if not os.path.isfile(path):
        raise SystemExit(f"compare_nltk_bleu.py: no nltk/translate/bleu_score.py under {nltk_dir!r}")
    spec = importlib.util.spec_from_file_location("release_bleu_score", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def release_bleu(module, sample, reference, formula=CUMULATIVE_3):
    """``sample`` against ``reference`` with the release's own sentence_bleu and method 7, in ``formula``."""
    smoothing = module.SmoothingFunction().method7
    scores = []
    for n in FORMULA_ORDERS[formula]:
        try:
            scores.append(module.sentence_bleu([reference], sample, weights=(1.0 / n,) * n,
                                               smoothing_function=smoothing))
        except ZeroDivisionError:  # NLTK 3.2.2-3.4.5 on a one-token sample (ln 1 = 0); anything else is real
            if len(sample) != 1:
                raise
            scores.append(0.0)
    return sum(scores) / len(scores)


def read_pairs(path, limit):
    pairs = []
    with open(path, encoding="utf-8", errors="strict") as f:
        try:
            lines = list(f)
        except UnicodeDecodeError as exc:
            raise SystemExit(f"compare_nltk_bleu.py: {path} is not UTF-8 text ({exc})")
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
            samples, references = item["samples"], item["references"]
            if not all(isinstance(t, str) for t in list(samples) + list(references)):
                raise TypeError("samples and references must be lists of strings")
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise SystemExit(f"compare_nltk_bleu.py: {path}:{number}: not a --write-samples line ({exc})")
        pairs += [(s.split(), r.split()) for s in samples for r in references if s.split() and r.split()]
        if limit is not None and len(pairs) >= limit:
            return pairs[:limit]
    return pairs


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("nltk_dir", help="an unpacked NLTK source release (holds nltk/translate/bleu_score.py)")
    p.add_argument("samples", help="JSON lines written by fastvae evaluate --write-samples")
    p.add_argument("--smoothing", default=LEGACY_METHOD7, choices=(LEGACY_METHOD7, "method7"),
                   help=f"fastvae's smoothing, compared with the release's method 7 (default {LEGACY_METHOD7})")
    p.add_argument("--bleu", default=CUMULATIVE_3, choices=BLEU_FORMULAS,
                   help=f"the BLEU formula on both sides (default {CUMULATIVE_3}, the SLCVAE authors' code)")
    p.add_argument("--max-pairs", type=int, help="compare only the first N sample/reference pairs")
    p.add_argument("--tolerance", type=float, default=1e-12)
    args = p.parse_args(argv)
    if args.max_pairs is not None and args.max_pairs < 1:
        p.error(f"--max-pairs must be >= 1, got {args.max_pairs}")
    if not args.tolerance >= 0:  # NaN too
        p.error(f"--tolerance must be a number >= 0, got {args.tolerance}")
    if not os.path.isfile(args.samples):
        p.error(f"no samples file at {args.samples!r}")
    module = load_release(args.nltk_dir)
    pairs = read_pairs(args.samples, args.max_pairs)
    if not pairs:
        p.error(f"{args.samples} holds no non-empty sample/reference pair")
    worst = 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # old releases warn about zero counts
        for sample, reference in pairs:
            ours = bleu(sample, reference, smoothing=args.smoothing, formula=args.bleu)
            worst = max(worst, abs(release_bleu(module, sample, reference, args.bleu) - ours))
    print(f"{len(pairs)} sample/reference pairs; largest |BLEU difference| {worst:.3g} "
          f"(fastvae {args.bleu} BLEU, smoothing {args.smoothing!r} vs {args.nltk_dir})")
    return 0 if worst <= args.tolerance else 1


if __name__ == "__main__":
    sys.exit(main())
