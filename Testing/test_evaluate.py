"""Volumetric evaluation end to end: hand-computed scores through the evaluation API, and `tgated evaluate`."""

from __future__ import annotations

import csv
import json
import math
import subprocess
from types import SimpleNamespace

import numpy as np
import pytest
from helpers.datasets import make_dataset
from helpers.env import backend_command, python_env

from TGatedSegmentLib.evaluation.evaluate import EvaluationReport, ScoredCase, evaluate_segmenter
from TGatedSegmentLib.vocabulary import ABDOMEN13

LIVER, RK, SPLEEN = ABDOMEN13[0], ABDOMEN13[1], ABDOMEN13[2]
SPACING = (3.0, 1.0, 1.0)  # (k, j, i) mm


class StubSegmenter:
    """Returns given masks per (volume, prompt), so the scores are known in advance."""

    def __init__(self, predictions: dict):
        self.predictions = predictions
        self.calls = []

    def segment(self, volume, prompts, **kwargs):
        self.calls.append((volume, [p.prompt for p in prompts]))
        return SimpleNamespace(masks=np.stack([self.predictions[volume][p.prompt] for p in prompts]))


def cube(i0: int) -> np.ndarray:
    mask = np.zeros((4, 6, 6), bool)
    mask[1:3, 1:4, i0 : i0 + 3] = True  # 2 x 3 x 3 = 18 voxels
    return mask


def test_scores_match_hand_computed_values_and_follow_the_annotated_and_empty_rules(tmp_path):
    labels_a = np.zeros((4, 6, 6), np.uint8)
    labels_a[cube(1)] = 1  # liver
    labels_a[0, 5, 5] = 3  # spleen: one voxel, missed by the prediction
    labels_b = labels_a.copy()
    labels_b[3, 0, 0] = 2  # a right kidney voxel that case b is not annotated for
    empty = np.zeros((4, 6, 6), bool)
    segmenter = StubSegmenter(
        {
            "a": {"liver": cube(2), "right kidney": empty, "spleen": empty},
            "b": {"liver": cube(1)},
        }
    )
    cases = [
        ScoredCase("a", "a", labels_a, SPACING, {1: LIVER, 2: RK, 3: SPLEEN}),
        ScoredCase("b", "b", labels_b, SPACING, {1: LIVER}),
    ]  # b: annotated for the liver only
    rows = evaluate_segmenter(segmenter, cases, tolerance_mm=2.0)
    assert segmenter.calls == [("a", ["liver", "right kidney", "spleen"]), ("b", ["liver"])]
    by = {(r["case"], r["organ"]): r for r in rows}
    assert set(by) == {("a", "liver"), ("a", "right_kidney"), ("a", "spleen"), ("b", "liver")}

    shifted = by[("a", "liver")]  # the cube moved by one voxel (1 mm) along i
    assert shifted["dice"] == pytest.approx(2 * 12 / 36)
    assert shifted["nsd"] == 1.0  # every boundary voxel within 1 mm of the other boundary
    assert shifted["hd95"] == pytest.approx(1.0)  # a third of the pooled distances are 1 mm
    assert shifted["ref_volume_ml"] == pytest.approx(18 * 3.0 / 1000)
    assert by[("b", "liver")]["dice"] == 1.0 and by[("b", "liver")]["hd95"] == 0.0
    both_empty = by[("a", "right_kidney")]
    assert both_empty["status"] == "both_empty" and math.isnan(both_empty["dice"])
    missed = by[("a", "spleen")]
    assert missed["status"] == "missed" and missed["dice"] == 0.0 and missed["nsd"] == 0.0
    assert missed["hd95"] == pytest.approx(math.sqrt(12**2 + 6**2 + 6**2))  # the volume's diagonal

    other = StubSegmenter(
        {"a": {"liver": cube(1), "right kidney": cube(1), "spleen": labels_a == 3}, "b": {"liver": empty}}
    )
    report = EvaluationReport(["A", "B"], {"A": "ckpt-a", "B": "ckpt-b"}, tolerance_mm=2.0)
    report.rows = [{"checkpoint": "A", **r} for r in rows] + [
        {"checkpoint": "B", **r} for r in evaluate_segmenter(other, cases)
    ]
    summary = report.summary("A")
    assert summary["per_organ"]["liver"]["dice"] == pytest.approx((2 / 3 + 1) / 2)
    assert math.isnan(summary["per_organ"]["right_kidney"]["dice"])  # left out of the mean, counted
    assert summary["overall"]["n_both_empty"] == 1
    assert summary["overall"]["dice"] == pytest.approx(((2 / 3 + 1) / 2 + 0.0) / 2)
    assert report.summary("B")["per_organ"]["right_kidney"]["n_false_positive"] == 1

    written, note = report.write(tmp_path / "report")
    names = sorted(p.name for p in written)
    assert names == ["dice.png", "dice_box.png", "metrics.csv", "report.json", "report.md", "summary.csv"]
    assert note is None and (tmp_path / "report" / "dice.png").stat().st_size > 1000
    assert (tmp_path / "report" / "dice_box.png").stat().st_size > 1000
    with open(tmp_path / "report" / "metrics.csv", newline="") as f:
        table = list(csv.DictReader(f))
    assert len(table) == 8 and {r["checkpoint"] for r in table} == {"A", "B"}
    assert next(r for r in table if r["checkpoint"] == "A" and r["organ"] == "right_kidney")["dice"] == ""
    data = json.loads((tmp_path / "report" / "report.json").read_text(encoding="utf-8"))
    assert data["summary"]["A"]["per_organ"]["right_kidney"]["dice"] is None  # NaN -> null, valid JSON
    markdown = report.to_markdown()
    # liver: A scores 2/3 and 1 on the two cases, B 0 and 1 (mean ± std over the cases)
    assert "| organ | A | B |" in markdown and "| liver | 0.833 ± 0.167 | 0.500 ± 0.500 |" in markdown
    assert "| **mean** |" in markdown and "### HD95 (mm)" in markdown


