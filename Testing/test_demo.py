"""``tgated demo``: the README's main job, end to end through the real CLI (quick mode), and its failure modes."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import SimpleITK as sitk
from helpers.env import python_env

from TGatedSegmentLib.demo import OUTPUT_FILES, QUICK_RECIPE, run_demo
from TGatedSegmentLib.errors import Cancelled, InputError, OutputError
from TGatedSegmentLib.progress import CancelToken, Progress


def tgated(*args, cwd=None, timeout=300):
    return subprocess.run(
        [sys.executable, "-m", "TGatedSegmentLib", *args],
        capture_output=True,
        encoding="utf-8",
        env=python_env(),
        cwd=cwd,
        timeout=timeout,
    )


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "demo_output"
    proc = tgated("demo", "--quick", "--output", str(out), "--progress", "none")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, proc


def test_demo_writes_every_promised_file(demo):
    out, proc = demo
    assert sorted(p.name for p in out.iterdir()) == sorted(OUTPUT_FILES)
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no temporary folder left behind
    assert (out / "figure.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_demo_prints_per_organ_dice_that_match_metrics(demo):
    out, proc = demo
    metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    organs = metrics["organs"]
    assert metrics["target"] in organs and {"liver", "left_kidney", "right_kidney"} <= set(organs)
    for organ, row in organs.items():
        line = next(line for line in proc.stdout.splitlines() if line.startswith(organ + " "))
        shown = line.split()[1]
        assert shown == ("n/a" if row["dice"] is None else f"{row['dice']:.3f}"), line
    assert metrics["training"]["steps"] == QUICK_RECIPE.steps
    assert metrics["phantom"]["seed"] == [0, QUICK_RECIPE.n_train + QUICK_RECIPE.n_val]  # a case in neither set


def test_demo_outputs_share_the_ct_geometry_and_reload(demo):
    import slicerio

    from TGatedSegmentLib.inference.api import Segmenter

    out, _ = demo
    ct = sitk.ReadImage(str(out / "ct.nii.gz"))
    labels = sitk.ReadImage(str(out / "segmentation.nii.gz"))
    assert labels.GetSize() == ct.GetSize()
    assert np.allclose(labels.GetSpacing(), ct.GetSpacing()) and np.allclose(labels.GetOrigin(), ct.GetOrigin())
    table = json.loads((out / "segmentation.json").read_text(encoding="utf-8"))
    names = [
        s["name"] for s in slicerio.read_segmentation(str(out / "segmentation.seg.nrrd"), skip_voxels=True)["segments"]
    ]
    reference = [
        s["name"] for s in slicerio.read_segmentation(str(out / "reference.seg.nrrd"), skip_voxels=True)["segments"]
    ]
    assert names == reference == list(table["labels"]) == [s["name"] for s in table["segments"]]
    # the checkpoint is a normal one: it segments the demo CT again, identically
    again = Segmenter(out / "checkpoint", device="cpu").segment(str(out / "ct.nii.gz"), prompts=names)
    assert np.array_equal(again.labelmap, sitk.GetArrayFromImage(labels))


def test_existing_output_is_refused_and_kept(tmp_path):
    out = tmp_path / "demo_output"
    out.mkdir()
    (out / "mine.txt").write_text("keep me")
    proc = tgated("demo", "--quick", "--output", str(out))
    assert proc.returncode != 0
    assert "already exists" in proc.stderr and "--overwrite" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert [p.name for p in out.iterdir()] == ["mine.txt"]


def test_bad_options_fail_before_any_work(tmp_path):
    with pytest.raises(InputError, match="minutes"):
        run_demo(tmp_path / "a", minutes=0)
    with pytest.raises(InputError, match="does not exist"):
        run_demo(tmp_path / "b", base=str(tmp_path / "missing-folder"))
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputError, match="is a file"):
        run_demo(tmp_path / "file")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def test_cancel_during_segmentation_leaves_nothing(tmp_path):
    cancel = CancelToken()

    class CancelWhenSegmenting(Progress):
        def update(self, stage, done, total, **extra):
            if stage == "segment":
                cancel.cancel()

    with pytest.raises(Cancelled):
        run_demo(tmp_path / "demo_output", quick=True, device="cpu", progress=CancelWhenSegmenting(), cancel=cancel)
    assert list(tmp_path.iterdir()) == []


def test_demo_can_start_from_given_weights(tmp_path, tiny_checkpoint):
    """``--base``: fine-tune a checkpoint (here a tiny one) with the paper's learning rates."""
    result = run_demo(tmp_path / "demo_output", quick=True, base=str(tiny_checkpoint), device="cpu")
    training = result.metrics["training"]
    assert training["base"] == str(tiny_checkpoint)
    assert training["settings"]["base"] == str(tiny_checkpoint)
    assert (training["settings"]["lr_encoder"], training["settings"]["lr_adapter"]) == (1e-6, 5e-5)
    assert set(result.dice) == set(result.metrics["organs"])


def test_a_recipe_given_more_steps_lays_out_epochs_for_all_of_them(tmp_path):
    """The ablation's equal-time arm gives a run 20x the recipe's steps under a time cap: its epochs
    must hold those steps. They were laid out for the recipe's own 750, which ended the arm there."""
    from TGatedSegmentLib.demo.recipe import DEMO_RECIPE

    def total_steps(config) -> int:
        return config.samples_per_epoch * config.epochs // (config.batch_size // config.chunk_slices)

    plain = DEMO_RECIPE.train_config(tmp_path / "data", tmp_path / "run")
    longer = DEMO_RECIPE.train_config(tmp_path / "data", tmp_path / "run", steps=DEMO_RECIPE.steps * 20)
    assert total_steps(plain) == plain.steps == DEMO_RECIPE.steps
    assert total_steps(longer) == longer.steps == DEMO_RECIPE.steps * 20
