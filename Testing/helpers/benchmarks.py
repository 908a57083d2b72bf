"""Running a benchmark the way its docstring says, ``python -m benchmarks.NAME``, from the checkout."""

from __future__ import annotations

import contextlib
import importlib
import io
import subprocess
import sys

from .env import REPO, python_env


def benchmark(name: str, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """``python -m benchmarks.NAME ARGS`` in the checkout (``NAME`` with or without ``.py``)."""
    module = f"benchmarks.{name.removesuffix('.py')}"
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=REPO,
        env=python_env(),
        capture_output=True,
        encoding="utf-8",
        timeout=timeout,
    )


def run_benchmark(name: str, *args: str, timeout: float = 300) -> str:
    """Its standard output; a failing run fails the test with the end of its standard error."""
    proc = benchmark(name, *args, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def load_benchmark(name: str):
    """The benchmark module itself, for tests of its helpers."""
    return importlib.import_module(f"benchmarks.{name.removesuffix('.py')}")


def run_benchmark_here(name: str, *args: str) -> str:
    """Its standard output, run in this process (``main(ARGS)``): for a test that has already run one
    benchmark as a real ``python -m`` process and need not pay a second interpreter's imports."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        rc = load_benchmark(name).main(list(args))
    assert rc in (0, None), out.getvalue()[-3000:]
    return out.getvalue()
