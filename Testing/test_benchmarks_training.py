"""The training benchmarks run in --quick mode, so they never rot (timings are printed, never asserted)."""

from __future__ import annotations

import subprocess

from helpers.benchmarks import benchmark
from helpers.env import SHARED


def _run(script: str, *args: str) -> subprocess.CompletedProcess:
    return benchmark(script, "--quick", *args)


def test_train_throughput_quick():
    out = _run("train_throughput.py")
    assert out.returncode == 0, out.stderr
    for name in ("T-Gated", "baseline", "T-Gated frozen enc.", "baseline frozen enc."):
        assert f"  {name} " in out.stdout
    assert "T-Gated / baseline, full fine-tuning" in out.stdout and "frozen / full, T-Gated" in out.stdout


def test_train_real_ct_quick():
    out = _run("train_real_ct.py")
    assert out.returncode == 0, out.stderr
    if not (SHARED / "data" / "abdomen-sample" / "dataset.json").is_file():
        assert out.stdout.startswith("skipped:")
        return
    assert "| organ | trained (best/) |" in out.stdout and "| liver |" in out.stdout
    assert "an overfitting check" in out.stdout and "| **mean** |" in out.stdout


def test_train_real_ct_exits_cleanly_without_the_data(tmp_path):
    out = _run("train_real_ct.py", "--data", str(tmp_path / "absent"))
    assert out.returncode == 0 and out.stdout.startswith("skipped:")


def test_token_cache_speed_quick():
    out = _run("token_cache_speed.py")
    assert out.returncode == 0, out.stderr
    for name in ("full fine-tuning", "frozen encoder", "frozen encoder + token cache"):
        assert f"  {name} " in out.stdout
    assert "(0 slices encoded" in out.stdout and "full / token cache" in out.stdout


def test_chaos_folds_quick():
    out = _run("chaos_folds.py")
    assert out.returncode == 0, out.stderr
    if not (SHARED / "data" / "chaos-t2" / "dataset.json").is_file():
        assert out.stdout.startswith("skipped:")
        return
    assert "| fold (test patients) | best step | liver | right kidney | left kidney | spleen |" in out.stdout
    assert "| **mean of 1 folds** |" in out.stdout


def test_chaos_folds_exits_cleanly_without_the_data(tmp_path):
    out = _run("chaos_folds.py", "--data", str(tmp_path / "absent"))
    assert out.returncode == 0 and out.stdout.startswith("skipped:")
