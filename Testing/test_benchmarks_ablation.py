"""The phantom ablations in quick mode: both arms really trained, every table row filled, runs shared."""

from __future__ import annotations

import json

import pytest
from helpers.benchmarks import run_benchmark, run_benchmark_here


@pytest.fixture(scope="module")
def ablations(tmp_path_factory):
    root = tmp_path_factory.mktemp("ablation")
    work, out = root / "work", root / "out"
    outputs, stamps = {}, {}
    # the first as its docstring says (a `python -m` process), the others in this process: they reuse its runs
    for name in ("ablation_temporal", "ablation_prompt", "ablation_gate", "ablation_context_paths"):
        run = run_benchmark if name == "ablation_temporal" else run_benchmark_here
        outputs[name] = run(f"{name}.py", "--quick", "--work", str(work), "--output", str(out / name))
        stamps[name] = {p: p.stat().st_mtime_ns for p in (work / "quick").rglob("model.safetensors")}
    outputs["stamps"] = stamps
    return work / "quick", out, outputs


def test_temporal_ablation_trains_both_arms_identically(ablations):
    work, out, outputs = ablations
    for seed in (0, 1):
        configs = {
            arm: json.loads((work / f"seed{seed}" / arm / "best" / "config.json").read_text(encoding="utf-8"))
            for arm in ("baseline", "tgated")
        }
        assert configs["baseline"]["adapter"] is None and configs["tgated"]["adapter"]["context_size"] == 5
        assert [c["training"]["settings"]["temporal"] for c in configs.values()] == [False, True]
        # the neighbours reach the temporal model's refinement head too; a slice-wise one has none to read
        assert [c["training"]["settings"]["refine_window"] for c in configs.values()] == [1, 5]
        assert [c["refine"]["window"] for c in configs.values()] == [1, 5]
        assert [c["refine"]["window_mix"] for c in configs.values()] == ["linear", "hidden"]
        window = ("temporal", "refine_window", "refine_window_mix", "output")
        settings = [{k: v for k, v in c["training"]["settings"].items() if k not in window} for c in configs.values()]
        assert settings[0] == settings[1]  # only the temporal reading differs
        assert configs["tgated"]["training"]["settings"]["seed"] == seed
    result = json.loads((out / "ablation_temporal.json").read_text(encoding="utf-8"))
    target = result["target"]
    text = (out / "ablation_temporal.md").read_text(encoding="utf-8")
    assert f"**{target}** (has look-alikes)" in text and "**mean**" in text
    assert "ml predicted inside look-alikes" in text
    for arm in ("baseline", "tgated"):
        assert set(result["results"][arm]) == {"0", "1"}
        assert set(result["results"][arm]["0"]["dice"]) >= {"liver", "left_kidney", "right_kidney", target}
    assert (out / "ablation_temporal.png").read_bytes()[:4] == b"\x89PNG"
    assert outputs["ablation_temporal"].count("| liver |") == 1


def test_prompt_and_gate_ablations_reuse_the_temporal_runs(ablations):
    work, out, outputs = ablations
    prompt = json.loads((out / "ablation_prompt.json").read_text(encoding="utf-8"))
    assert set(prompt["results"]["0"]) == {"correct", "blank", "wrong"}
    assert "| **mean** |" in (out / "ablation_prompt.md").read_text(encoding="utf-8")
    gate = json.loads((out / "ablation_gate.json").read_text(encoding="utf-8"))
    regions = gate["results"]["0"]
    assert {"liver", "other body tissue", "air outside the body"} <= set(regions)
    look_alikes = next(r for r in regions if r.endswith("look-alikes"))
    assert regions[look_alikes]["voxels"] > 0
    for stats in regions.values():  # a quickly trained gate stays near its start, strictly inside (0, 1)
        if stats["voxels"]:
            assert 0 < stats["p10"] <= stats["p50"] <= stats["p90"] < 1
    paths = json.loads((out / "ablation_context_paths.json").read_text(encoding="utf-8"))["results"]["0"]
    assert list(paths) == ["as trained", "adapter branch off", "head reads the centre only", "both off"]
    assert all(0 <= v["target"] <= 1 and v["distractor_fp_ml"] >= 0 for v in paths.values())
    # nothing was trained twice: the later scripts found the runs of the first and left them untouched
    stamps = outputs["stamps"]
    assert stamps["ablation_temporal"] and all(
        stamps[name] == stamps["ablation_temporal"]
        for name in ("ablation_prompt", "ablation_gate", "ablation_context_paths")
    )


def test_the_model_analyses_read_a_residual_t_gated_arm():
    """``--arms`` picks the arm the gate and context-path analyses read (``tgated`` without it); an
    arm without a residual adapter is refused with a message, not a traceback."""
    from argparse import Namespace

    from benchmarks.phantom_runs import residual_arm

    assert residual_arm(Namespace(arms=None)) == "tgated"
    assert residual_arm(Namespace(arms=["tgated_centre", "baseline"])) == "tgated_centre"
    for arm in ("baseline", "reference"):
        with pytest.raises(SystemExit, match="residual T-Gated arm"):
            residual_arm(Namespace(arms=[arm]))


@pytest.mark.parametrize("arms", [("tgated_centre_diff",), ("baseline", "tgated")])
def test_the_dice_table_has_as_many_cells_as_columns_for_any_number_of_arms(arms):
    """One arm has no difference columns: its header and rows must not carry an empty extra cell."""
    from benchmarks.ablation_temporal import FP_MEASURES, table

    run = {"dice": {"liver": 0.9, "gallbladder": 0.7}, "mean_dice": 0.8, "steps": 10, "seconds": 1.0}
    run |= {key: 0.0 for key in FP_MEASURES}
    text = table({arm: {"0": run} for arm in arms}, ["liver", "gallbladder"], "gallbladder", ["0"])
    dice_rows = text.split("\n\n")[0].split("\n")
    assert {row.count("|") for row in dice_rows} == {2 * len(arms) + 1}
    assert all(" |  |" not in row for row in dice_rows)
