"""The backend's structure, checked from the source (``ast``), without importing anything.

* Imports run one way: a module may import from its own layer or a lower one, never a higher
  one (:data:`LAYERS`, the one place the order is written down; docs/architecture.md explains it).
  Imports inside functions count too: a lazy import is still a dependency.
* No backend file is longer than :data:`MAX_LINES`, except the few in :data:`LONG_FILES`.
* The backend never imports Slicer, Qt or VTK: it runs in a plain Python, and the Slicer module
  (``TGatedSegment/``) is the only place that knows about Slicer.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "TGatedSegmentLib"
NAME = PACKAGE.name

# Lowest first. A "unit" is a top-level module or subpackage of TGatedSegmentLib ("__init__" is
# the package itself). Units in one layer may import each other.
LAYERS: list[set[str]] = [
    {"__init__", "errors", "compat", "allocator"},  # version, error types, the deprecated-import shim, malloc
    {
        "progress",
        "vocabulary",
        "modality",
    },  # progress events and cancel tokens; organ names and prompts; modality texts
    {"io"},  # reading and writing volumes and segmentation files, atomic writes
    {"data", "phantom"},  # datasets on disk: reading (and converting) labelled folders; the phantom generator
    {"preprocessing"},  # volume -> model input (orientation, intensity, slices) and its config
    {"model"},  # the network, its configs, checkpoints, model sources
    {"inference"},  # the streaming engine and the Segmenter API
    {"evaluation"},  # metrics and reports (the trainer validates through it)
    {"training"},  # datasets for training, the loop, run folders
    {"demo"},  # the end-to-end phantom demo
    {"cli", "__main__"},  # the command line
]
LAYER_OF = {unit: rank for rank, units in enumerate(LAYERS) for unit in units}

MAX_LINES = 400
# Files allowed to be longer, each with the reason; shrink this list, never grow it casually.
LONG_FILES: set[str] = set()

FORBIDDEN_ROOTS = {"slicer", "qt", "ctk", "vtk", "vtkmodules", "PythonQt", "mrml", "slicer_stub"}


def _modules() -> dict[str, Path]:
    """``TGatedSegmentLib.x.y`` -> file, for every module of the package."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join((NAME,) + parts)] = path
    return found


MODULES = _modules()


def _unit(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _imports(module: str, path: Path):
    """(line, imported module) for every import in the file, relative ones resolved."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for alias in node.names:  # ``from . import x`` may name a module
                sub = f"{target}.{alias.name}"
                yield node.lineno, sub if sub in MODULES else target


def test_every_unit_has_a_layer():
    units = {_unit(m) for m in MODULES}
    assert not units - set(LAYER_OF), f"add these to LAYERS in {Path(__file__).name}: {sorted(units - set(LAYER_OF))}"


def test_imports_point_down_the_layers():
    wrong = []
    for module, path in MODULES.items():
        mine = LAYER_OF.get(_unit(module))
        for line, target in _imports(module, path):
            if target != NAME and not target.startswith(NAME + "."):
                continue
            theirs = LAYER_OF.get(_unit(target))
            if mine is not None and theirs is not None and theirs > mine:
                wrong.append(
                    f"{path.relative_to(PACKAGE.parent)}:{line} ({_unit(module)}) imports {target} "
                    f"({_unit(target)}, a higher layer)"
                )
    assert not wrong, "imports against the layer order:\n" + "\n".join(wrong)


def test_no_slicer_qt_or_vtk():
    wrong = [
        f"{path.relative_to(PACKAGE.parent)}:{line} imports {target}"
        for module, path in MODULES.items()
        for line, target in _imports(module, path)
        if target.split(".")[0] in FORBIDDEN_ROOTS or target.startswith(("vtk", "qSlicer"))
    ]
    assert not wrong, "the backend must run without Slicer:\n" + "\n".join(wrong)


def test_files_stay_small():
    long = {}
    for path in MODULES.values():
        rel = path.relative_to(PACKAGE).as_posix()
        n = len(path.read_text(encoding="utf-8").splitlines())
        if n > MAX_LINES and rel not in LONG_FILES:
            long[rel] = n
    assert not long, f"split these files by job (at most {MAX_LINES} lines each): {long}"


def test_the_allow_list_is_not_stale():
    present = {
        p.relative_to(PACKAGE).as_posix(): len(p.read_text(encoding="utf-8").splitlines()) for p in MODULES.values()
    }
    stale = sorted(f for f in LONG_FILES if present.get(f, 0) <= MAX_LINES)
    assert not stale, f"these files are short now (or gone): remove them from LONG_FILES: {stale}"


@pytest.mark.parametrize(
    "text, expected",
    [
        ("from ..data.dataset import load_dataset", "TGatedSegmentLib.data.dataset"),
        ("from . import distributed", "TGatedSegmentLib.training.distributed"),
        ("from .. import __version__", "TGatedSegmentLib"),
    ],
)
def test_relative_imports_resolve(tmp_path, text, expected):
    file = tmp_path / "x.py"
    file.write_text(text + "\n")
    assert [t for _, t in _imports("TGatedSegmentLib.training.x", file)] == [expected]
