"""``FASTVAE_BENCH_SAVE=1``: a benchmark session merges its rows into the saved results of its CPU class (the ISA
fastvae's kernels ran with and the CPU's vendor), it does not replace them.

Pure Python, no timing: the save helper of ``benchmarks/conftest.py`` on a file in tmp_path.
"""

import json
import os
import re

import pytest

BENCHMARKS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks")


@pytest.fixture
def bench(benchmarks_module):
    """benchmarks/conftest.py as a plain module (tests/ has its own conftest, so not ``import conftest``)."""
    return benchmarks_module("conftest.py")


def ratio_row(case, shape, baseline, speedup):
    return {"case": case, "shape": shape, "baseline": baseline, "baseline_ms": speedup, "fastvae_ms": 1.0,
            "speedup": speedup, "target": 3.0}


VENDOR_OF = {"AMD EPYC 9R14": "amd", "AMD EPYC": "amd", "AMD EPYC 7B12": "amd", "AMD EPYC 7R32": "amd",
             "Intel(R) Xeon(R) Platinum 8488C": "intel", "Intel(R) Xeon(R) CPU @ 2.20GHz": "intel"}
INTEL = "Intel(R) Xeon(R) Platinum 8488C"


def machine(date, command, isa="avx512", cpu="AMD EPYC 9R14", aten=None):
    """A session's machine as ``_ratios.machine_info`` describes it (the vendor: of the CPU string)."""
    return {"date": date, "command": command, "torch": "2.13.0+cpu", "cpu_capability": f"isa={isa} blas=direct",
            "isa": isa, "aten_cpu_capability": aten or {"avx512": "AVX512", "avx2": "AVX2"}.get(isa, "DEFAULT"),
            "cpu": cpu, "vendor": VENDOR_OF.get(cpu, "other"), "rounds": 21}


OLD_DATE, NEW_DATE = "2026-11-22T14:02:11+00:00", "2026-12-01T09:00:00+00:00"
MEMORY = "peak memory growth of one call (fresh process per candidate, MB)"


def saved_record():
    """A record as saved before rows carried their date, ISA, CPU and vendor (the machine block: no ``"isa"`` or
    ``"vendor"`` either)."""
    rows = [ratio_row("latent", shape, base, 5.0) for shape in ("B64 Z8", "B512 Z64") for base in ("*_ref", "idiom")]
    rows.append(ratio_row("lstm", "B64", "nn.LSTM", 2.0))
    memory = [{"case": "linear CE", "shape": "N1280", "baseline": "F.cross_entropy", "fastvae MB": "26.3"}]
    old_machine = machine(OLD_DATE, "FASTVAE_BENCH_SAVE=1 python -m pytest benchmarks -q", cpu="AMD EPYC")
    for key in ("isa", "aten_cpu_capability", "vendor"):
        del old_machine[key]
    return {"machine": old_machine, "rows": rows, "tables": {MEMORY: memory}}


def test_a_subset_run_replaces_its_rows_and_keeps_the_others(bench, tmp_path):
    path = tmp_path / "cpu-avx512-amd.json"
    old = saved_record()
    path.write_text(json.dumps(old, indent=2) + "\n", encoding="utf-8")
    new_rows = [ratio_row("latent", "B64 Z8", "*_ref", 7.0), ratio_row("latent", "B64 Z8", "idiom", 2.0)]
    info = machine(NEW_DATE, "FASTVAE_BENCH_SAVE=1 python -m pytest benchmarks -k 'latent and B64'")
    bench.save_results(str(path), info, new_rows, {})

    saved = json.loads(path.read_text(encoding="utf-8"))
    assert set(saved) == {"machine", "rows", "tables"}
    # the machine block describes the latest session (and the device)
    assert saved["machine"]["date"] == NEW_DATE and "latent and B64" in saved["machine"]["command"]
    assert saved["machine"]["device"] == "cpu" and saved["machine"]["isa"] == "avx512"
    assert saved["machine"]["vendor"] == "amd"
    # every row is still there, in the old order; the re-measured ones replaced, dated and tagged with the new session
    key = lambda r: (r["case"], r["shape"], r["baseline"])  # noqa: E731
    assert [key(r) for r in saved["rows"]] == [key(r) for r in old["rows"]]
    by_key = {key(r): r for r in saved["rows"]}
    assert by_key["latent", "B64 Z8", "*_ref"]["speedup"] == 7.0
    assert by_key["latent", "B64 Z8", "idiom"]["speedup"] == 2.0
    for r in saved["rows"][:2]:
        assert (r["measured"], r["isa"], r["cpu"], r["vendor"]) == (NEW_DATE, "avx512", "AMD EPYC 9R14", "amd")
    for r in saved["rows"][2:]:  # not re-measured: the old numbers, with the old record's date, ISA, CPU, vendor
        assert (r["measured"], r["isa"], r["cpu"], r["vendor"]) == (OLD_DATE, "avx512", "AMD EPYC", "amd")
        assert r["speedup"] == next(o for o in old["rows"] if key(o) == key(r))["speedup"]
    # the extra tables the session did not touch are kept
    assert saved["tables"][MEMORY] == [{**old["tables"][MEMORY][0], "measured": OLD_DATE, "isa": "avx512",
                                        "cpu": "AMD EPYC", "vendor": "amd"}]


