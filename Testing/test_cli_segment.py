"""`tgated segment` through a real subprocess: outputs, JSON progress, and every bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from helpers.env import run_cli, run_cli_here
from safetensors.torch import load_file, save_file

from TGatedSegmentLib.io.volume import Geometry
from TGatedSegmentLib.io.writers import read_segmentation


def write_ct(path: Path, shape=(6, 40, 48), direction=None, value=None) -> Path:
    rng = np.random.default_rng(0)
    array = rng.normal(40, 20, shape).astype(np.float32) if value is None else np.full(shape, value, np.float32)
    if value is None:
        array[:, :4] = -1000  # some air, so that auto-detection says CT
    image = sitk.GetImageFromArray(array)
    image.SetSpacing((0.9, 0.8, 3.0))
    image.SetOrigin((-10.0, 20.0, 5.0))
    if direction is not None:
        image.SetDirection(direction)
    sitk.WriteImage(image, str(path))
    return path


@pytest.fixture(scope="module")
def ct_file(tmp_path_factory) -> Path:
    return write_ct(tmp_path_factory.mktemp("in") / "ct.nii.gz", direction=(-1, 0, 0, 0, -1, 0, 0, 0, 1))


def test_segment_writes_seg_nrrd_on_the_input_grid_with_json_progress(tmp_path, ct_file, tiny_checkpoint):
    out = tmp_path / "out.seg.nrrd"
    probs = tmp_path / "probs"
    proc = run_cli(
        "segment",
        str(ct_file),
        "--prompts",
        "liver, RK",
        "--preset",
        "abdomen13",
        "--checkpoint",
        str(tiny_checkpoint),
        "--output",
        str(out),
        "--probabilities",
        str(probs),
        "--progress",
        "json",
    )
    assert proc.returncode == 0, proc.stderr
    events = [json.loads(line) for line in proc.stdout.splitlines()]
    stages = {e["stage"] for e in events if e["event"] == "progress"}
    assert {"load", "segment", "write"} <= stages
    segment_events = [e for e in events if e.get("stage") == "segment"]
    assert segment_events[-1]["done"] == segment_events[-1]["total"] == 6
    info = next(e for e in events if e["event"] == "info")
    assert info["device"] == "cpu" and info["modality"] == "ct" and info["orientation"] == "RAS"
    done = events[-1]
    assert done["event"] == "done" and len(done["segments"]) == 13  # "RK" is the preset's right kidney
    masks, names, geometry = read_segmentation(out)
    assert names[0] == "liver" and names[1] == "right kidney" and len(names) == 13
    assert geometry.matches(Geometry.from_image(sitk.ReadImage(str(ct_file))))
    assert masks.shape == (13, 6, 40, 48)
    assert len(list(probs.glob("*.nii.gz"))) == 13


def test_nifti_labelmap_output_with_label_table(tmp_path, ct_file, tiny_checkpoint):
    out = tmp_path / "labels.nii.gz"
    proc = run_cli(
        "segment",
        str(ct_file),
        "--prompts",
        "liver\nspleen",
        "--checkpoint",
        str(tiny_checkpoint),
        "--output",
        str(out),
        "--progress",
        "none",
    )
    assert proc.returncode == 0, proc.stderr
    image = sitk.ReadImage(str(out))
    assert Geometry.from_image(image).matches(Geometry.from_image(sitk.ReadImage(str(ct_file))))
    table = json.loads((tmp_path / "labels.json").read_text(encoding="utf-8"))
    assert table["labels"] == {"liver": 1, "spleen": 2}
    assert set(np.unique(sitk.GetArrayFromImage(image))) <= {0, 1, 2}


def _bad_inputs(tmp: Path, ckpt: Path) -> dict:
    """name -> (argv, expected words in the error line)."""
    text_file = tmp / "notes.nii.gz"
    text_file.write_text("not an image")
    two_d = tmp / "slice.nii.gz"
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((20, 20), np.float32)), str(two_d))
    four_d = tmp / "dyn.nii.gz"
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((3, 4, 10, 10), np.float32), isVector=False), str(four_d))
    nan = write_ct(tmp / "nan.mha", value=np.nan)  # NIfTI I/O turns NaN into 0
    const = tmp / "const.nii.gz"
    sitk.WriteImage(sitk.GetImageFromArray(np.full((4, 8, 8), 7.0, np.float32)), str(const))
    good = write_ct(tmp / "good.nii.gz")
    bad_ckpt = tmp / "bad-ckpt"
    import shutil

    shutil.copytree(ckpt, bad_ckpt)
    weights = load_file(str(bad_ckpt / "model.safetensors"))
    weights["adapter.gate_proj.bias"] = weights["adapter.gate_proj.bias"][:7].clone()
    save_file(weights, str(bad_ckpt / "model.safetensors"))
    truncated = tmp / "trunc-ckpt"
    shutil.copytree(ckpt, truncated)
    data = (truncated / "model.safetensors").read_bytes()
    (truncated / "model.safetensors").write_bytes(data[: len(data) // 2])
    blocker = tmp / "a-file"
    blocker.write_text("x")
    base = ["--checkpoint", str(ckpt), "--progress", "none"]
    out = ["--output", str(tmp / "out" / "seg.seg.nrrd")]
    return {
        "missing file": (["segment", str(tmp / "nope.nii.gz"), "--prompts", "liver", *base, *out], "does not exist"),
        "unreadable file": (["segment", str(text_file), "--prompts", "liver", *base, *out], "cannot read"),
        "2D image": (["segment", str(two_d), "--prompts", "liver", *base, *out], "2D"),
        "4D image": (["segment", str(four_d), "--prompts", "liver", *base, *out], "4D"),
        "empty prompts": (["segment", str(good), "--prompts", " , \n", *base, *out], "prompt"),
        "all-NaN volume": (["segment", str(nan), "--prompts", "liver", *base, *out], "NaN"),
        "constant volume": (["segment", str(const), "--prompts", "liver", *base, *out], "constant"),
        "missing checkpoint": (
            [
                "segment",
                str(good),
                "--prompts",
                "liver",
                "--checkpoint",
                str(tmp / "no-ckpt"),
                "--progress",
                "none",
                *out,
            ],
            "does not exist",
        ),
        "wrong shapes": (
            ["segment", str(good), "--prompts", "liver", "--checkpoint", str(bad_ckpt), "--progress", "none", *out],
            "adapter.gate_proj.bias (7,) vs (32,)",
        ),
        "corrupt weights": (
            ["segment", str(good), "--prompts", "liver", "--checkpoint", str(truncated), "--progress", "none", *out],
            "corrupt",
        ),
        "output not writable": (
            ["segment", str(good), "--prompts", "liver", *base, "--output", str(blocker / "seg.seg.nrrd")],
            "cannot write",
        ),
        "bad output format": (
            ["segment", str(good), "--prompts", "liver", *base, "--output", str(tmp / "out" / "seg.png")],
            "unsupported output format",
        ),
    }


#: the cases run as real `tgated` processes; the others call the same entry point in the test's process
IN_A_PROCESS = ("missing file", "wrong shapes", "constant volume")


def test_bad_inputs_give_one_clear_line_and_write_nothing(tmp_path, tiny_checkpoint):
    cases = _bad_inputs(tmp_path, tiny_checkpoint)
    for name, (argv, words) in cases.items():
        proc = run_cli(*argv) if name in IN_A_PROCESS else run_cli_here(*argv)
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        assert proc.returncode == 2, f"{name}: rc={proc.returncode} {proc.stderr}"
        assert len(lines) == 1 and lines[0].startswith("tgated: error: "), f"{name}: {proc.stderr}"
        assert words.lower() in lines[0].lower(), f"{name}: {lines[0]}"
        assert "Traceback" not in proc.stderr
    assert not (tmp_path / "out").exists()  # nothing written, not even the folder


def test_existing_output_is_kept_unless_overwrite(tmp_path, ct_file, tiny_checkpoint):
    out = tmp_path / "seg.seg.nrrd"
    out.write_text("precious")
    args = [
        "segment",
        str(ct_file),
        "--prompts",
        "liver",
        "--checkpoint",
        str(tiny_checkpoint),
        "--output",
        str(out),
        "--progress",
        "none",
    ]
    proc = run_cli(*args)
    assert proc.returncode == 2 and "--overwrite" in proc.stderr
    assert out.read_text(encoding="utf-8") == "precious"
    assert run_cli(*args, "--overwrite").returncode == 0
    assert read_segmentation(out)[1] == ["liver"]
    assert not [p for p in tmp_path.iterdir() if ".partial-" in p.name]


def test_zero_shot_default_offline_says_what_to_pass(tmp_path, ct_file):
    proc = run_cli(
        "segment", str(ct_file), "--prompts", "liver", "--output", str(tmp_path / "o.seg.nrrd"), "--progress", "none"
    )
    assert proc.returncode == 2
    assert "CIDAS/clipseg-rd64-refined" in proc.stderr and "local folder" in proc.stderr
    assert not (tmp_path / "o.seg.nrrd").exists()


def test_real_ct_from_shared_data(tmp_path, shared_data, tiny_checkpoint):
    image_path = shared_data / "abdomen-sample" / "imagesTr" / "ts_ct_sm_0000.nii.gz"
    out = tmp_path / "ts.seg.nrrd"
    proc = run_cli(
        "segment",
        str(image_path),
        "--preset",
        "abdomen13",
        "--checkpoint",
        str(tiny_checkpoint),
        "--output",
        str(out),
        "--progress",
        "none",
    )
    assert proc.returncode == 0, proc.stderr
    masks, names, geometry = read_segmentation(out)
    assert geometry.matches(Geometry.from_image(sitk.ReadImage(str(image_path))))
    assert masks.shape[1:] == geometry.array_shape and len(names) == 13


def test_real_dicom_series_folder(tmp_path, shared_data, tiny_checkpoint):
    folder = shared_data / "dicom-series" / "ts_ct_dicom"
    out = tmp_path / "dicom.nii.gz"
    proc = run_cli(
        "segment",
        str(folder),
        "--prompts",
        "liver",
        "--checkpoint",
        str(tiny_checkpoint),
        "--output",
        str(out),
        "--progress",
        "none",
    )
    assert proc.returncode == 0, proc.stderr
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
    series = reader.Execute()
    assert Geometry.from_image(sitk.ReadImage(str(out))).matches(Geometry.from_image(series))
