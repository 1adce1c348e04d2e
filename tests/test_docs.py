"""The README and the docs site stay short, linked, and true to the measurements and the CLI.

* README.md is at most 200 lines; its links and the site's navigation point to
  files that exist, and every page of docs/ is in mkdocs.yml's navigation.
* The benchmark tables (README and docs/benchmarks.md) equal what
  benchmarks/render_results.py renders from the committed results JSON.
* Every ``--option`` that a documented ``fastvae ...`` or ``python
  examples/...`` command line uses exists in that command's parser.
* Every ``<!-- fastvae-help: COMMAND -->`` of the CLI page names a command.
* The design page's file map names every file of the ops layer (csrc/,
  kernels/, fastvae/ops/, tests/ops/, tests/kernels/), and every path of that
  layer it names exists.

(``mkdocs build --strict``, run by .ci/run, checks the links between pages
and the docstring references.)
"""

import copy
import importlib.util
import json
import pathlib
import re
import shlex
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
README = REPO / "README.md"
DOCS = REPO / "docs"
PAGES = [README, *sorted(DOCS.rglob("*.md"))]
README_MAX_LINES = 200


def _load(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


render = _load("render_results", REPO / "benchmarks" / "render_results.py")
cli_help = _load("cli_help", DOCS / "_hooks" / "cli_help.py")
sphinx_roles = _load("sphinx_roles", DOCS / "_hooks" / "sphinx_roles.py")


# ------------------------------------------------------------ size and links


def test_readme_is_short():
    lines = README.read_text(encoding="utf-8").count("\n")
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines; move detail into docs/ (limit {README_MAX_LINES})"


def _relative_links(text):
    """Targets of markdown links that are paths in the repository (no URL, no pure anchor)."""
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+:", target) or target.startswith("#"):
            continue
        yield target.split("#", 1)[0]


def test_readme_links_point_to_files():
    missing = [t for t in _relative_links(README.read_text(encoding="utf-8")) if not (REPO / t).exists()]
    assert not missing, f"README.md links to missing files: {missing}"
    linked = set(_relative_links(README.read_text(encoding="utf-8")))
    for page in ("docs/getting-started.md", "docs/cli.md", "docs/python-guide.md", "docs/ops.md",
                 "docs/reproducing.md", "docs/benchmarks.md", "docs/design.md", "docs/reference/index.md"):
        assert page in linked, f"README.md does not link {page}"


def _nav_pages():
    text = (REPO / "mkdocs.yml").read_text(encoding="utf-8")
    nav = text.split("\nnav:\n", 1)[1].split("\n\n", 1)[0]
    return re.findall(r":\s*(\S+\.md)\s*$", nav, flags=re.M)


def test_every_page_is_in_the_navigation():
    nav = _nav_pages()
    on_disk = sorted(str(p.relative_to(DOCS)) for p in DOCS.rglob("*.md"))
    assert sorted(nav) == on_disk, {"not in nav": sorted(set(on_disk) - set(nav)),
                                    "in nav, no file": sorted(set(nav) - set(on_disk))}


# ------------------------------------------------------------ the file map

MAPPED = ("csrc", "kernels", "fastvae/ops", "tests/ops", "tests/kernels")


def _expand(name):
    """``a/b_{x,y}.cpp`` -> ``a/b_x.cpp``, ``a/b_y.cpp``; ``n.h/.cpp`` -> ``n.h``, ``n.cpp``."""
    brace = re.search(r"\{([^}]*)\}", name)
    if brace:
        return [e for alt in brace.group(1).split(",") for e in _expand(name[: brace.start()] + alt + name[brace.end():])]
    stem, dot, rest = name.partition(".")
    return [stem + "." + ext.lstrip(".") for ext in rest.split("/")] if "/." in name else [name]


def _mapped_names(text):
    """Every file name the design page spells (a path in backticks, or a name in its file-map block)."""
    words = re.findall(r"[\w{},/.<>-]+\.(?:cpp|h|py)(?:/\.(?:cpp|h|py))?", text)
    return {e for w in words for e in _expand(w)}


def test_design_page_maps_every_file_of_the_ops_layer():
    names = _mapped_names((DOCS / "design.md").read_text(encoding="utf-8"))
    basenames = {n.rsplit("/", 1)[-1] for n in names}
    files = [p for d in MAPPED for p in (REPO / d).rglob("*") if p.suffix in (".cpp", ".h", ".py")]
    unmapped = sorted(str(p.relative_to(REPO)) for p in files if p.name not in basenames and p.name != "__init__.py")
    assert not unmapped, f"docs/design.md does not name {unmapped}"
    paths = [n for n in names if n.startswith(tuple(d + "/" for d in MAPPED)) and "<op>" not in n]
    missing = sorted(n for n in paths if not (REPO / n).exists())
    assert not missing, f"docs/design.md names files that do not exist: {missing}"


# ---------------------------------------------------- the generated tables


EXPECTED_REGIONS = {
    "README.md": ["headline"],
    "docs/benchmarks.md": ["cpu-avx512-amd", "cpu-avx512-amd-extra", "cpu-avx2-amd", "cpu-avx2-amd-extra",
                           "cpu-avx512-intel", "cpu-avx512-intel-extra", "cpu-avx2-intel", "cpu-avx2-intel-extra",
                           "gpu-compile"],
}


@pytest.mark.parametrize("page", render.PAGES)
def test_generated_tables_match_the_results_json(page):
    text = (REPO / page).read_text(encoding="utf-8")
    assert render.region_names(text) == EXPECTED_REGIONS[page]
    rendered = render.apply(text, render.regions())
    assert rendered == text, (
        f"{page}: a benchmark table differs from benchmarks/results/*.json; run python benchmarks/render_results.py"
    )


def test_render_check_passes_on_the_committed_files():
    assert render.main(["--check"]) == 0


def _committed_cpu_classes():
    """The CPU classes with a committed results file, in display order."""
    return [cls for cls in render.cpu_classes() if (REPO / "benchmarks" / "results" / render.cpu_file(*cls)).exists()]


def test_tables_follow_the_json(tmp_path):
    """A changed measurement changes the rendering (so the test above can fail), in both kinds of table."""
    for name in (*(render.cpu_file(*cls) for cls in _committed_cpu_classes()), render.GPU_COMPILE_FILE):
        (tmp_path / name).write_text((REPO / "benchmarks" / "results" / name).read_text(encoding="utf-8"))
    before = render.regions(tmp_path)
    record = json.loads((tmp_path / "cpu-avx2-amd.json").read_text())
    row = next(r for r in record["rows"] if r["case"] == "SLCVAE train step (both phases)")
    row["speedup"], row["fastvae_ms"] = 123.45, 0.5
    (tmp_path / "cpu-avx2-amd.json").write_text(json.dumps(record))
    after = render.regions(tmp_path)
    assert "123.45x" in after["cpu-avx2-amd"] and "123.45x" in after["headline"]
    assert after["cpu-avx512-amd"] == before["cpu-avx512-amd"]
    page = (REPO / "README.md").read_text(encoding="utf-8")
    assert render.apply(page, after) != page


def test_each_cpu_class_has_its_own_file_regions_and_column(tmp_path):
    """(isa, vendor) pairs: one file, two regions and one headline column each, in display order."""
    assert render.CPU_CLASSES[:4] == (("avx512", "amd"), ("avx2", "amd"), ("avx512", "intel"), ("avx2", "intel"))
    assert render.cpu_file("avx512", "intel") == "cpu-avx512-intel.json"
    assert render.cpu_region("avx2", "amd") == "cpu-avx2-amd"
    source = REPO / "benchmarks" / "results" / "cpu-avx512-amd.json"
    record = json.loads(source.read_text(encoding="utf-8"))
    (tmp_path / "cpu-avx512-amd.json").write_text(source.read_text(encoding="utf-8"))
    for r in record["rows"]:  # the same rows as if measured on an Intel Xeon, 2x faster
        r["speedup"], r["fastvae_ms"] = 2 * r["speedup"], r["fastvae_ms"] / 2
        r["cpu"], r["vendor"] = "Intel(R) Xeon(R) Platinum 8488C", "intel"
    record["machine"].update(cpu="Intel(R) Xeon(R) Platinum 8488C", vendor="intel")
    (tmp_path / "cpu-avx512-intel.json").write_text(json.dumps(record))
    regions = render.regions(tmp_path)
    assert regions["cpu-avx512-amd"] != regions["cpu-avx512-intel"]
    assert "CPU Intel(R) Xeon(R) Platinum 8488C" in regions["cpu-avx512-intel"]
    assert "CPU AMD EPYC" in regions["cpu-avx512-amd"]
    assert "vendor" not in regions["cpu-avx512-intel-extra"]  # implied by the file, no column of its own
    header = next(line for line in regions["headline"].splitlines() if line.startswith("| case"))
    assert header == "| case | shape | baseline | AVX-512 (AMD) speed-up | AVX-512 (Intel) speed-up |"
    assert "`benchmarks/results/cpu-avx512-amd.json`, `cpu-avx512-intel.json`" in regions["headline"]
    # the classes without a file: a placeholder in their regions, no column
    for isa, vendor in (("avx2", "amd"), ("avx2", "intel")):
        expected = f"*Not measured yet on this CPU class (`benchmarks/results/cpu-{isa}-{vendor}.json`).*"
        assert regions[f"cpu-{isa}-{vendor}"] == regions[f"cpu-{isa}-{vendor}-extra"] == expected
    assert "AVX2" not in header


def test_a_missing_cpu_class_file_renders_the_placeholder(tmp_path):
    """The committed Intel regions (not measured yet) are placeholders, and a page with them renders."""
    regions = render.regions()
    for isa, vendor in render.CPU_CLASSES:
        if (REPO / "benchmarks" / "results" / render.cpu_file(isa, vendor)).exists():
            assert not regions[f"cpu-{isa}-{vendor}"].startswith("*Not measured yet")
            continue
        expected = f"*Not measured yet on this CPU class (`benchmarks/results/cpu-{isa}-{vendor}.json`).*"
        assert regions[f"cpu-{isa}-{vendor}"] == regions[f"cpu-{isa}-{vendor}-extra"] == expected
    # an empty results folder: every CPU region a placeholder, the headline table without class columns
    empty = render.regions(tmp_path)
    assert empty["cpu-avx512-amd"].startswith("*Not measured yet on this CPU class")
    text = render.BEGIN.format(name="cpu-avx2-intel") + "\nold\n" + render.END.format(name="cpu-avx2-intel")
    assert "Not measured yet" in render.apply(text, empty)


def test_tables_state_the_isa_and_the_date():
    regions = render.regions()
    classes = _committed_cpu_classes()
    assert ("avx512", "amd") in classes and ("avx2", "amd") in classes
    for isa, vendor in classes:
        record = render.load(render.cpu_file(isa, vendor))
        region = render.cpu_region(isa, vendor)
        assert f"ISA `{isa}`" in regions[region]
        assert f"CPU {record['machine']['cpu']}" in regions[region]
        assert record["rows"][0]["measured"][:10] in regions[region]
        for title in record["tables"]:
            assert title in regions[f"{region}-extra"]
        assert len(re.findall(r"^\| ", regions[region], flags=re.M)) == len(record["rows"]) + 1
    assert regions["headline"].count("\n| ") == 1 + len(  # the header, then one line per row
        {(r["case"], r["shape"], r["baseline"]) for rec in (render.load(render.cpu_file(*c)) for c in classes)
         for r in rec["rows"] if (r["case"], r["baseline"]) in render.HEADLINE})
    header = next(line for line in regions["headline"].splitlines() if line.startswith("| case"))
    assert header.count("speed-up") == len(classes)
    for isa, vendor in classes:
        assert f"{render.class_label(isa, vendor)} speed-up" in header


def test_targets_are_rendered_as_measured():
    row = {"speedup": 2.9, "target": 5.0}
    assert render._target(row) == ">= 5x (**not met**)"
    assert render._target({"speedup": 3.0, "target": 3.0}) == ">= 3x (met)"
    assert render._target({"speedup": 1.0, "target": None}) == "-"


def test_extra_tables_put_the_names_first_and_the_target_last():
    """The JSON keeps a row's keys sorted; the rendering orders them: case, shape, baseline, the measured
    columns in EXTRA_COLUMNS' order, columns it does not know, the target -- and right-aligns the numbers."""
    row = {"target": "1x", "zeta": "7", "speed-up": "1.0x", "shape": "S", "case": "C", "baseline": "B",
           "GFLOP per call": "0.5", "isa": "avx2", "cpu": "X", "measured": "2026-12-07T00:00:00"}
    text = render.cpu_extra_tables({"tables": {"T": [dict(sorted(row.items()))]}, "machine": {"isa": "avx2"}})
    header = next(line for line in text.splitlines() if line.startswith("| case"))
    assert [c.strip() for c in header.strip("|").split("|")] == [
        "case", "shape", "baseline", "GFLOP per call", "speed-up", "zeta", "target"]
    align = next(line for line in text.splitlines() if line.startswith("|---"))
    assert align == "|---|---|---|---:|---:|---:|---|"


def test_unknown_region_is_an_error():
    text = render.BEGIN.format(name="nope") + "\n" + render.END.format(name="nope")
    with pytest.raises(ValueError, match="nope"):
        render.apply(text, {"headline": ""})


def test_gpu_table_takes_the_worst_case_per_kernel_and_dtype():
    report = json.loads((REPO / "benchmarks" / "results" / render.GPU_COMPILE_FILE).read_text())
    table = render.gpu_compile_table(report)
    row = next(r for r in report["rows"] if "fp32" in r["dtype"].split("/"))
    worst = copy.deepcopy(row)
    worst["registers"] = 250
    report["rows"].append(worst)
    assert f"| `{row['kernel']}` | fp32 |" in table
    line = next(l for l in render.gpu_compile_table(report).splitlines() if l.startswith(f"| `{row['kernel']}` | fp32 |"))
    assert "| 250 |" in line


# ----------------------------------------------- documented command lines


def _shell_blocks():
    for page in PAGES:
        for m in re.finditer(r"^```bash\n(.*?)^```", page.read_text(encoding="utf-8"), flags=re.M | re.S):
            yield page.relative_to(REPO), m.group(1).replace("\\\n", " ")


def _commands():
    """``(page, program, subcommand or None, [--options])`` of every documented fastvae / examples command."""
    found = []
    for page, block in _shell_blocks():
        for line in block.splitlines():
            for segment in re.split(r"\|\||&&|\||;", line):
                try:
                    words = shlex.split(segment, comments=True)
                except ValueError:
                    words = segment.split()
                if "fastvae" in words:  # fastvae CMD, python -m fastvae CMD, torchrun ... -m fastvae CMD
                    rest = words[words.index("fastvae") + 1:]
                    sub = rest[0] if rest and not rest[0].startswith("-") else None
                    found.append((page, "fastvae", sub, [w.split("=")[0] for w in rest if w.startswith("--")]))
                elif len(words) > 1 and words[0] == "python" and words[1].startswith("examples/"):
                    found.append((page, words[1], None, [w.split("=")[0] for w in words[2:] if w.startswith("--")]))
    return found


COMMANDS = _commands()


def test_documented_fastvae_options_exist():
    from fastvae.cli import build_parser

    parser = build_parser()
    commands = parser.get_default("commands")
    top = {s for a in parser._actions for s in a.option_strings}
    checked = 0
    for page, program, sub, options in COMMANDS:
        if program != "fastvae":
            continue
        if sub is None:
            assert set(options) <= top, (page, options)
            continue
        assert sub in commands, f"{page}: fastvae {sub} is not a command"
        known = {s for a in commands[sub]._actions for s in a.option_strings}
        unknown = [o for o in options if o not in known]
        assert not unknown, f"{page}: fastvae {sub} has no option {unknown}"
        checked += 1
    assert checked >= 20


def test_documented_example_options_exist():
    scripts = sorted({program for _, program, _, _ in COMMANDS if program != "fastvae"})
    assert len(scripts) >= 3, scripts
    for script in scripts:
        result = subprocess.run([sys.executable, script, "--help"], cwd=REPO, capture_output=True, text=True,
                                timeout=120)
        assert result.returncode == 0, result.stderr
        for page, program, _, options in COMMANDS:
            if program == script:
                unknown = [o for o in options if not re.search(re.escape(o) + r"\b", result.stdout)]
                assert not unknown, f"{page}: {script} has no option {unknown}"


def test_cli_help_markers_name_commands():
    text = (DOCS / "cli.md").read_text(encoding="utf-8")
    names = cli_help.MARKER.findall(text)
    assert {"fastvae", "train", "evaluate", "generate", "sample", "interpolate", "plot", "demo"} <= set(names)
    rendered = cli_help.on_page_markdown(text, None, None, None)
    assert "<!-- fastvae-help:" not in rendered
    assert "usage: fastvae train" in rendered and "--max-steps" in rendered
    with pytest.raises(ValueError, match="no such command"):
        cli_help.on_page_markdown("<!-- fastvae-help: nope -->", None, None, None)


def test_sphinx_roles_read_as_code():
    html = "twin of :func:<code>lstm</code>, a :class:<code>Batch</code>; ratio 3:1 and :note: stay"
    assert sphinx_roles.on_page_content(html, None, None, None) == (
        "twin of <code>lstm</code>, a <code>Batch</code>; ratio 3:1 and :note: stay")
