"""The project's lint and type rules hold: ruff (``[tool.ruff]``) on every file and mypy (``[tool.mypy]``) on
the backend, each as a real subprocess; tests and benchmarks keep their import habits."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def test_ruff_finds_nothing():
    ruff = shutil.which("ruff") or (Path(sys.executable).parent / "ruff")
    if not Path(ruff).exists():
        pytest.skip("ruff is not installed (it is in the test extra: pip install -e '.[test]')")
    out = subprocess.run(
        [str(ruff), "check", "--no-cache", "."], cwd=REPO, capture_output=True, encoding="utf-8", timeout=120
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-1000:]


def test_the_tree_is_formatted():
    ruff = shutil.which("ruff") or (Path(sys.executable).parent / "ruff")
    if not Path(ruff).exists():
        pytest.skip("ruff is not installed (it is in the test extra: pip install -e '.[test]')")
    out = subprocess.run(
        [str(ruff), "format", "--check", "--no-cache", "."],
        cwd=REPO,
        capture_output=True,
        encoding="utf-8",
        timeout=120,
    )
    assert out.returncode == 0, "run `ruff format .`:\n" + out.stdout + out.stderr


def test_mypy_finds_nothing():
    pytest.importorskip("mypy", reason="mypy is not installed (it is in the test extra: pip install -e '.[test]')")
    out = subprocess.run([sys.executable, "-m", "mypy"], cwd=REPO, capture_output=True, encoding="utf-8", timeout=900)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-1000:]


def _imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            names.add(node.module.split(".")[0])
    return names


# Test modules that still import another test module; shared code goes to Testing/helpers/.
TEST_IMPORT_EXCEPTIONS: set[str] = set()


def test_tests_import_helpers_not_other_tests():
    wrong = {}
    for path in sorted((REPO / "Testing").glob("*.py")):
        found = sorted(n for n in _imported_modules(path) if n == "conftest" or n.startswith("test_"))
        if found and path.name not in TEST_IMPORT_EXCEPTIONS:
            wrong[path.name] = found
    assert not wrong, f"import shared test code from Testing/helpers/ (or use a conftest fixture): {wrong}"


def test_benchmarks_are_a_package_without_path_edits():
    folder = REPO / "benchmarks"
    assert (folder / "__init__.py").is_file(), "benchmarks run as `python -m benchmarks.NAME`"
    siblings = {p.stem for p in folder.glob("*.py")}
    wrong = []
    for path in sorted(folder.glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and node.attr == "path" and getattr(node.value, "id", None) == "sys":
                wrong.append(f"{path.name}:{node.lineno} edits sys.path")
        wrong += [f"{path.name} imports {name} as a top-level module" for name in _imported_modules(path) & siblings]
    assert not wrong, "\n".join(wrong)
