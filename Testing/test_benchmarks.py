"""Benchmarks must not rot: each runs in its quick mode. Timings are printed, never asserted."""

from __future__ import annotations

import subprocess
import sys

from conftest import REPO, python_env


def run_benchmark(name: str, *args: str, timeout: float = 300) -> str:
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / name), *args], capture_output=True, text=True,
                          env=python_env(), timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def test_inference_speed_quick(tmp_path):
    out = run_benchmark("inference_speed.py", "--quick", "--json", str(tmp_path / "r.json"))
    assert "| K | engine s | naive s (scaled)" in out
    rows = [line for line in out.splitlines() if line.startswith("| 1 |") or line.startswith("| 13 |")]
    assert len(rows) == 2
    import json

    results = json.loads((tmp_path / "r.json").read_text())
    for run in results["runs"]:
        assert run["slices_encoded"] == results["depth"]  # the engine encodes each slice once
        assert run["naive_over_engine"] > 0 and run["engine_over_floor"] > 0
    assert {r["depth"] for r in results["rss"]} == {6, 24}