def test_new_rows_and_tables_are_added_and_a_missing_file_is_created(bench, tmp_path):
    path = tmp_path / "results" / "cpu-avx2-amd.json"
    first = [ratio_row("latent", "B64 Z8", "*_ref", 7.0)]
    bench.save_results(str(path), machine(OLD_DATE, "a", "avx2", "AMD EPYC 7B12"), first, {})
    memory = {MEMORY: [{"case": "linear CE", "shape": "N1280", "baseline": "F.cross_entropy", "fastvae MB": "20"}]}
    later = machine(NEW_DATE, "b", "avx2", "AMD EPYC 7R32")
    bench.save_results(str(path), later, [ratio_row("lstm", "B64", "nn.LSTM", 2.0)], memory)
    saved = json.loads(path.read_text(encoding="utf-8"))
    assert [(r["case"], r["measured"], r["isa"], r["cpu"], r["vendor"]) for r in saved["rows"]] == [
        ("latent", OLD_DATE, "avx2", "AMD EPYC 7B12", "amd"), ("lstm", NEW_DATE, "avx2", "AMD EPYC 7R32", "amd")]
    table_row = saved["tables"][MEMORY][0]
    assert (table_row["fastvae MB"], table_row["measured"], table_row["isa"], table_row["cpu"],
            table_row["vendor"]) == ("20", NEW_DATE, "avx2", "AMD EPYC 7R32", "amd")
    # a table row re-measured replaces its row of the same key
    memory[MEMORY][0]["fastvae MB"] = "21"
    bench.save_results(str(path), machine(NEW_DATE, "c", "avx2"), [], memory)
    saved = json.loads(path.read_text(encoding="utf-8"))
    assert [r["fastvae MB"] for r in saved["tables"][MEMORY]] == ["21"] and len(saved["rows"]) == 2


def test_a_file_that_is_not_a_results_record_is_left_alone(bench, tmp_path):
    path = tmp_path / "cpu-avx512-amd.json"
    for text in ("{not json", '["rows"]', '{"rows": {"a": 1}}', '{"machine": [1], "rows": []}'):
        path.write_text(text, encoding="utf-8")
        with pytest.raises(ValueError, match="cannot merge"):
            bench.save_results(str(path), machine(NEW_DATE, "x"), [ratio_row("a", "b", "c", 1.0)], {})
        assert path.read_text(encoding="utf-8") == text
    assert os.listdir(tmp_path) == ["cpu-avx512-amd.json"]


def test_rows_of_another_isa_are_not_merged_into_a_file(bench, tmp_path):
    path = tmp_path / "cpu-avx512-amd.json"
    path.write_text(json.dumps(saved_record()), encoding="utf-8")  # its ISA: from the old machine's cpu_capability
    text = path.read_text(encoding="utf-8")
    with pytest.raises(ValueError, match="isa=avx512.*isa=avx2"):
        bench.save_results(str(path), machine(NEW_DATE, "x", "avx2"), [ratio_row("a", "b", "c", 1.0)], {})
    assert path.read_text(encoding="utf-8") == text


def test_rows_of_another_vendor_are_not_merged_into_a_file(bench, tmp_path):
    path = tmp_path / "cpu-avx512-amd.json"
    path.write_text(json.dumps(saved_record()), encoding="utf-8")  # its vendor: from the old machine's cpu
    text = path.read_text(encoding="utf-8")
    with pytest.raises(ValueError, match="vendor=amd.*vendor=intel"):
        bench.save_results(str(path), machine(NEW_DATE, "x", cpu=INTEL), [ratio_row("a", "b", "c", 1.0)], {})
    assert path.read_text(encoding="utf-8") == text
    # the session's vendor, when its info has none, is read from its cpu too
    no_vendor = {k: v for k, v in machine(NEW_DATE, "x", cpu=INTEL).items() if k != "vendor"}
    with pytest.raises(ValueError, match="vendor=amd.*vendor=intel"):
        bench.save_results(str(path), no_vendor, [ratio_row("a", "b", "c", 1.0)], {})
    assert path.read_text(encoding="utf-8") == text
    # a row tagged with another vendor than the file's machine block is refused as well
    record = saved_record()
    record["rows"][0]["vendor"] = "intel"
    path.write_text(json.dumps(record), encoding="utf-8")
    text = path.read_text(encoding="utf-8")
    with pytest.raises(ValueError, match="vendor=amd/intel.*vendor=amd"):
        bench.save_results(str(path), machine(NEW_DATE, "x"), [ratio_row("a", "b", "c", 1.0)], {})
    assert path.read_text(encoding="utf-8") == text
    # the same vendor merges
    path.write_text(json.dumps(saved_record()), encoding="utf-8")
    saved = bench.save_results(str(path), machine(NEW_DATE, "x", cpu="AMD EPYC 7R32"), [ratio_row("a", "b", "c", 1.0)])
    assert {r["vendor"] for r in saved["rows"]} == {"amd"} and len(saved["rows"]) == 6


