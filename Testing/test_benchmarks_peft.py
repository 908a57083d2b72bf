"""The fine-tuning-mode and uncertainty benchmarks run in --quick mode, so they never rot.

Timings are printed, never asserted; what is asserted is what the tables must show whatever the
machine: every mode's partial checkpoint holds exactly its trained weights (float32: 4 bytes a
parameter), reloads to the in-memory weights and is smaller than the full one; Monte Carlo
inference encodes each slice once and runs the adapter and decoder N times; entropies, mutual
information and correlations lie in their ranges. The uncertainty benchmark's analysis helpers
are checked on hand-made masks.
"""

from __future__ import annotations

import json
import math
import re
import subprocess
from types import SimpleNamespace

import numpy as np
from helpers.benchmarks import benchmark, load_benchmark

LN2 = math.log(2.0)


def _run(script: str, *args: str) -> subprocess.CompletedProcess:
    return benchmark(script, "--quick", *args, timeout=900)


def test_finetune_modes_quick(tmp_path):
    out = _run("finetune_modes.py", "--json", str(tmp_path / "r.json"))
    assert out.returncode == 0, out.stderr[-3000:]
    rows = {m.group(1): m.group(2) for m in re.finditer(r"^\| ([^|]+?) \| (.*)\|$", out.stdout, re.M)}
    for mode in ("full", "decoder", "adapters + dense PEFT", "adapters + shallow PEFT", "same, ViT not under no_grad"):
        assert mode in rows, out.stdout
    assert "no_grad ViT / recorded-but-frozen ViT" in out.stdout

    results = {
        k.strip(): v for k, v in json.loads((tmp_path / "r.json").read_text(encoding="utf-8"))["results"].items()
    }
    full = results["full"]
    assert full["trainable_params"] == full["params"] and full["partial_bytes"] == full["full_bytes"]
    assert not full["vision_no_grad"]
    for mode in ("decoder", "adapters + dense PEFT", "adapters + shallow PEFT"):
        r = results[mode]
        assert 0 < r["trainable_params"] < 0.2 * r["params"], mode
        assert r["partial_bytes"] < 0.2 * r["full_bytes"], mode
        # Nothing but the trained weights (and a header) in the partial checkpoint; everything in the full one.
        assert 4 * r["trainable_params"] <= r["partial_bytes"] <= 4 * r["trainable_params"] * 1.1 + 65536, mode
        assert 4 * r["params"] <= r["full_bytes"] <= 4 * r["params"] * 1.02 + 65536, mode
    for mode, r in results.items():
        assert len(r["step_seconds"]) == 1 and r["samples_per_s"] > 0, mode
        if "full_bytes" in r:
            assert r["reload_identical"] is True, mode
    # The frozen ViT runs under no_grad unless dense adapters inside it need its gradients.
    assert results["decoder"]["vision_no_grad"] and results["adapters + shallow PEFT"]["vision_no_grad"]
    assert not results["adapters + dense PEFT"]["vision_no_grad"]
    plain = results["same, ViT not under no_grad"]
    assert (
        not plain["vision_no_grad"]
        and plain["trainable_params"] == results["adapters + shallow PEFT"]["trainable_params"]
    )
    # Dense PEFT adds adapters to the ViT too: more parameters in the model than the plain T-Gated one.
    assert results["adapters + dense PEFT"]["params"] > full["params"]


def test_uncertainty_phantom_quick(tmp_path):
    out = _run("uncertainty_phantom.py", "--json", str(tmp_path / "r.json"))
    assert out.returncode == 0, out.stderr[-3000:]
    for text in (
        "(a) mean predictive entropy",
        "(b) per-slice mean entropy vs per-slice error",
        "### summary",
        "(c) run time",
    ):
        assert text in out.stdout, text
    calls = re.findall(r"\| (\d+) / (\d+) \|$", out.stdout, re.M)
    assert len(calls) == 2 and all(a == b for a, b in calls)  # N samples, still one encoder pass per slice

    report = json.loads((tmp_path / "r.json").read_text(encoding="utf-8"))
    settings = report["settings"]
    n = settings["samples"]
    assert n == 3
    assert set(report["analysis"]) == {
        "probabilistic: sampling + dropout (default MC)",
        "probabilistic: value sampling only (dropout off)",
        "deterministic: MC dropout",
    }
    depth = settings["spec"]["shape"][0]
    for label, a in report["analysis"].items():
        assert a["dice"] and all(0.0 <= d <= 1.0 for d in a["dice"].values()), label
        for organ, parts in a["regions"].items():
            assert parts["boundary"]["n"] > 0, (label, organ)
            for part, acc in parts.items():
                h, mi = acc["h"] / acc["n"], acc["mi"] / acc["n"]
                assert 0.0 <= mi <= h + 1e-6 and h <= LN2 + 1e-6, (label, organ, part)
                assert 0.0 <= acc["p"] <= acc["n"], (label, organ, part)
        assert "distractor" in a["distractors"]  # the target prompt is scored on its look-alikes
        for organ, c in a["corr_entropy"].items():
            for key in ("dice", "fp"):
                count, r, rho = c[key]
                assert all(math.isnan(v) or -1.0 - 1e-9 <= v <= 1.0 + 1e-9 for v in (r, rho)), (label, organ)
        # One row per slice, per organ present, per held-out phantom.
        assert a["corr_entropy"]["pooled"]["fp"][0] == depth * len(a["dice"]) * settings["test_cases"], label
    for name, t in report["timing"].items():
        det, mc = t["stages"]["0"], t["stages"][str(n)]
        assert mc["vision encoder calls (slices)"] == det["vision encoder calls (slices)"] > 0, name
        assert mc["adapter passes"] == n * det["adapter passes"], name
        assert mc["decoder items"] == n * det["decoder items"], name
        assert t["ratio"] > 0 and len(t["all_mc_s"]) == len(t["all_deterministic_s"]) >= 1, name


