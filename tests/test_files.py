"""fastvae._files: JSON written atomically in one format, and JSON read back with errors that name the file."""

import json
import os

import pytest

from fastvae._files import TEMP_PREFIX, atomic_write_json, atomic_write_text, check_regular_file, read_json_object


def test_json_is_indented_sorted_and_ends_with_a_newline(tmp_path):
    path = tmp_path / "sub" / "report.json"
    assert atomic_write_json(path, {"b": [1, 2.5], "a": {"z": None}}) == os.fspath(path)
    assert path.read_text(encoding="utf-8") == '{\n  "a": {\n    "z": null\n  },\n  "b": [\n    1,\n    2.5\n  ]\n}\n'
    assert read_json_object(path) == {"a": {"z": None}, "b": [1, 2.5]}


def test_a_refused_write_leaves_the_old_file_and_no_temp_file(tmp_path):
    path = tmp_path / "report.json"
    atomic_write_text(path, "old")
    with pytest.raises(ValueError, match="Out of range float values are not JSON compliant"):
        atomic_write_json(path, {"nll": float("nan")}, allow_nan=False)
    assert path.read_text(encoding="utf-8") == "old"
    assert not [n for n in os.listdir(tmp_path) if n.startswith(TEMP_PREFIX)]
    atomic_write_json(path, {"nll": float("inf")})  # allowed unless refused: Python's own JSON
    assert json.loads(path.read_text(encoding="utf-8")) == {"nll": float("inf")}


def test_text_is_utf8_as_given(tmp_path):
    path = tmp_path / "card.md"
    atomic_write_text(path, "naïve\r\nline\n")
    assert path.read_bytes() == "naïve\r\nline\n".encode("utf-8")


@pytest.mark.parametrize("content, words", [
    (b"{not json", "is corrupt: not a JSON file"),
    (b"\xff\xfe{", "is corrupt: not a JSON file"),
    (b"[1, 2]", "is corrupt: it must hold a JSON object, not a list"),
])
def test_reading_a_file_that_is_not_a_json_object_names_it(tmp_path, content, words):
    path = tmp_path / "config.json"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=words) as info:
        read_json_object(path)
    assert str(path) in str(info.value)


def test_a_file_that_must_be_there_is_a_regular_file(tmp_path):
    (tmp_path / "a.txt").write_text("x", encoding="utf-8")
    check_regular_file(tmp_path / "a.txt", "unused")
    with pytest.raises(FileNotFoundError, match="^no such file: b.txt$"):
        check_regular_file(tmp_path / "b.txt", "no such file: b.txt")
    with pytest.raises(ValueError, match="is not a regular file"):
        check_regular_file(tmp_path, "unused")