def test_each_isa_and_vendor_has_its_own_results_file(bench):
    paths = set()
    for isa in ("avx2", "avx512", "generic"):
        for cpu, vendor in (("AMD EPYC 9R14", "amd"), (INTEL, "intel"), ("Neoverse-V2", "other")):
            info = machine(NEW_DATE, "x", isa, cpu=cpu)
            path = bench.results_path_of(info)
            assert path == bench.results_path(isa, vendor) == os.path.join(
                BENCHMARKS, "results", f"{bench.DEVICE}-{isa}-{vendor}.json")
            # without "vendor" (an older machine_info): derived from the CPU string
            assert bench.results_path_of({k: v for k, v in info.items() if k != "vendor"}) == path
            paths.add(path)
    assert len(paths) == 9
    # a stated vendor wins over the CPU string
    assert bench.results_path_of({**machine(NEW_DATE, "x", cpu=INTEL), "vendor": "other"}).endswith(
        "cpu-avx512-other.json")
    assert bench.DEVICE == "cpu"


def test_the_vendor_is_derived_from_the_cpu_string(bench):
    assert bench.cpu_vendor("AMD EPYC 9R14") == "amd"
    assert bench.cpu_vendor("AMD Ryzen 9 7950X 16-Core Processor") == "amd"
    assert bench.cpu_vendor("Intel(R) Xeon(R) Platinum 8488C") == "intel"
    assert bench.cpu_vendor("INTEL XEON") == "intel"
    assert bench.cpu_vendor("Neoverse-V2") == bench.cpu_vendor("x86_64") == bench.cpu_vendor("") == "other"
    assert bench.cpu_vendor(None) == "other"
    info = bench.machine_info("x")
    assert info["vendor"] == bench.cpu_vendor(info["cpu"]) in ("amd", "intel", "other")


def test_sessions_without_one_isa_are_not_saved(bench):
    no_extension = {**machine(NEW_DATE, "x"), "isa": None,
                    "cpu_capability": "unavailable: fastvae._C not loaded, fastvae timings are the reference fallback"}
    with pytest.raises(ValueError, match="no ISA.*fastvae._C not loaded"):
        bench.results_path_of(no_extension)
    # fastvae's kernels at AVX2, ATen's (the baselines) still at AVX-512: the ratio is of no CPU class
    with pytest.raises(ValueError, match="isa=avx2 but ATen.*AVX512.*ATEN_CPU_CAPABILITY"):
        bench.results_path_of(machine(NEW_DATE, "x", "avx2", aten="AVX512"))
    # an ATen level fastvae has no name for (another architecture) is no mismatch
    assert bench.results_path_of(machine(NEW_DATE, "x", "generic", aten="SVE256")).endswith("cpu-generic-amd.json")


def test_the_isa_is_read_from_cpu_capability(bench):
    assert bench.isa_of("isa=avx2 blas=direct") == "avx2"
    assert bench.isa_of("blas=aten isa=generic") == "generic"
    assert bench.isa_of("unavailable: fastvae._C not loaded (isa unknown)") is None
    assert bench.isa_of(None) is None


def test_the_committed_results_are_one_file_per_isa(bench):
    """One file per CPU class, ``cpu-<isa>-<vendor>.json``, and every row in it of that ISA and vendor."""
    results = os.path.join(BENCHMARKS, "results")
    files = [f for f in os.listdir(results) if f.startswith("cpu")]
    assert files and "cpu.json" not in files
    classes = []
    for name in files:
        match = re.fullmatch(r"cpu-([a-z0-9_]+)-(amd|intel|other)\.json", name)
        assert match, f"{name}: not cpu-<isa>-<vendor>.json"
        isa, vendor = match.groups()
        classes.append((isa, vendor))
        with open(os.path.join(results, name), encoding="utf-8") as f:
            record = json.load(f)
        assert record["machine"]["isa"] == isa and record["machine"]["vendor"] == vendor, name
        assert bench.cpu_vendor(record["machine"]["cpu"]) == vendor, name
        for row in record["rows"] + [r for t in record.get("tables", {}).values() for r in t]:
            assert row["isa"] == isa and row["vendor"] == vendor and row["cpu"] and row["measured"], (name, row)
            assert bench.cpu_vendor(row["cpu"]) == vendor, (name, row)
    assert len(set(classes)) == len(classes)
    assert ("avx512", "amd") in classes and ("avx2", "amd") in classes
