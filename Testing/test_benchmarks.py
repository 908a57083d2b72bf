"""Benchmarks must not rot: each runs in its quick mode. Timings are printed, never asserted."""

from __future__ import annotations

from helpers.benchmarks import run_benchmark


def test_inference_speed_quick(tmp_path):
    out = run_benchmark("inference_speed.py", "--quick", "--json", str(tmp_path / "r.json"), timeout=900)
    assert "| precision (ran) | slices | process wall s" in out
    import json

    results = json.loads((tmp_path / "r.json").read_text(encoding="utf-8"))
    assert {(r["precision"], r["slices"]) for r in results["process"]} == {("fp32", 1), ("fp32", 6), ("auto", 6)}
    for row in results["process"]:
        assert row["wall_s"] > 0 and row["full_floor_s"] > 0 and row["rss_mb"] > 0
    assert {r["depth"] for r in results["rss"]} == {6, 24}
    assert results["agreement"][0]["voxel_agreement"] > 0.9
    assert results["warm"]["second_slices_encoded"] == 0  # the second prompt reused the volume's tokens
    assert len(results["batch"]["per_case_overhead_s"]) == 3