def test_uncertainty_analysis_helpers():
    bench = load_benchmark("uncertainty_phantom.py")
    assert list(bench.ranks(np.array([3.0, 1.0, 3.0, 2.0]))) == [2.5, 0.0, 2.5, 1.0]  # ties averaged
    x = np.arange(10.0)
    assert abs(bench.spearman(x, x**3) - 1.0) < 1e-12 and abs(bench.pearson(x, -2 * x) + 1.0) < 1e-12
    assert math.isnan(bench.pearson([1.0, 1.0, 1.0], [1.0, 2.0, 3.0]))

    mask = np.zeros((1, 9, 9), bool)
    mask[0, 2:7, 2:7] = True
    assert bench.grow(mask, 1).sum() == 49 and bench.shrink(mask, 1).sum() == 9 and bench.shrink(mask, 3).sum() == 0

    # A 2-slice phantom: the organ (label 1) a 10x10 square on slice 0; entropy 0.5 on its boundary
    # band, 0.1 elsewhere; the prediction is the organ shifted by one column plus a false positive.
    ref = np.zeros((2, 24, 24), np.uint8)
    ref[0, 7:17, 7:17] = 1
    band = bench.grow(ref == 1, bench.BAND) & ~bench.shrink(ref == 1, bench.BAND)
    entropy = np.where(band, 0.5, 0.1).astype(np.float32)[None]
    pred = np.zeros((2, 24, 24), bool)
    pred[0, 7:17, 8:18] = True
    pred[1, 0:2, 0:2] = True
    ph = SimpleNamespace(
        image=np.zeros((2, 24, 24), np.float32),
        labels=ref,
        label_names={1: "liver"},
        spacing=(10.0, 1.0, 1.0),
        target="gallbladder",
        distractor_mask=np.zeros_like(pred),
    )
    result = SimpleNamespace(entropy=entropy, mutual_information=entropy / 2, masks=pred[None])
    case = bench.analyse_case(ph, result, ["liver"])
    regions = case["regions"]["liver"]
    assert (
        regions["boundary"]["n"] == int(band.sum())
        and abs(regions["boundary"]["h"] / regions["boundary"]["n"] - 0.5) < 1e-6
    )
    assert abs(regions["interior"]["h"] / regions["interior"]["n"] - 0.1) < 1e-6
    assert abs(regions["background"]["h"] / regions["background"]["n"] - 0.1) < 1e-6
    rows = {r["z"]: r for r in case["rows"]}
    assert abs(rows[0]["one_minus_dice"] - (1 - 2 * 90 / 200)) < 1e-9 and abs(rows[0]["fp_ml"] - 0.1) < 1e-9
    assert rows[1]["one_minus_dice"] == 1.0 and abs(rows[1]["fp_ml"] - 0.04) < 1e-9
    corr = bench.correlations(case["rows"])
    assert corr["liver"]["dice"][0] == 2 and corr["pooled"]["fp"][0] == 2


def test_uncertainty_benchmark_reuses_only_a_finished_run_with_the_same_settings(tmp_path):
    from TGatedSegmentLib.training import TrainConfig

    bench = load_benchmark("uncertainty_phantom.py")
    config = TrainConfig(
        data="-",
        output=tmp_path / "run",
        val="split:1",
        probabilistic=True,
        image_size=128,
        epochs=4,
        batch_size=8,
        samples_per_epoch=2400,
        seed=0,
    )
    assert bench.finished_run(config, 6) is None  # nothing there
    (tmp_path / "run" / "last").mkdir(parents=True)
    (tmp_path / "run" / "best").mkdir()
    settings = {
        k: getattr(config, k)
        for k in (
            "probabilistic",
            "image_size",
            "batch_size",
            "samples_per_epoch",
            "epochs",
            "seed",
            "lr_encoder",
            "lr_decoder",
            "lr_adapter",
            "val",
        )
    }
    meta = {
        "settings": settings,
        "epochs_completed": 4,
        "data": {"train_cases": ["a", "b", "c", "d", "e"], "val_cases": ["f"]},
    }
    (tmp_path / "run" / "last" / "config.json").write_text(json.dumps({"training": meta}))
    assert bench.finished_run(config, 6) == tmp_path / "run"
    assert bench.finished_run(config, 5) is None  # other phantoms
    meta["epochs_completed"] = 3  # stopped early
    (tmp_path / "run" / "last" / "config.json").write_text(json.dumps({"training": meta}))
    assert bench.finished_run(config, 6) is None
    meta["epochs_completed"], settings["probabilistic"] = 4, False  # the other model
    (tmp_path / "run" / "last" / "config.json").write_text(json.dumps({"training": meta}))
    assert bench.finished_run(config, 6) is None
