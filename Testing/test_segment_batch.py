"""`tgated segment --output-dir`: many volumes, one model load, and a bad case does not stop the others."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import SimpleITK as sitk
from helpers.env import backend_command, python_env, run_cli

from TGatedSegmentLib.cli.segment_batch import expand_inputs
from TGatedSegmentLib.errors import EXIT_SOME_FAILED, InputError
from TGatedSegmentLib.inference.batch import iter_batch, plan_cases, unique_names
from TGatedSegmentLib.io.writers import read_segmentation
from TGatedSegmentLib.progress import CancelToken


def write_ct(path: Path, shape=(5, 32, 36), seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    array = rng.normal(40, 20, shape).astype(np.float32)
    array[:, :4] = -1000  # some air, so that auto-detection says CT
    image = sitk.GetImageFromArray(array)
    image.SetSpacing((0.9, 0.8, 3.0))
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image, str(path))
    return path


def events(proc: subprocess.CompletedProcess) -> list[dict]:
    return [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]


# --------------------------------------------------------------------------------------------------
# Through the real command line


def test_batch_continues_after_a_bad_case(tmp_path, tiny_checkpoint):
    first = write_ct(tmp_path / "in" / "first.nii.gz", seed=1)
    bad = tmp_path / "in" / "slice.nii.gz"  # a 2D image: fails while reading, after the model loaded
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((20, 20), np.float32)), str(bad))
    last = write_ct(tmp_path / "in" / "last.mha", shape=(4, 24, 28), seed=2)
    out = tmp_path / "out"
    common = ["--prompts", "liver, RK", "--checkpoint", str(tiny_checkpoint)]  # an alias: names as in single mode
    proc = run_cli("segment", str(first), str(bad), str(last), *common, "--output-dir", str(out), "--progress", "json")

    assert proc.returncode == EXIT_SOME_FAILED == 3, proc.stderr
    stream = events(proc)
    assert [e["done"] for e in stream if e.get("stage") == "load"] == [0, 1]  # the model loaded once
    finished = [e for e in stream if e["event"] == "case" and e["status"] != "started"]
    assert [(e["case"], e["status"]) for e in finished] == [(1, "ok"), (2, "failed"), (3, "ok")]
    assert stream[-1]["event"] == "done" and stream[-1]["ok"] == 2 and stream[-1]["failed"] == 1
    failure_lines = [line for line in proc.stderr.splitlines() if "failed:" in line]
    assert len(failure_lines) == 1 and "case 2/3" in failure_lines[0] and "2D" in failure_lines[0]

    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert [(c["case"], c["status"]) for c in summary["cases"]] == [
        ("first", "ok"),
        ("slice", "failed"),
        ("last", "ok"),
    ]
    assert "2D" in summary["cases"][1]["error"] and summary["cases"][1]["hint"]
    assert not (out / "slice.seg.nrrd").exists()
    assert sorted(p.name for p in out.iterdir()) == ["first.seg.nrrd", "last.seg.nrrd", "summary.json"]

    for source in (first, last):  # each batch output is exactly what single mode writes
        single = tmp_path / "single" / f"{source.name}.seg.nrrd"
        assert run_cli("segment", str(source), *common, "-o", str(single), "--progress", "none").returncode == 0
        batch_masks, batch_names, batch_geometry = read_segmentation(out / f"{source.name.split('.')[0]}.seg.nrrd")
        single_masks, single_names, single_geometry = read_segmentation(single)
        assert batch_names == single_names == ["liver", "RK"]
        assert batch_geometry.matches(single_geometry)
        np.testing.assert_array_equal(batch_masks, single_masks)


def test_existing_outputs_are_refused_before_the_model_loads(tmp_path):
    volume = write_ct(tmp_path / "ct.nii.gz")
    out = tmp_path / "out"
    out.mkdir()
    (out / "ct.seg.nrrd").write_text("precious")
    # A checkpoint that does not exist: had the model been loaded first, that would be the error.
    args = [
        "segment",
        str(volume),
        "--prompts",
        "liver",
        "--checkpoint",
        str(tmp_path / "no-ckpt"),
        "--output-dir",
        str(out),
        "--progress",
        "json",
    ]
    proc = run_cli(*args)
    assert proc.returncode == 2
    assert "already exist" in proc.stderr and "--overwrite" in proc.stderr and "ct.seg.nrrd" in proc.stderr
    assert not [e for e in events(proc) if e.get("stage") == "load"]
    assert (out / "ct.seg.nrrd").read_text(encoding="utf-8") == "precious" and sorted(
        p.name for p in out.iterdir()
    ) == ["ct.seg.nrrd"]

    missing = run_cli(
        "segment",
        str(volume),
        str(tmp_path / "gone.nii.gz"),
        "--prompts",
        "liver",
        "--output-dir",
        str(tmp_path / "out2"),
        "--progress",
        "none",
    )
    assert missing.returncode == 2 and "gone.nii.gz' does not exist" in missing.stderr
    assert not (tmp_path / "out2").exists()

    several = run_cli("segment", str(volume), str(volume), "--prompts", "liver", "-o", str(tmp_path / "x.seg.nrrd"))
    assert several.returncode == 2 and "--output-dir" in several.stderr


def test_glob_and_list_forms_with_clashing_names(tmp_path, tiny_checkpoint):
    write_ct(tmp_path / "a" / "ct.nii.gz", seed=1)
    write_ct(tmp_path / "b" / "ct.nii.gz", seed=2)
    lists = tmp_path / "lists"
    lists.mkdir()
    (lists / "cases.txt").write_text(f"# the second patient\n\n../b/ct.nii.gz\n{tmp_path / 'a' / 'ct.nii.gz'}\n")
    proc = run_cli(
        "segment",
        "a/*.nii.gz",
        "@lists/cases.txt",
        "--prompts",
        "liver",
        "--checkpoint",
        str(tiny_checkpoint),
        "--output-dir",
        "out",
        "--output-format",
        "nii.gz",
        "--progress",
        "none",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((tmp_path / "out" / "summary.json").read_text(encoding="utf-8"))
    assert [(c["case"], c["status"]) for c in summary["cases"]] == [("a_ct", "ok"), ("b_ct", "ok")]  # a/ once
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "a_ct.json",
        "a_ct.nii.gz",
        "b_ct.json",
        "b_ct.nii.gz",
        "summary.json",
    ]


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_sigterm_stops_after_the_current_case(tmp_path, tiny_checkpoint):
    inputs = [str(write_ct(tmp_path / f"ct{i}.nii.gz", seed=i)) for i in range(4)]
    out = tmp_path / "out"
    proc = subprocess.Popen(
        backend_command(
            "segment",
            *inputs,
            "--prompts",
            "liver",
            "--checkpoint",
            str(tiny_checkpoint),
            "--output-dir",
            str(out),
            "--progress",
            "json",
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        encoding="utf-8",
        env=python_env(),
    )
    for line in proc.stdout:
        event = json.loads(line)
        if event["event"] == "case" and event["status"] == "started":
            proc.send_signal(signal.SIGTERM)
            break
    proc.communicate(timeout=120)
    assert proc.returncode == 130
    statuses = [c["status"] for c in json.loads((out / "summary.json").read_text(encoding="utf-8"))["cases"]]
    done = statuses.count("ok")
    assert done >= 1 and statuses == ["ok"] * done + ["cancelled"] * (4 - done) and done < 4
    assert sorted(p.name for p in out.iterdir()) == sorted([f"ct{i}.seg.nrrd" for i in range(done)] + ["summary.json"])


# --------------------------------------------------------------------------------------------------
# The pieces, in process


def test_output_names_follow_the_inputs_and_never_clash(tmp_path):
    dicom = tmp_path / "P7" / "series"
    dicom.mkdir(parents=True)
    assert unique_names([dicom, tmp_path / "ct.seg.nrrd", tmp_path / "ct.nrrd"]) == [
        "series",
        f"{tmp_path.name}_ct",
        f"{tmp_path.name}_ct-2",
    ]
    assert unique_names(["x/a/ct.nii.gz", "x/b/CT.nii.gz", "summary.nii.gz"]) == ["a_ct", "b_CT", "summary-2"]
    cases = plan_cases(["a/ct.nii.gz", "scan.mha"], tmp_path / "out", ".nii.gz")
    assert [c.output.name for c in cases] == ["ct.nii.gz", "scan.nii.gz"]
    assert [p.name for p in cases[0].outputs] == ["ct.nii.gz", "ct.json"]  # the label table is an output too


def test_input_lists_globs_and_missing_paths(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for name in ("c1.nii.gz", "c2.nii.gz", "scan[1].nii.gz"):
        (tmp_path / name).write_text("x")
    (tmp_path / "list.txt").write_text("# cases\n\n  c2.nii.gz  \nc1.nii.gz\n")
    assert expand_inputs(["c*.nii.gz"]) == [Path("c1.nii.gz"), Path("c2.nii.gz")]
    assert expand_inputs(["@list.txt", "c1.nii.gz"]) == [Path("c2.nii.gz"), Path("c1.nii.gz")]  # c1 once
    assert expand_inputs(["scan[1].nii.gz"]) == [Path("scan[1].nii.gz")]  # a real name beats a pattern
    with pytest.raises(InputError) as error:
        expand_inputs(["c1.nii.gz", "nope.nii.gz", "z*.nrrd"], lists=["missing.txt"])
    text = str(error.value)
    assert "3 inputs" in text and "'nope.nii.gz' does not exist" in text and "no files match 'z*.nrrd'" in text
    assert "missing.txt" in text


class _FakeSegmenter:
    """Stands in for the model: fails on request, and asks to cancel while the first case runs."""

    def __init__(self, cancel=None, fail_on=None):
        self.cancel, self.fail_on, self.calls = cancel, fail_on, 0

    def segment(self, image, progress=None, **options):
        self.calls += 1
        if self.calls == self.fail_on:
            raise RuntimeError("boom")
        if self.cancel is not None:
            self.cancel.cancel()  # as the first SIGTERM does: this case still finishes
        return SimpleNamespace(seconds=0.01, write=_touch)


def _touch(path: Path, overwrite: bool, source: Path) -> list[Path]:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch()
    return [path]


def test_loop_skips_a_crashing_case_and_stops_after_the_current_one_when_cancelled(tmp_path):
    cases = plan_cases(
        [write_ct(tmp_path / f"v{i}.nii.gz", shape=(3, 8, 8), seed=i) for i in range(3)], tmp_path / "out"
    )
    results = list(iter_batch(_FakeSegmenter(fail_on=2), cases, {}))
    assert [r.status for r in results] == ["ok", "failed", "ok"]
    assert results[1].kind == "internal" and "boom" in results[1].error and "--debug" in results[1].hint

    token = CancelToken()
    results = list(iter_batch(_FakeSegmenter(cancel=token), cases, {}, overwrite=True, cancel=token))
    assert [r.status for r in results] == ["ok"] and cases[0].output.exists()