def test_chart_is_skipped_with_a_note_without_matplotlib(tmp_path, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_matplotlib(name, *args, **kwargs):
        if name.startswith("matplotlib"):
            raise ImportError("no matplotlib")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    report = EvaluationReport(["A"], {"A": "a"})
    report.rows = [
        {"checkpoint": "A", "case": "c", "organ": "liver", "status": "ok", "dice": 1.0, "nsd": 1.0, "hd95": 0.0}
    ]
    written, note = report.write(tmp_path)
    assert "matplotlib" in note and not (tmp_path / "dice.png").exists() and len(written) == 4


def test_evaluate_cli_compares_two_checkpoints(tmp_path, tiny_checkpoint, tiny_baseline_checkpoint):
    data = make_dataset(tmp_path / "ds", cases=2, depth=5, size=16, meta={"cases": {"case1": {"annotated": [1]}}})
    out = subprocess.run(
        backend_command(
            "evaluate",
            "--checkpoint",
            str(tiny_checkpoint),
            "--checkpoint",
            str(tiny_baseline_checkpoint),
            "--data",
            str(data),
            "--output",
            str(tmp_path / "report"),
            "--device",
            "cpu",
            "--progress",
            "none",
        ),
        cwd=tmp_path,
        env=python_env(),
        capture_output=True,
        encoding="utf-8",
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    assert "| organ | tiny-tgated | tiny-baseline |" in out.stdout and "### NSD @ 2 mm" in out.stdout
    with open(tmp_path / "report" / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    # case0 is scored on its 3 labels, case1 only on the liver: 4 rows per checkpoint
    assert len(rows) == 8
    assert sorted((r["case"], r["organ"]) for r in rows if r["checkpoint"] == "tiny-tgated") == [
        ("case0", "left_kidney"),
        ("case0", "liver"),
        ("case0", "spleen"),
        ("case1", "liver"),
    ]
    summary = json.loads((tmp_path / "report" / "report.json").read_text(encoding="utf-8"))["summary"]
    assert set(summary) == {"tiny-tgated", "tiny-baseline"}
    assert all(0.0 <= s["overall"]["dice"] <= 1.0 for s in summary.values())
    # each organ's worst slices, the two checkpoints side by side, linked from report.md
    report_md = (tmp_path / "report" / "report.md").read_text(encoding="utf-8")
    for organ in ("liver", "spleen", "left_kidney"):
        png = tmp_path / "report" / "worst_slices" / f"{organ}.png"
        assert png.stat().st_size > 500 and f"(worst_slices/{organ}.png)" in report_md
    from PIL import Image

    assert Image.open(tmp_path / "report" / "worst_slices" / "liver.png").width > 2 * 256


def test_the_worst_slice_is_the_one_with_the_most_wrong_area(tmp_path):
    import SimpleITK as sitk

    from TGatedSegmentLib.evaluation.worst_slices import WorstSlices
    from TGatedSegmentLib.preprocessing.config import PreprocessConfig
    from TGatedSegmentLib.preprocessing.volume import prepare_volume

    image = sitk.GetImageFromArray(np.random.default_rng(0).normal(size=(4, 8, 10)).astype(np.float32))
    image.SetSpacing((0.5, 2.0, 3.0))  # (i, j, k) mm: a pixel is 1 mm2
    prepared = prepare_volume(image, PreprocessConfig(), "mr")
    ref = np.zeros((4, 8, 10), bool)
    ref[1:3, 2:6, 2:6] = True
    pred = ref.copy()
    pred[2, 2:6, 6:9] = True  # 12 false-positive pixels on slice 2, none elsewhere
    worst = WorstSlices()
    add = worst.collector("A")
    add("case1", "liver", prepared, pred, ref)
    (entry,) = worst.worst.values()
    assert (entry.case, entry.z, entry.error_mm2) == ("case1", 2, 12.0)
    assert entry.dice == pytest.approx(2 * 16 / (16 + 28))
    add("case2", "liver", prepared, pred & False, ref)  # misses 32 pixels on two slices: 16 mm2 on its worst
    assert worst.worst[("A", "liver")].case == "case2"
    add("case1", "spleen", prepared, ref & False, ref & False)  # nothing wrong anywhere
    written = worst.write(tmp_path / "worst")
    assert [p.name for p in written] == ["liver.png"]
    text = worst.markdown(written)
    assert "(worst_slices/liver.png)" in text and "No wrongly labelled pixel on any slice: spleen" in text
