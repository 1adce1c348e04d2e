"""The layers of fastvae: every import (at the top of a module or inside a function) runs down or sideways,
never up: ops <- nn <- models <- data <- train / evaluate <- presets <- cli."""

import ast
import pathlib

import fastvae

PACKAGE = pathlib.Path(fastvae.__file__).resolve().parent
# the first name below fastvae -> its layer; a module may import its own layer and those below
LAYERS = {
    "_C": 0, "_ext": 0, "_files": 0, "_version": 0, "devices": 0, "run_layout": 0, "kernels": 0,
    "ops": 1,
    "nn": 2,
    "models": 3,
    "data": 4, "metrics": 4,
    "train": 5, "evaluate": 5, "plots": 5,
    "presets": 6,
    "cli": 7, "__main__": 7,
}


def _layer(module):
    parts = module.split(".")
    if len(parts) == 1:
        return len(LAYERS)  # the package itself: its __init__ gathers the public names
    return LAYERS[parts[1]]


def _imports(path):
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 and node.module.split(".")[0] == "fastvae":
            if node.module == "fastvae":
                yield from (f"fastvae.{alias.name}" for alias in node.names if alias.name in LAYERS)
            else:
                yield node.module
        elif isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names if alias.name.split(".")[0] == "fastvae")


def test_no_import_runs_up_a_layer():
    upward = []
    modules = 0
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE.parent).with_suffix("")
        if relative.parts[1:2] == ("kernels",):
            continue
        module = ".".join(relative.parts[:-1] if relative.name == "__init__" else relative.parts)
        if module == "fastvae":
            continue
        modules += 1
        upward += [f"{module} imports {name}" for name in _imports(path) if _layer(name) > _layer(module)]
    assert modules > 50
    assert not upward, upward


def test_every_top_level_name_has_a_layer():
    names = {p.stem if p.is_file() else p.name for p in PACKAGE.iterdir()
             if (p.suffix == ".py" or (p.is_dir() and (p / "__init__.py").exists())) and p.stem != "__init__"}
    assert names <= set(LAYERS), sorted(names - set(LAYERS))
