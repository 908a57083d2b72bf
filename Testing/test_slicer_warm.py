"""The module's warm backend (issue 12, point 5), through the logic as the panel drives it, with the
real backend and the Slicer stand-in: the first Apply starts one process, a second Apply on the same
volume with another organ reuses it and the volume's encoding and gives the same segment as a
one-shot run, a checkpoint change restarts it, Cancel stops the work without blocking the GUI and
leaves the scene as it was, a failure is a plain error, and cleanup ends the process tree."""

from __future__ import annotations

import os
import time

import numpy as np
import pytest
from helpers.slicer import (  # noqa: F401  (fixtures and helpers)
    AXIAL,
    TGatedSegment,
    glue,
    logic,
    make_volume,
    pump_until,
    run_until_done,
    scene_snapshot,
    segment_array,
    slicer_tmp,
    warm_logic,
)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_second_apply_reuses_the_loaded_model_and_the_volume_s_encoding(
    warm_logic, logic, tiny_checkpoint, tiny_baseline_checkpoint, slicer_tmp
):
    volume, voxels = make_volume(AXIAL, shape=(12, 30, 30))
    first = warm_logic.segment(volume, "liver, spleen", checkpoint=str(tiny_checkpoint), device="cpu", wait=False)
    assert isinstance(first, glue.WarmSegmentationJob) and first.running
    run_until_done(first)
    assert first.state == "done", first.error
    assert not first.cached
    assert first.device == "cpu" and [row["name"] for row in first.segments] == ["liver", "spleen"]  # the panel's log
    pid = warm_logic.warmBackend.pid
    assert pid is not None and warm_logic.segmentationJob is None

    events = []
    second = warm_logic.segment(
        volume, "left kidney", checkpoint=str(tiny_checkpoint), device="cpu", progressCallback=events.append, wait=False
    )
    run_until_done(second)
    assert second.state == "done", second.error
    assert second.cached  # no slice encoded again: the decoder only
    assert warm_logic.warmBackend.pid == pid  # the same process, the model loaded once
    assert events[-1]["percent"] == 100 and any(e["event"] == "done" for e in events)
    node = second.result
    assert node.GetSegmentation().GetNumberOfSegments() == 1
    warm_mask = segment_array(node, "left kidney", volume)
    assert warm_mask.shape == voxels.shape

    # The same segment as a run in a process of its own.
    alone = logic.segment(volume, "left kidney", checkpoint=str(tiny_checkpoint), device="cpu")
    np.testing.assert_array_equal(segment_array(alone, "left kidney", volume), warm_mask)
    assert os.listdir(slicer_tmp) == []

    # Another checkpoint: a new process.
    warm_logic.segment(volume, "liver", checkpoint=str(tiny_baseline_checkpoint), device="cpu")
    assert warm_logic.warmBackend.pid not in (None, pid)
    assert not _pid_alive(pid)


def test_cancel_stops_the_request_without_blocking_and_changes_nothing(warm_logic, tiny_checkpoint, slicer_tmp):
    volume, _ = make_volume(AXIAL, shape=(160, 40, 40))
    before = scene_snapshot()
    events, completed = [], []
    job = warm_logic.segment(
        volume,
        "liver, spleen",
        checkpoint=str(tiny_checkpoint),
        device="cpu",
        progressCallback=events.append,
        completedCallback=completed.append,
        wait=False,
    )
    pump_until(
        lambda: any(e["event"] == "progress" and e["stage"] == "segment" for e in events) or not job.running,
        120,
        "the backend to start segmenting",
    )
    assert job.running, job.error
    started = time.monotonic()
    warm_logic.cancel()  # the panel's Cancel button
    returned_in = time.monotonic() - started
    run_until_done(job, 30)
    ended_in = time.monotonic() - started
    print(f"warm cancel returned in {returned_in:.3f} s, the job ended after {ended_in:.2f} s")

    assert returned_in < 0.5, "Cancel held the GUI thread"
    assert ended_in < 2.0 + 1.0  # the request stops, or its process tree is killed after the 1.5 s grace
    assert job.state == "cancelled" and completed == [job]
    assert not any(e["event"] == "done" for e in events)
    assert scene_snapshot() == before
    assert os.listdir(slicer_tmp) == []
    assert warm_logic.segmentationJob is None
    with pytest.raises(glue.Cancelled):
        job.wait()

    # The next Apply works (on the warm process if it stopped in time, else on a new one).
    node = warm_logic.segment(volume, "liver", checkpoint=str(tiny_checkpoint), device="cpu")
    assert node.GetSegmentation().GetNumberOfSegments() == 1


def test_cancel_before_the_model_has_loaded(warm_logic, tiny_checkpoint, slicer_tmp):
    """Cancel while the backend is still starting: the request is never sent, the job ends at once."""
    volume, _ = make_volume(AXIAL)
    before = scene_snapshot()
    job = warm_logic.segment(volume, "liver", checkpoint=str(tiny_checkpoint), device="cpu", wait=False)
    assert warm_logic.warmBackend.ready is None  # the model is loading in the backend
    warm_logic.cancel()
    assert job.state == "cancelled"
    assert scene_snapshot() == before and os.listdir(slicer_tmp) == []


def test_a_checkpoint_that_does_not_load_is_a_plain_error(warm_logic, slicer_tmp, tmp_path):
    volume, _ = make_volume(AXIAL)
    before = scene_snapshot()
    missing = tmp_path / "no-such-checkpoint"
    with pytest.raises(glue.BackendError) as caught:
        warm_logic.segment(volume, "liver", checkpoint=str(missing), device="cpu")
    assert "could not be loaded" in caught.value.message and str(missing) in caught.value.message
    assert caught.value.hint
    assert scene_snapshot() == before and os.listdir(slicer_tmp) == []
    assert warm_logic.segmentationJob is None


def test_module_cleanup_ends_the_warm_backend(warm_logic, tiny_checkpoint, slicer_tmp):
    volume, _ = make_volume(AXIAL)
    warm_logic.segment(volume, "liver", checkpoint=str(tiny_checkpoint), device="cpu")
    pid = warm_logic.warmBackend.pid
    assert pid is not None and _pid_alive(pid)
    widget = TGatedSegment.TGatedSegmentWidget.__new__(TGatedSegment.TGatedSegmentWidget)
    widget.logic = warm_logic
    widget.removeObservers = lambda: None
    widget.cleanup()  # what Slicer calls when it closes or reloads the module
    assert warm_logic.warmBackend is None
    assert not _pid_alive(pid)


def test_uncertainty_and_a_batch_size_run_in_a_process_of_their_own(warm_logic, tiny_checkpoint, slicer_tmp):
    """The warm backend answers plain segmentations; the options it has no request field for keep the
    one-shot path (and so they work exactly as before)."""
    volume, _ = make_volume(AXIAL)
    job = warm_logic.segment(volume, "liver", checkpoint=str(tiny_checkpoint), device="cpu", batchSize=2, wait=False)
    assert type(job) is glue.SegmentationJob
    run_until_done(job)
    assert job.state == "done", job.error
    assert warm_logic.warmBackend is None
