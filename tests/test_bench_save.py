"""``FASTVAE_BENCH_SAVE=1``: a benchmark session merges its rows into the saved results, it does not replace them.

Pure Python, no timing: the save helper of ``benchmarks/conftest.py`` on a file in tmp_path.
"""

import importlib.util
import json
import os

import pytest

BENCHMARKS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks")


@pytest.fixture
def bench(monkeypatch):
    """benchmarks/conftest.py as a plain module (tests/ has its own conftest, so not ``import conftest``)."""
    monkeypatch.syspath_prepend(BENCHMARKS)  # for its ``from _ratios import ...``
    path = os.path.join(BENCHMARKS, "conftest.py")
    spec = importlib.util.spec_from_file_location("fastvae_benchmarks_conftest", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def ratio_row(case, shape, baseline, speedup):
    return {"case": case, "shape": shape, "baseline": baseline, "baseline_ms": speedup, "fastvae_ms": 1.0,
            "speedup": speedup, "target": 3.0}


def machine(date, command):
    return {"date": date, "command": command, "torch": "2.13.0+cpu", "rounds": 21}


OLD_DATE, NEW_DATE = "2026-11-22T14:02:11+00:00", "2026-12-01T09:00:00+00:00"
MEMORY = "peak memory growth of one call (fresh process per candidate, MB)"


def saved_record():
    rows = [ratio_row("latent", shape, base, 5.0) for shape in ("B64 Z8", "B512 Z64") for base in ("*_ref", "idiom")]
    rows.append(ratio_row("lstm", "B64", "nn.LSTM", 2.0))
    memory = [{"case": "linear CE", "shape": "N1280", "baseline": "F.cross_entropy", "fastvae MB": "26.3"}]
    return {"machine": machine(OLD_DATE, "FASTVAE_BENCH_SAVE=1 python -m pytest benchmarks -q"), "rows": rows,
            "tables": {MEMORY: memory}}


def test_a_subset_run_replaces_its_rows_and_keeps_the_others(bench, tmp_path):
    path = tmp_path / "cpu.json"
    old = saved_record()
    path.write_text(json.dumps(old, indent=2) + "\n", encoding="utf-8")
    new_rows = [ratio_row("latent", "B64 Z8", "*_ref", 7.0), ratio_row("latent", "B64 Z8", "idiom", 2.0)]
    info = machine(NEW_DATE, "FASTVAE_BENCH_SAVE=1 python -m pytest benchmarks -k 'latent and B64'")
    bench.save_results(str(path), info, new_rows, {})

    saved = json.loads(path.read_text(encoding="utf-8"))
    assert set(saved) == {"machine", "rows", "tables"}
    # the machine block describes the latest session (and the device)
    assert saved["machine"]["date"] == NEW_DATE and "latent and B64" in saved["machine"]["command"]
    assert saved["machine"]["device"] == "cpu"
    # every row is still there, in the old order; the re-measured ones replaced, dated with the new session
    key = lambda r: (r["case"], r["shape"], r["baseline"])  # noqa: E731
    assert [key(r) for r in saved["rows"]] == [key(r) for r in old["rows"]]
    by_key = {key(r): r for r in saved["rows"]}
    assert by_key["latent", "B64 Z8", "*_ref"]["speedup"] == 7.0
    assert by_key["latent", "B64 Z8", "idiom"]["speedup"] == 2.0
    assert {r["measured"] for r in saved["rows"][:2]} == {NEW_DATE}
    for r in saved["rows"][2:]:  # not re-measured: the old numbers, with the old record's date
        assert r["measured"] == OLD_DATE and r["speedup"] == next(o for o in old["rows"] if key(o) == key(r))["speedup"]
    # the extra tables the session did not touch are kept
    assert saved["tables"][MEMORY] == [{**old["tables"][MEMORY][0], "measured": OLD_DATE}]


def test_new_rows_and_tables_are_added_and_a_missing_file_is_created(bench, tmp_path):
    path = tmp_path / "results" / "cpu.json"
    first = [ratio_row("latent", "B64 Z8", "*_ref", 7.0)]
    bench.save_results(str(path), machine(OLD_DATE, "a"), first, {})
    memory = {MEMORY: [{"case": "linear CE", "shape": "N1280", "baseline": "F.cross_entropy", "fastvae MB": "20"}]}
    bench.save_results(str(path), machine(NEW_DATE, "b"), [ratio_row("lstm", "B64", "nn.LSTM", 2.0)], memory)
    saved = json.loads(path.read_text(encoding="utf-8"))
    assert [(r["case"], r["measured"]) for r in saved["rows"]] == [("latent", OLD_DATE), ("lstm", NEW_DATE)]
    assert saved["tables"][MEMORY][0]["fastvae MB"] == "20" and saved["tables"][MEMORY][0]["measured"] == NEW_DATE
    # a table row re-measured replaces its row of the same key
    memory[MEMORY][0]["fastvae MB"] = "21"
    bench.save_results(str(path), machine(NEW_DATE, "c"), [], memory)
    saved = json.loads(path.read_text(encoding="utf-8"))
    assert [r["fastvae MB"] for r in saved["tables"][MEMORY]] == ["21"] and len(saved["rows"]) == 2


def test_a_file_that_is_not_a_results_record_is_left_alone(bench, tmp_path):
    path = tmp_path / "cpu.json"
    for text in ("{not json", '["rows"]', '{"rows": {"a": 1}}'):
        path.write_text(text, encoding="utf-8")
        with pytest.raises(ValueError, match="cannot merge"):
            bench.save_results(str(path), machine(NEW_DATE, "x"), [ratio_row("a", "b", "c", 1.0)], {})
        assert path.read_text(encoding="utf-8") == text
    assert os.listdir(tmp_path) == ["cpu.json"]


def test_the_results_file_is_named_after_the_device(bench):
    assert os.path.basename(bench.RESULTS_PATH) == f"{bench.DEVICE}.json"
    assert os.path.dirname(bench.RESULTS_PATH) == os.path.join(BENCHMARKS, "results")
