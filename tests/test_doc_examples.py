"""The Python examples of the README and of the docs pages run as written.

Every ```python block of README.md and docs/**/*.md is one test: it runs in a
fresh namespace, in an empty working directory (examples may write files). A
block that needs a data set or minutes of training is marked by the line just
above its opening fence:

    <!-- docs-test: skip (the reason) -->

It is then compiled (a syntax error still fails) but not run, and the skip
says why. Such blocks are kept few (MAX_SKIPPED); docs/getting-started.md
documents the marker.
"""

import pathlib
import re

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]
BLOCK = re.compile(r"^(?P<marker><!-- docs-test: skip (?P<why>.*?) -->\n)?```python\n(?P<code>.*?)^```", re.M | re.S)
SKIP_LINE = re.compile(r"^<!-- docs-test: skip\b.*-->$", re.M)
FENCED = re.compile(r"^```.*?^```", re.M | re.S)  # code blocks (a page may show the marker inside one)
MAX_SKIPPED = 3


def _blocks():
    found = []
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        for k, m in enumerate(BLOCK.finditer(text)):
            line = text.count("\n", 0, m.start("code")) + 1
            name = f"{page.relative_to(REPO)}:{line}"
            found.append(pytest.param(m.group("code"), m.group("why"), id=name))
    return found


BLOCKS = _blocks()


def test_pages_have_examples():
    names = [p.id for p in BLOCKS]
    assert sum(n.startswith("README.md") for n in names) >= 1
    assert sum(n.startswith("docs/") for n in names) >= 8, names


def test_skip_markers_are_few_and_explained():
    skipped = [p for p in BLOCKS if p.values[1] is not None]
    assert len(skipped) <= MAX_SKIPPED, [p.id for p in skipped]
    for p in skipped:
        assert re.fullmatch(r"\(.{10,}\)", p.values[1]), f"{p.id}: say why in parentheses, got {p.values[1]!r}"
    # a marker that is not right above a python fence would silently do nothing
    markers = sum(len(SKIP_LINE.findall(FENCED.sub("", page.read_text(encoding="utf-8")))) for page in PAGES)
    assert markers == len(skipped), "a docs-test marker must sit on the line right above a ```python fence"


def test_skip_marker_is_read():
    page = "text\n<!-- docs-test: skip (needs the PTB files) -->\n```python\nx = 1\n```\n```python\ny = 2\n```\n"
    found = [(m.group("why"), m.group("code")) for m in BLOCK.finditer(page)]
    assert found == [("(needs the PTB files)", "x = 1\n"), (None, "y = 2\n")]


@pytest.mark.parametrize("code, why", BLOCKS)
def test_example_runs(code, why, tmp_path, monkeypatch):
    compiled = compile(code, "documentation example", "exec")
    if why is not None:
        pytest.skip(f"marked in the page: {why}")
    monkeypatch.chdir(tmp_path)
    exec(compiled, {"__name__": "doc_example"})
