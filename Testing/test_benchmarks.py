"""Benchmarks must not rot: each runs in its quick mode. Timings are printed, never asserted."""

from __future__ import annotations

from helpers.benchmarks import run_benchmark


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
