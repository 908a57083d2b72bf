"""The warm backend (``tgated serve``) and its glue client, with real processes and no Slicer:
started on first use, reused, restarted on a checkpoint change, a second prompt on the same volume
without re-encoding, cancel that keeps the process warm, kill when it does not stop, stop."""

from __future__ import annotations

import sys
import time

import numpy as np
import pytest
import SimpleITK as sitk
from helpers.env import REPO, python_env

if str(REPO / "TGatedSegment") not in sys.path:
    sys.path.insert(0, str(REPO / "TGatedSegment"))

from TGatedSegmentGlue import SEGMENT_STAGES, ProgressTracker  # noqa: E402
from TGatedSegmentGlue.warm import WarmBackend  # noqa: E402


@pytest.fixture
def volume(tmp_path):
    rng = np.random.default_rng(0)
    array = np.where(rng.random((12, 40, 40)) > 0.5, 60, -900).astype(np.int16)
    path = tmp_path / "ct.nrrd"
    sitk.WriteImage(sitk.GetImageFromArray(array), str(path))
    return path


@pytest.fixture
def backend():
    env = python_env()
    warm = WarmBackend(
        [sys.executable, "-m", "TGatedSegmentLib"], env={"PYTHONPATH": env["PYTHONPATH"], "HF_HUB_OFFLINE": "1"}
    )
    yield warm
    warm.stop()
    assert not warm.running


def test_second_prompt_on_the_same_volume_reuses_the_warm_process_and_its_tokens(
    backend, volume, tmp_path, tiny_checkpoint
):
    events, tracker = [], ProgressTracker(SEGMENT_STAGES)
    first = backend.segment(
        volume,
        tmp_path / "a.seg.nrrd",
        ["liver", "spleen"],
        checkpoint=tiny_checkpoint,
        device="cpu",
        onEvent=lambda e: events.append(tracker.update(e)),
    ).wait()
    assert first.doneEvent and first.error is None, first.error
    pid = backend.pid
    assert first.doneEvent["slices_encoded"] == 12 and not first.doneEvent["cached"]
    assert (tmp_path / "a.seg.nrrd").is_file()
    assert any(e["event"] == "progress" and e["stage"] == "segment" for e in events)
    assert all(e.get("id") == first.id for e in events) and events[-1]["percent"] >= 90

    second = backend.segment(
        volume, tmp_path / "b.seg.nrrd", ["left kidney"], checkpoint=tiny_checkpoint, device="cpu"
    ).wait()
    assert second.doneEvent["cached"] and second.doneEvent["slices_encoded"] == 0  # decoder only
    assert backend.pid == pid  # the same warm process
    assert [s["name"] for s in second.doneEvent["segments"]] == ["left kidney"]

    other = volume.with_name("other.nrrd")  # another volume: encoded again, same process
    sitk.WriteImage(
        sitk.GetImageFromArray(sitk.GetArrayFromImage(sitk.ReadImage(str(volume)))[::-1].copy()), str(other)
    )
    third = backend.segment(other, tmp_path / "c.seg.nrrd", ["liver"], checkpoint=tiny_checkpoint, device="cpu").wait()
    assert not third.doneEvent["cached"] and third.doneEvent["slices_encoded"] == 12 and backend.pid == pid


def test_checkpoint_change_restarts_and_errors_are_reported(
    backend, volume, tmp_path, tiny_checkpoint, tiny_baseline_checkpoint
):
    backend.segment(volume, tmp_path / "a.seg.nrrd", "liver", checkpoint=tiny_checkpoint, device="cpu").wait()
    pid = backend.pid
    job = backend.segment(
        volume, tmp_path / "b.seg.nrrd", "liver", checkpoint=tiny_baseline_checkpoint, device="cpu"
    ).wait()
    assert job.doneEvent and backend.pid != pid  # a new process for the new checkpoint

    bad = backend.segment(
        tmp_path / "missing.nrrd", tmp_path / "c.seg.nrrd", "liver", checkpoint=tiny_baseline_checkpoint, device="cpu"
    ).wait()
    assert bad.error is not None and bad.error.kind == "InputError" and backend.running  # still warm
    with pytest.raises(Exception) as info:  # a checkpoint that does not exist: the start fails, clearly
        backend.segment(volume, tmp_path / "d.seg.nrrd", "liver", checkpoint=tmp_path / "nope", device="cpu")
    assert "model could not be loaded" in str(info.value)


def test_cancel_keeps_the_backend_warm(backend, tmp_path, tiny_checkpoint):
    deep = tmp_path / "deep.nrrd"
    sitk.WriteImage(sitk.GetImageFromArray(np.arange(400 * 32 * 32, dtype=np.int16).reshape(400, 32, 32)), str(deep))
    seen = []
    job = backend.segment(
        deep, tmp_path / "a.seg.nrrd", "liver", checkpoint=tiny_checkpoint, device="cpu", onEvent=seen.append
    )
    while not any(e["event"] == "progress" for e in seen) and not job.poll():
        time.sleep(0.01)
    pid = backend.pid
    job.cancel()
    job.wait()
    assert job.cancelled and job.doneEvent is None and not (tmp_path / "a.seg.nrrd").exists()
    assert backend.pid == pid  # stopped the request, not the process
    assert (
        backend.segment(deep, tmp_path / "b.seg.nrrd", "liver", checkpoint=tiny_checkpoint, device="cpu")
        .wait()
        .doneEvent
    )


def test_a_backend_that_ignores_cancel_is_killed(tmp_path):
    """A stand-in that says ready, then never answers: cancel ends its process tree after the grace."""
    script = tmp_path / "stuck.py"
    script.write_text(
        "import json, sys, time\nprint(json.dumps({'event': 'ready'}), flush=True)\n"
        "sys.stdin.readline()\ntime.sleep(600)\n"
    )
    warm = WarmBackend([sys.executable, str(script)])
    try:
        job = warm.segment("in.nrrd", "out.seg.nrrd", "liver")
        pid = warm.pid
        job.cancel(grace=0.5)
        job.wait()
        assert job.cancelled and not warm.running and pid is not None
    finally:
        warm.stop()
