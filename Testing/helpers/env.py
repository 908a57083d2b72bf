"""The checkout, the optional ../shared data, and how tests run the backend in a subprocess."""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
from pathlib import Path
from unittest import mock

from TGatedSegmentLib.model.architectures import ARCHITECTURES

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared"

# The tiny CLIPSeg of ../shared/reference/clipseg-tiny.config.json (same structure as
# clipseg-rd64-refined, hidden 32), built into the package so that tests run without ../shared.
TINY_CLIPSEG_CONFIG = ARCHITECTURES["tiny"]


def python_env() -> dict:
    """Environment for subprocesses running this checkout's backend (offline, importable)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["HF_HUB_OFFLINE"] = "1"
    env["TRANSFORMERS_OFFLINE"] = "1"
    return env


def backend_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "TGatedSegmentLib", *args]


def run_cli(*args: str, cwd: Path | None = None, timeout: float = 180, **env: str) -> subprocess.CompletedProcess:
    """``tgated ARGS`` with this checkout's backend in a subprocess (``env``: extra variables), output captured."""
    return subprocess.run(
        backend_command(*args),
        cwd=cwd,
        env={**python_env(), **env},
        capture_output=True,
        encoding="utf-8",
        timeout=timeout,
    )


def run_cli_here(*args: str) -> subprocess.CompletedProcess:
    """``tgated ARGS`` in this process (``main(ARGS)``, output captured), for a test of many quick cases
    that would otherwise pay a fresh interpreter's imports each; keep real subprocesses beside it for
    what only a process shows (exit codes of the entry point, signals, everything on stderr)."""
    from TGatedSegmentLib.cli import main as cli

    out, err = io.StringIO(), io.StringIO()
    # (the signal handlers are the process's, not a test's: pytest keeps its own)
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        with mock.patch.object(cli, "_install_signal_handlers", lambda: None):
            rc = cli.main(list(args))
    return subprocess.CompletedProcess(list(args), rc, out.getvalue(), err.getvalue())
