"""fastvae's BLEU against NLTK 3.4.5's own ``bleu_score.py``, pair by pair (the SLCVAE authors' NLTK).

The release is fetched with ``pip download nltk==3.4.5 --no-deps`` into a
temporary folder; only its ``nltk/translate/bleu_score.py`` is loaded (with
the installed NLTK's ``nltk.util``), as ``examples/compare_nltk_bleu.py``
does. The tests skip only when PyPI cannot be reached; any other failure to
fetch the release fails them.
"""

import random
import socket
import subprocess
import sys
import zipfile

import pytest

from fastvae.metrics import LEGACY_METHOD7, bleu, bleu_precision_recall
from test_examples import load_script

RELEASE = "3.4.5"
WORDS = "i you it the a is good fine thanks no yes what".split()  # few words: every n-gram order matches sometimes


def _pypi_reachable():
    try:
        socket.create_connection(("pypi.org", 443), timeout=10).close()
        return True
    except OSError:
        return False


@pytest.fixture(scope="module")
def nltk345(tmp_path_factory):
    """NLTK 3.4.5's bleu_score module, loaded from the release downloaded from PyPI."""
    folder = tmp_path_factory.mktemp("nltk345")
    done = subprocess.run([sys.executable, "-m", "pip", "download", f"nltk=={RELEASE}", "--no-deps", "-d", str(folder),
                           "-q"], capture_output=True, text=True, timeout=300)
    archives = sorted(folder.glob(f"nltk-{RELEASE}*.zip")) + sorted(folder.glob(f"nltk-{RELEASE}*.tar.gz"))
    if done.returncode != 0 or not archives:
        if not _pypi_reachable():
            pytest.skip(f"PyPI is unreachable: cannot download nltk=={RELEASE}")
        pytest.fail(f"pip download nltk=={RELEASE} failed although PyPI is reachable:\n{done.stdout}{done.stderr}")
    archive = archives[0]
    if archive.suffix == ".zip":
        with zipfile.ZipFile(archive) as z:
            z.extractall(folder)
    else:
        import tarfile

        with tarfile.open(archive) as t:
            t.extractall(folder, filter="data")
    release = folder / f"nltk-{RELEASE}"
    assert (release / "nltk" / "translate" / "bleu_score.py").is_file()
    return load_script("compare_nltk_bleu").load_release(str(release))


def _pairs(n, seed=0):
    rng = random.Random(seed)
    sentence = lambda: [rng.choice(WORDS) for _ in range(rng.choice([1, 1, 2, 3, 4, 5, 7, 10, 14]))]  # noqa: E731
    return [(sentence(), sentence()) for _ in range(n)]


def _release_cumulative_3(module, sample, reference):
    """The SLCVAE code's per-pair score (``utils.get_bleu_stats``): any error counts 0."""
    try:
        return module.sentence_bleu([reference], sample, smoothing_function=module.SmoothingFunction().method7,
                                    weights=[1.0 / 3, 1.0 / 3, 1.0 / 3])
    except Exception:  # noqa: BLE001 - as the authors' code: a one-token sample raised ZeroDivisionError there
        return 0.0


def test_cumulative_3_legacy_equals_nltk_345_pair_by_pair(nltk345):
    pairs = _pairs(3000)
    assert sum(len(s) == 1 for s, _ in pairs) > 100  # the one-token samples that NLTK 3.4.5 cannot score
    worst = 0.0
    for sample, reference in pairs:
        ours = bleu(sample, reference, smoothing=LEGACY_METHOD7, formula="cumulative-3")
        worst = max(worst, abs(ours - _release_cumulative_3(nltk345, sample, reference)))
    assert worst <= 1e-12


def test_mean_1_3_legacy_equals_nltk_345_pair_by_pair(nltk345):
    compare = load_script("compare_nltk_bleu")
    for sample, reference in _pairs(1000, seed=1):
        ours = bleu(sample, reference, smoothing=LEGACY_METHOD7, formula="mean-1-3")
        assert ours == pytest.approx(compare.release_bleu(nltk345, sample, reference, "mean-1-3"), abs=1e-12)


def test_bleu_precision_recall_is_the_authors_get_bleu_stats(nltk345):
    """With one reference per context (DailyDialog), BLEU-P is the mean and BLEU-R the max of the samples' scores."""
    rng = random.Random(2)
    pairs = _pairs(400, seed=3)
    for k in range(0, 400, 10):
        reference = pairs[k][1]
        samples = [s for s, _ in pairs[k : k + rng.randint(1, 10)]]
        scores = [_release_cumulative_3(nltk345, s, reference) for s in samples]
        precision, recall = bleu_precision_recall(samples, [reference], smoothing=LEGACY_METHOD7,
                                                  formula="cumulative-3")
        assert precision == pytest.approx(sum(scores) / len(scores), abs=1e-12)
        assert recall == pytest.approx(max(scores), abs=1e-12)


def test_today_nltk_differs_from_345(nltk345):
    """The check can fail: today's method 7 scores these pairs differently from NLTK 3.4.5's."""
    diffs = [abs(bleu(s, r, formula="cumulative-3") - _release_cumulative_3(nltk345, s, r)) for s, r in _pairs(300)]
    assert max(diffs) > 0.01


def test_compare_script_against_nltk_345(nltk345, tmp_path, capsys):
    import json

    compare = load_script("compare_nltk_bleu")
    release = nltk345.__file__.rsplit("/nltk/translate/", 1)[0]  # the unpacked release of the fixture
    samples = tmp_path / "samples.jsonl"
    lines = [json.dumps({"references": [" ".join(r)], "samples": [" ".join(s) for s, _ in _pairs(5, seed=k)]})
             for k, (_, r) in enumerate(_pairs(40, seed=9))]
    samples.write_text("\n".join(lines) + "\n")
    for formula in ("cumulative-3", "mean-1-3"):
        assert compare.main([release, str(samples), "--bleu", formula]) == 0
        assert "200 sample/reference pairs; largest |BLEU difference| 0 " in capsys.readouterr().out
    assert compare.main([release, str(samples), "--smoothing", "method7"]) == 1
