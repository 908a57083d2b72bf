"""`tgated train` rejects bad input through the real CLI: exit code 2, one line, nothing written."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from helpers.datasets import make_dataset
from helpers.env import run_cli


def snapshot(folder: Path) -> dict:
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in folder.rglob("*")}


@pytest.fixture(scope="module")
def good(tmp_path_factory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("good") / "ds", cases=2, depth=6, size=16)


def _copy(good: Path, target: Path) -> Path:
    shutil.copytree(good, target)
    return target


def _case_image(ds: Path, case: str = "case1") -> Path:
    return ds / "imagesTr" / f"{case}_0000.nii.gz"


def _break_size(ds):
    image = sitk.ReadImage(str(_case_image(ds)))
    array = sitk.GetArrayFromImage(image)[:, :, :-2]
    smaller = sitk.GetImageFromArray(np.ascontiguousarray(array))
    smaller.SetSpacing(image.GetSpacing())
    smaller.SetDirection(image.GetDirection())
    sitk.WriteImage(smaller, str(_case_image(ds)))


def _break_origin(ds):
    image = sitk.ReadImage(str(_case_image(ds)))
    image.SetOrigin((5.0, 0.0, 0.0))
    sitk.WriteImage(image, str(_case_image(ds)))


def _undeclared_label(ds):
    label_path = ds / "labelsTr" / "case1.nii.gz"
    label = sitk.ReadImage(str(label_path))
    array = sitk.GetArrayFromImage(label)
    array[0, 0, 0] = 9
    out = sitk.GetImageFromArray(array)
    out.CopyInformation(label)
    sitk.WriteImage(out, str(label_path))


def _all_background(ds):
    for label_path in (ds / "labelsTr").iterdir():
        label = sitk.ReadImage(str(label_path))
        out = sitk.GetImageFromArray(np.zeros_like(sitk.GetArrayFromImage(label)))
        out.CopyInformation(label)
        sitk.WriteImage(out, str(label_path))


def _no_cases(ds):
    for folder in ("imagesTr", "labelsTr"):
        for f in (ds / folder).iterdir():
            f.unlink()


BROKEN = {
    "no dataset.json": (lambda ds: (ds / "dataset.json").unlink(), r"has no dataset\.json"),
    "no labelsTr": (lambda ds: shutil.rmtree(ds / "labelsTr"), r"no labelsTr/ folder"),
    "image without label": (lambda ds: (ds / "labelsTr" / "case1.nii.gz").unlink(), r"case 'case1' .* no label"),
    "size mismatch": (_break_size, r"case 'case1': image size .* differs from label size"),
    "geometry mismatch": (_break_origin, r"case 'case1': image origin .* differs from label origin"),
    "undeclared label id": (_undeclared_label, r"values not declared in dataset\.json: case 'case1' \(9\)"),
    "empty dataset": (_no_cases, r"has no cases"),
    "labels all background": (_all_background, r"labels any organ"),
}


@pytest.mark.parametrize("name", list(BROKEN))
def test_bad_datasets_fail_before_training(name, good, tmp_path):
    ds = _copy(good, tmp_path / "ds")
    breaker, pattern = BROKEN[name]
    breaker(ds)
    before = snapshot(ds)
    out = run_cli(
        "train",
        "--data",
        str(ds),
        "--output",
        str(tmp_path / "run"),
        "--base",
        "builtin:tiny",
        "--tokenizer",
        "compact",
        cwd=tmp_path,
    )
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tgated: error: "), out.stderr
    assert re.search(pattern, lines[0]), lines[0]
    assert not (tmp_path / "run").exists()  # nothing written
    assert snapshot(ds) == before


def test_output_problems_fail_before_training(good, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    common = ("--data", str(good), "--base", "builtin:tiny", "--tokenizer", "compact")
    out = run_cli("train", *common, "--output", str(blocker / "run"), cwd=tmp_path)
    assert out.returncode == 2 and "cannot write" in out.stderr and len(out.stderr.strip().splitlines()) == 1

    earlier = tmp_path / "earlier"
    (earlier / "best").mkdir(parents=True)
    out = run_cli("train", *common, "--output", str(earlier), cwd=tmp_path)
    assert out.returncode == 2 and "holds an earlier run (best)" in out.stderr and "--resume" in out.stderr
    assert [p.name for p in earlier.iterdir()] == ["best"]

    out = run_cli("train", "--resume", str(earlier), cwd=tmp_path)
    assert out.returncode == 2 and "has no resume state" in out.stderr

    out = run_cli("train", *common, "--output", str(tmp_path / "r"), "--val", "split:2", cwd=tmp_path)
    assert out.returncode == 2 and "cannot hold out 2" in out.stderr and not (tmp_path / "r").exists()

    out = run_cli("train", *common, "--output", str(tmp_path / "r"), "--batch-size", "0", cwd=tmp_path)
    assert out.returncode == 2 and "batch_size must be an integer >= 1" in out.stderr

    out = run_cli("train", "--data", str(good), cwd=tmp_path)
    assert out.returncode == 2 and "missing --output" in out.stderr

    out = run_cli(
        "train",
        "--data",
        str(good),
        "--output",
        str(tmp_path / "r"),
        "--base",
        "builtin:nope",
        "--tokenizer",
        "compact",
        cwd=tmp_path,
    )
    assert out.returncode == 2 and "unknown built-in architecture 'builtin:nope'" in out.stderr
    # the cpu recipe brings the compact tokenizer; the paper's expects a pretrained base's own
    out = run_cli(
        "train",
        "--data",
        str(good),
        "--output",
        str(tmp_path / "r"),
        "--base",
        "builtin:tiny",
        "--recipe",
        "paper",
        cwd=tmp_path,
    )
    assert out.returncode == 2 and "--tokenizer" in out.stderr
    out = run_cli(
        "train", "--data", str(good), "--output", str(tmp_path / "r"), "--base", "./no/such/ckpt", cwd=tmp_path
    )
    assert out.returncode == 2 and "does not exist" in out.stderr
    assert not (tmp_path / "r").exists()


def test_evaluate_rejects_a_non_empty_report_folder(good, tmp_path):
    report = tmp_path / "report"
    report.mkdir()
    (report / "keep.txt").write_text("mine")
    out = run_cli("evaluate", "--checkpoint", "x", "--data", str(good), "--output", str(report), cwd=tmp_path)
    assert out.returncode == 2 and "not empty" in out.stderr
    assert [p.name for p in report.iterdir()] == ["keep.txt"]


def test_validation_sets_and_overwrite_in_preflight(good, tmp_path):
    from TGatedSegmentLib.errors import InputError
    from TGatedSegmentLib.training.config import TrainConfig
    from TGatedSegmentLib.training.preflight import preflight

    plan = preflight(
        TrainConfig(data=good, output=tmp_path / "r", val="split:1", seed=0, base="builtin:tiny", tokenizer="compact")
    )
    assert len(plan.train.cases) == 1 and len(plan.val.cases) == 1
    assert plan.train.cases[0].case_id != plan.val.cases[0].case_id and plan.val_label.startswith("split:1")
    other = make_dataset(tmp_path / "other", cases=1, depth=6, size=16, labels={"background": 0, "liver": 1})
    with pytest.raises(InputError, match="validation labels differ"):
        preflight(
            TrainConfig(data=good, output=tmp_path / "r", val=str(other), base="builtin:tiny", tokenizer="compact")
        )
    earlier = tmp_path / "earlier"
    (earlier / "last").mkdir(parents=True)
    plan = preflight(TrainConfig(data=good, output=earlier, overwrite=True, base="builtin:tiny", tokenizer="compact"))
    assert plan.resume_state is None and (earlier / "last").is_dir()  # preflight itself deletes nothing
