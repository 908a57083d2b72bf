"""The Slicer module's logic, run for real against the stand-in for Slicer's API (Testing/slicer_stub).

Real: the logic code, volume export and result reading, the backend subprocess (this Python in place
of PythonSlicer, found on PATH under that name as in Slicer), its JSON progress, cancel. Stand-in:
the scene, nodes, segments, subject hierarchy, terminology and the qt.QTimer event loop (see
Testing/slicer_stub/slicer/__init__.py for what is modelled and from which Slicer source).
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import numpy as np
import pytest
from helpers.slicer import (  # noqa: F401  (fixtures and helpers)
    AXIAL,
    CORONAL,
    FAKE_BACKEND,
    GEOMETRIES,
    OBLIQUE,
    REPO,
    SAGITTAL,
    TERMINOLOGY_TAG,
    TESTING,
    TGatedSegment,
    existing_segmentation,
    fake_logic,
    glue,
    ijk_to_ras,
    logic,
    make_volume,
    pump_until,
    qt,
    rotation,
    run_until_done,
    scene_snapshot,
    segment_array,
    slicer,
    slicer_tmp,
    tag,
)

from TGatedSegmentLib.vocabulary import lookup

# --------------------------------------------------------------------------------------------------
# Volume export and placement


@pytest.mark.parametrize("kind", sorted(GEOMETRIES))
def test_volume_export_writes_the_nodes_exact_geometry(slicer_tmp, kind, tmp_path):
    """The file handed to the backend has the node's voxels and, converted from its LPS, the node's RAS
    geometry: the same physical point for every voxel."""
    import SimpleITK as sitk

    volume, voxels = make_volume(GEOMETRIES[kind])
    array, matrix = TGatedSegment.TGatedSegmentLogic._volumeData(volume)
    path = tmp_path / "input.nrrd"
    glue.exportVolume(array, matrix, path)
    image = sitk.ReadImage(str(path))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(image), voxels)
    for ijk in [(0, 0, 0), (21, 0, 0), (0, 17, 0), (0, 0, 13), (5, 9, 11)]:
        lps = np.array(image.TransformIndexToPhysicalPoint(ijk))
        ras = (GEOMETRIES[kind] @ np.array([*ijk, 1.0]))[:3]
        np.testing.assert_allclose(lps * [-1, -1, 1], ras, atol=1e-9)


@pytest.mark.parametrize("kind", sorted(GEOMETRIES))
def test_segments_land_where_the_backend_put_them_in_physical_space(fake_logic, kind):
    """Round trip through the backend: "patient left" must be exactly the voxels on the patient's left
    (RAS R below the centre's) whatever the voxel order; "bright" exactly the bright box, overlapping it."""
    volume, voxels = make_volume(GEOMETRIES[kind])
    node = fake_logic.segment(volume, "patient left, bright")
    left = segment_array(node, "patient left", volume)
    bright = segment_array(node, "bright", volume)

    k, j, i = np.indices(voxels.shape)
    ras = np.tensordot(GEOMETRIES[kind][:3, :3], np.stack([i, j, k]).astype(float), axes=1)
    centre = GEOMETRIES[kind][:3, :3] @ (np.array(voxels.shape[::-1]) - 1) / 2
    np.testing.assert_array_equal(left, ras[0] < centre[0])
    np.testing.assert_array_equal(bright, voxels > 500)
    assert (left & bright).any(), "the two prompts' segments overlap, and both keep the shared voxels"
    assert 0 < left.sum() < left.size


def test_volume_under_a_transform_gets_its_segmentation_under_the_same_transform(fake_logic):
    volume, voxels = make_volume(OBLIQUE)
    transform = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "registration")
    volume.SetAndObserveTransformNodeID(transform.GetID())
    node = fake_logic.segment(volume, "bright")
    assert node.GetTransformNodeID() == transform.GetID()
    np.testing.assert_array_equal(segment_array(node, "bright", volume), voxels > 500)


def reference_geometry(segmentation_node):
    """The segmentation's reference image geometry (IJK-to-RAS in its own coordinates, extent)."""
    import vtk

    converter = slicer.vtkSegmentationConverter
    text = segmentation_node.GetSegmentation().GetConversionParameter(
        converter.GetReferenceImageGeometryParameterName()
    )
    matrix, extent = vtk.vtkMatrix4x4(), [0] * 6
    assert converter.DeserializeImageGeometry(text, matrix, extent), f"no reference geometry: {text!r}"
    return slicer.util.arrayFromVTKMatrix(matrix), extent


def world_bounds(ijk_to_world: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """(min, max) RAS corners of the voxel centres of ``mask`` (k, j, i) placed by ``ijk_to_world``."""
    k, j, i = np.nonzero(mask)
    points = ijk_to_world @ np.stack([i, j, k, np.ones(i.size)])
    return np.stack([points[:3].min(axis=1), points[:3].max(axis=1)])


def test_segments_land_on_the_organ_when_the_volume_is_under_a_transform(fake_logic):
    """A volume under a non-identity linear transform (rotation + shift): the new segmentation gets
    the transform *before* its reference geometry, so that geometry is the volume's own (local)
    IJK-to-RAS, and segment and organ coincide in world coordinates. Set the other way round, Slicer
    maps the geometry through the transform once at the call and again as the segmentation's parent."""
    import vtk

    volume, voxels = make_volume(OBLIQUE)
    to_world = np.eye(4)
    to_world[:3, :3] = rotation(2, 30) @ rotation(0, -12)
    to_world[:3, 3] = [25.0, -40.0, 12.5]
    transform = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "registration")
    transform.SetMatrixTransformToParent(slicer.util.vtkMatrixFromArray(to_world))
    volume.SetAndObserveTransformNodeID(transform.GetID())

    node = fake_logic.segment(volume, "bright")
    assert node.GetTransformNodeID() == transform.GetID()
    geometry, extent = reference_geometry(node)
    np.testing.assert_allclose(geometry, OBLIQUE, atol=1e-9)  # the volume's local geometry
    assert extent == [0, voxels.shape[2] - 1, 0, voxels.shape[1] - 1, 0, voxels.shape[0] - 1]

    seg_to_world = vtk.vtkMatrix4x4()
    node.GetParentTransformNode().GetMatrixTransformToWorld(seg_to_world)
    seg_to_world = slicer.util.arrayFromVTKMatrix(seg_to_world)
    mask = segment_array(node, "bright", volume)
    np.testing.assert_array_equal(mask, voxels > 500)
    organ = world_bounds(to_world @ OBLIQUE, voxels > 500)
    np.testing.assert_allclose(world_bounds(seg_to_world @ geometry, mask), organ, atol=1e-6)
    image_to_world = vtk.vtkMatrix4x4()
    segment = node.GetSegmentation().GetSegment(node.GetSegmentation().GetSegmentIdBySegmentName("bright"))
    segment.GetRepresentation("Binary labelmap").GetImageToWorldMatrix(image_to_world)
    np.testing.assert_allclose(
        seg_to_world @ slicer.util.arrayFromVTKMatrix(image_to_world), to_world @ OBLIQUE, atol=1e-9
    )


def test_stand_in_maps_reference_geometry_through_the_transform_between_the_nodes(slicer_tmp):
    """The stand-in does what vtkMRMLSegmentationNode::SetReferenceImageGeometryParameterFromVolumeNode
    does: a volume under T and a segmentation under nothing get the geometry T @ IJK-to-RAS; both
    under T (or both under nothing) get IJK-to-RAS unchanged; nested transforms compose."""
    volume, _ = make_volume(AXIAL)
    outer = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "outer")
    inner = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "inner")
    outer_matrix = np.eye(4)
    outer_matrix[:3, :3], outer_matrix[:3, 3] = rotation(1, 25), [5.0, 0.0, -3.0]
    inner_matrix = np.eye(4)
    inner_matrix[:3, 3] = [0.0, 10.0, 0.0]
    outer.SetMatrixTransformToParent(slicer.util.vtkMatrixFromArray(outer_matrix))
    inner.SetMatrixTransformToParent(slicer.util.vtkMatrixFromArray(inner_matrix))
    inner.SetAndObserveTransformNodeID(outer.GetID())
    volume.SetAndObserveTransformNodeID(inner.GetID())
    segmentation = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", "s")

    segmentation.SetReferenceImageGeometryParameterFromVolumeNode(volume)
    np.testing.assert_allclose(reference_geometry(segmentation)[0], outer_matrix @ inner_matrix @ AXIAL, atol=1e-9)
    segmentation.SetAndObserveTransformNodeID(outer.GetID())
    segmentation.SetReferenceImageGeometryParameterFromVolumeNode(volume)
    np.testing.assert_allclose(reference_geometry(segmentation)[0], inner_matrix @ AXIAL, atol=1e-9)
    segmentation.SetAndObserveTransformNodeID(inner.GetID())
    segmentation.SetReferenceImageGeometryParameterFromVolumeNode(volume)
    np.testing.assert_allclose(reference_geometry(segmentation)[0], AXIAL, atol=1e-9)


# --------------------------------------------------------------------------------------------------
# The real backend


def test_real_backend_two_prompts_non_blocking(logic, tiny_checkpoint, slicer_tmp):
    """The panel's path: wait=False, a QTimer polls the real backend; a new segmentation named after
    the volume, next to it in the data tree, one segment per prompt with table colour and terminology."""
    volume, voxels = make_volume(OBLIQUE, name="abdomen CT")
    sh = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(slicer.mrmlScene)
    study = sh.CreateFolderItem(sh.GetSceneItemID(), "Study")
    sh.SetItemParent(sh.GetItemByDataNode(volume), study)
    events, completed = [], []

    job = logic.segment(
        volume,
        "liver\nleft kidney",
        checkpoint=str(tiny_checkpoint),
        device="cpu",
        showIn3D=True,
        progressCallback=events.append,
        completedCallback=completed.append,
        wait=False,
    )
    assert isinstance(job, TGatedSegment.SegmentationJob) and job.running
    assert logic.segmentationJob is job
    run_until_done(job)

    assert job.state == "done", job.error
    assert completed == [job] and logic.segmentationJob is None
    node = job.result
    assert node.GetName() == "abdomen CT segmentation"
    assert sh.GetItemParent(sh.GetItemByDataNode(node)) == study
    assert node.GetSegmentation().ContainsRepresentation("Closed surface")
    segmentation = node.GetSegmentation()
    assert [segmentation.GetSegment(segmentation.GetNthSegmentID(n)).GetName() for n in range(2)] == [
        "liver",
        "left kidney",
    ]
    done = next(e for e in events if e["event"] == "done")
    for name in ("liver", "left kidney"):
        segment = segmentation.GetSegment(segmentation.GetSegmentIdBySegmentName(name))
        organ = lookup(name)
        np.testing.assert_allclose(segment.GetColor(), np.array(organ.color) / 255.0)
        assert tag(segment, TERMINOLOGY_TAG) == organ.terminology()
        assert tag(segment, "TGatedSegment.Prompt") == name
        assert not segment.GetNameAutoGenerated() and not segment.GetColorAutoGenerated()
        mask = segment_array(node, name, volume)
        assert mask.shape == voxels.shape
        assert int(mask.sum()) == next(r["voxels"] for r in done["segments"] if r["name"] == name)
        if not mask.any():
            continue  # an empty segment has an empty image of its own (no geometry), as in Slicer
        matrix = np.eye(4)
        import vtk

        vmatrix = vtk.vtkMatrix4x4()
        segment.GetRepresentation("Binary labelmap").GetImageToWorldMatrix(vmatrix)
        vmatrix.DeepCopy(matrix.ravel(), vmatrix)
        np.testing.assert_allclose(matrix, OBLIQUE, atol=1e-9)
    left = tag(segmentation.GetSegment(segmentation.GetSegmentIdBySegmentName("left kidney")), TERMINOLOGY_TAG)
    parts = left.split("~")
    assert len(parts) == 7 and parts[2] == "SCT^64033007^Kidney" and parts[3] == "SCT^7771000^Left"

    # Progress: stages in order, percent never goes back, ends at 100; the device actually used.
    stages = [e["stage"] for e in events if e["event"] == "progress"]
    assert stages[0] == "export" and stages[-1] == "import"
    assert {"load", "segment", "write"} <= set(stages)
    percents = [e["percent"] for e in events]
    assert percents == sorted(percents) and percents[-1] == 100
    assert any(e["text"].startswith("Segmenting: slice") for e in events)
    assert job.device == "cpu" and next(e for e in events if e["event"] == "info")["device"] == "cpu"
    assert os.listdir(slicer_tmp) == []
    assert job.process.process.poll() is not None


def test_cancel_mid_run_stops_the_backend_and_changes_nothing(logic, tiny_checkpoint, slicer_tmp):
    """Cancel while the real backend is segmenting: the backend stops cleanly on SIGTERM (exit 130, given
    a grace long enough for a loaded machine: what a kill after the grace does is test_slicer_cancel's),
    scene exactly as before (including a chosen output segmentation), temporary files gone."""
    # deep enough that the backend cannot finish between its first "segment" event and the Cancel,
    # however slowly a loaded machine lets this test pump (160 slices could, under xdist)
    volume, voxels = make_volume(AXIAL, shape=(2000, 40, 40))
    output = existing_segmentation(volume, {"liver": ((0.2, 0.3, 0.4), voxels > 500)})
    before = scene_snapshot()
    events, completed = [], []
    job = logic.segment(
        volume,
        "liver, spleen",
        checkpoint=str(tiny_checkpoint),
        outputSegmentationNode=output,
        device="cpu",
        batchSize=1,
        progressCallback=events.append,
        completedCallback=completed.append,
        wait=False,
    )
    pump_until(
        lambda: any(e["event"] == "progress" and e["stage"] == "segment" for e in events) or not job.running,
        90,
        "the backend to start segmenting",
    )
    assert job.running, job.error
    job.cancelGraceS = 60.0
    started = time.monotonic()
    logic.cancel()  # what the panel's Cancel button calls: returns at once, the timer ends the job
    returned_in = time.monotonic() - started
    run_until_done(job, 90)
    print(f"cancel returned in {returned_in:.2f} s, the job ended {time.monotonic() - started:.2f} s after Cancel")

    assert job.state == "cancelled" and completed == [job]
    assert job.process.process.poll() is not None
    assert job.process.returncode == glue.EXIT_CANCELLED  # stopped cleanly by SIGTERM, not killed
    assert not any(e["event"] == "done" for e in events)
    assert scene_snapshot() == before
    assert os.listdir(slicer_tmp) == []
    assert logic.segmentationJob is None
    with pytest.raises(glue.Cancelled):  # waiting on a cancelled job says so, it returns no result
        job.wait()


def test_backend_failure_is_a_plain_error_with_details(logic, slicer_tmp, tmp_path):
    volume, _ = make_volume(AXIAL)
    before = scene_snapshot()
    missing = tmp_path / "no-such-checkpoint"
    with pytest.raises(glue.BackendError) as caught:
        logic.segment(volume, "liver", checkpoint=str(missing), device="cpu")
    error = caught.value
    assert error.kind == "CheckpointError"
    assert error.message.startswith("The model could not be loaded: checkpoint")
    assert str(missing) in error.message and error.hint
    assert "Exit code: 2" in error.details and "segment" in error.details
    assert scene_snapshot() == before
    assert os.listdir(slicer_tmp) == []
    assert logic.segmentationJob is None


def test_module_self_test_passes_against_the_stand_in(slicer_tmp, caplog):
    """TGatedSegmentTest as Slicer runs it, through the documented entry point (creating the module
    registers ``slicer.selfTests['TGatedSegment']``): the dependency check, device detection, a few
    seconds of real training on phantoms, a real segmentation and a Cancel. Nothing may be skipped
    here: the backend's packages are installed, so a skip would hide a broken self-test."""
    import types

    TGatedSegment.TGatedSegment(types.SimpleNamespace())
    assert slicer.selfTests["TGatedSegment"].__self__.moduleName == "TGatedSegment"
    with caplog.at_level("INFO"):
        slicer.selfTests["TGatedSegment"]()
    messages = [record.getMessage() for record in caplog.records]
    assert not [m for m in messages if "skipped" in m.lower()]
    for passed in (
        "Instantiation test passed",
        "Parameter node test passed",
        "Dependencies and devices test passed",
        "Train, segment and cancel test passed (liver Dice",
    ):
        assert any(m.startswith(passed) for m in messages), passed


# --------------------------------------------------------------------------------------------------
# Keep / replace rules, cancel from a callback, failures (fast stand-in backend)


def test_existing_segments_are_kept_and_new_ones_suffixed(fake_logic):
    volume, voxels = make_volume(SAGITTAL)
    liver_mask = np.zeros(voxels.shape, bool)
    liver_mask[1:3, 1:3, 1:3] = True
    output = existing_segmentation(
        volume, {"Liver": ((0.1, 0.2, 0.3), liver_mask), "bright": ((0.9, 0.9, 0.1), liver_mask)}
    )
    segmentation = output.GetSegmentation()
    before = scene_snapshot()

    result = fake_logic.segment(volume, "liver, bright", outputSegmentationNode=output)
    assert result is output
    after = scene_snapshot()
    seg_entry_before = next(e for e in before if e[0] == output.GetID())
    seg_entry_after = next(e for e in after if e[0] == output.GetID())
    assert seg_entry_after[:5] == seg_entry_before[:5]  # both old segments: same id, name, colour, tags, voxels
    names = [segmentation.GetSegment(segmentation.GetNthSegmentID(n)).GetName() for n in range(4)]
    assert names == ["Liver", "bright", "liver (2)", "bright (2)"]
    np.testing.assert_array_equal(segment_array(output, "bright (2)", volume), voxels > 500)


def test_replace_ticked_replaces_only_the_same_name(fake_logic):
    volume, voxels = make_volume(OBLIQUE)
    small = np.zeros(voxels.shape, bool)
    small[0, 0, 0] = True
    output = existing_segmentation(volume, {"Bright": ((0.9, 0.9, 0.1), small), "liver": ((0.1, 0.2, 0.3), small)})
    segmentation = output.GetSegmentation()
    bright_id = segmentation.GetSegmentIdBySegmentName("Bright")
    liver_before = next(e for e in scene_snapshot() if e[0] == output.GetID())[4]

    fake_logic.segment(volume, "bright", outputSegmentationNode=output, replaceExisting=True)
    assert segmentation.GetNumberOfSegments() == 2
    assert segmentation.GetSegmentIdBySegmentName("bright") == bright_id  # same segment, same place
    assert segmentation.GetSegment(bright_id).GetName() == "Bright"  # the user's spelling stays
    np.testing.assert_array_equal(segment_array(output, "Bright", volume), voxels > 500)
    assert next(e for e in scene_snapshot() if e[0] == output.GetID())[4] == liver_before  # untouched


def test_a_failed_import_restores_replaced_segments(fake_logic, monkeypatch):
    """Replace ticked, and the import fails at the second prompt: the scene is exactly as before."""
    volume, voxels = make_volume(AXIAL)
    small = np.zeros(voxels.shape, bool)
    small[0, 0, 0] = True
    output = existing_segmentation(volume, {"bright": ((0.9, 0.9, 0.1), small), "liver": ((0.1, 0.2, 0.3), small)})
    before = scene_snapshot()
    real_update = slicer.util.updateSegmentBinaryLabelmapFromArray
    calls = []

    def fail_on_second_import(*args, **kwargs):
        calls.append(args[2])
        if len(calls) == 2:
            raise MemoryError("out of memory while importing")
        return real_update(*args, **kwargs)

    monkeypatch.setattr(slicer.util, "updateSegmentBinaryLabelmapFromArray", fail_on_second_import)
    with pytest.raises(MemoryError):
        fake_logic.segment(volume, "bright, liver", outputSegmentationNode=output, replaceExisting=True)
    monkeypatch.setattr(slicer.util, "updateSegmentBinaryLabelmapFromArray", real_update)
    assert len(calls) >= 2  # the first segment really was overwritten before the failure
    assert scene_snapshot() == before


def test_cancel_from_a_progress_callback_in_a_blocking_call(fake_logic, slicer_tmp, monkeypatch):
    monkeypatch.setenv("FAKE_BACKEND_SLEEP", "60")
    volume, _ = make_volume(AXIAL)
    before = scene_snapshot()

    def cancel_when_segmenting(event):
        if event["event"] == "progress" and event["stage"] == "segment":
            fake_logic.cancel()

    started = time.monotonic()
    with pytest.raises(glue.Cancelled):
        fake_logic.segment(volume, "bright", progressCallback=cancel_when_segmenting, wait=True)
    assert time.monotonic() - started < 30
    assert scene_snapshot() == before
    assert os.listdir(slicer_tmp) == []
    assert fake_logic.segmentationJob is None


@pytest.mark.parametrize(
    "mode, kind, start",
    [
        ("crash", "Crash", "Segmentation stopped unexpectedly (exit code 1): RuntimeError: boom in the backend"),
        ("missing-torch", "MissingDependency", "Segmentation needs the Python package 'torch'"),
        ("error", "InputError", "Segmentation cannot use this input: the volume is constant"),
    ],
)
def test_backend_failures_in_plain_words(fake_logic, slicer_tmp, monkeypatch, mode, kind, start):
    monkeypatch.setenv("FAKE_BACKEND_FAIL", mode)
    volume, _ = make_volume(AXIAL)
    output = existing_segmentation(volume, {})
    before = scene_snapshot()
    completed = []
    job = fake_logic.segment(
        volume, "bright", outputSegmentationNode=output, completedCallback=completed.append, wait=False
    )
    run_until_done(job)
    assert job.state == "failed" and completed == [job]
    assert job.error.kind == kind and job.error.message.startswith(start), job.error.message
    assert job.error.hint and "Command:" in job.error.details
    assert scene_snapshot() == before
    assert os.listdir(slicer_tmp) == []


def test_arguments_reach_the_backend(fake_logic, tiny_checkpoint):
    volume, _ = make_volume(AXIAL)
    sh = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(slicer.mrmlScene)
    sh.SetItemAttribute(sh.GetItemByDataNode(volume), "DICOM.Modality", "MR")
    fake_logic.segment(
        volume, ["bright", "liver"], checkpoint=str(tiny_checkpoint), device="cpu", threshold=0.3, batchSize=2
    )
    argv = fake_logic.argv()
    assert argv[0] == "segment" and argv[1].endswith("input.nrrd")
    options = {flag: argv[n + 1] for n, flag in enumerate(argv[:-1]) if flag.startswith("--")}
    assert options["--prompts"] == "bright, liver"
    assert options["--modality"] == "mr"  # from the volume's DICOM Modality, panel on "auto"
    assert options["--checkpoint"] == str(tiny_checkpoint)
    assert options["--threshold"] == "0.3" and options["--batch-size"] == "2" and options["--device"] == "cpu"
    assert options["--progress"] == "json"


def test_refuses_bad_requests_before_starting_anything(fake_logic, slicer_tmp):
    volume, _ = make_volume(AXIAL)
    with pytest.raises(ValueError):
        fake_logic.segment(volume, " , \n")
    with pytest.raises(ValueError):
        fake_logic.segment(None, "liver")
    with pytest.raises(ValueError):
        fake_logic.segment(volume, "liver", device="tpu")
    surfaces = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", "surfaces")
    surfaces.GetSegmentation().SetSourceRepresentationName("Closed surface")
    surfaces.GetSegmentation().AddEmptySegment("", "x")
    with pytest.raises(ValueError, match="Closed surface"):
        fake_logic.segment(volume, "liver", outputSegmentationNode=surfaces)
    assert os.listdir(slicer_tmp) == [] and fake_logic.segmentationJob is None


# --------------------------------------------------------------------------------------------------
# Training


def test_train_blocking_returns_the_best_checkpoint(fake_logic, tmp_path):
    events = []
    best = fake_logic.train(
        tmp_path / "dataset",
        tmp_path / "run",
        wait=True,
        progressCallback=events.append,
        epochs=3,
        batch_size=4,
        freezeEncoders=True,
        noTemporal=False,
        seed=7,
    )
    assert best == str(tmp_path / "run" / "best") and os.path.isdir(best)
    argv = fake_logic.argv()
    assert argv[:5] == ["train", "--data", str(tmp_path / "dataset"), "--output", str(tmp_path / "run")]
    assert "--freeze-encoders" in argv and "--no-temporal" not in argv
    assert argv[argv.index("--epochs") + 1] == "3" and argv[argv.index("--batch-size") + 1] == "4"
    assert [e["text"] for e in events if e["event"] == "progress"][-1] == "Training: epoch 3 of 3"
    assert events[-1]["event"] == "done" and events[-1]["percent"] == 100
    assert fake_logic.trainingJob is None


def test_train_in_background_can_be_stopped(fake_logic, tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_BACKEND_SLEEP", "60")
    events, completed = [], []
    folder = fake_logic.train(
        tmp_path / "dataset",
        tmp_path / "run",
        epochs=5,
        progressCallback=events.append,
        completedCallback=completed.append,
    )
    assert folder == str(tmp_path / "run" / "best")
    job = fake_logic.trainingJob
    pump_until(lambda: events, 30, "the first training event")
    fake_logic.stopTraining()  # returns at once; the job ends when the trainer's processes are gone
    run_until_done(job, 30)
    assert job.state == "cancelled" and completed == [job]
    assert job.process.process.poll() is not None and job.process.returncode == glue.EXIT_CANCELLED
    assert fake_logic.trainingJob is None


def test_train_failure_and_bad_options(fake_logic, tmp_path, monkeypatch):
    with pytest.raises(TypeError, match="learningRate"):
        fake_logic.train(tmp_path / "d", tmp_path / "r", learningRate=1e-3)
    monkeypatch.setenv("FAKE_BACKEND_FAIL", "error")
    with pytest.raises(glue.BackendError, match="^Training cannot use this input"):
        fake_logic.train(tmp_path / "d", tmp_path / "r", wait=True)


def test_dependencies_are_checked_without_importing(logic):
    assert logic.missingDependencies() == []
    assert [glue.requirementName(r) for r in logic.requirements()][0] == "torch"


def test_volume_removed_during_the_run_is_reported_not_imported(fake_logic, slicer_tmp, monkeypatch):
    monkeypatch.setenv("FAKE_BACKEND_SLEEP", "0.3")
    volume, _ = make_volume(AXIAL)
    job = fake_logic.segment(volume, "bright", wait=False)
    slicer.mrmlScene.RemoveNode(volume)
    run_until_done(job)
    assert job.state == "failed" and job.error.kind == "NodeRemoved"
    assert slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLSegmentationNode") is None
    assert os.listdir(slicer_tmp) == []


def test_console_use_logs_progress_without_a_callback(fake_logic, caplog):
    volume, _ = make_volume(AXIAL)
    with caplog.at_level("INFO"):
        fake_logic.segment(volume, "bright")
    messages = [r.getMessage() for r in caplog.records if r.getMessage().startswith("TGatedSegment: ")]
    assert messages[1].startswith("TGatedSegment: running ")
    texts = [m for m in messages if m.endswith("%)")]
    assert texts[0] == "TGatedSegment: Preparing the volume (3%)"
    assert texts[-1] == "TGatedSegment: Importing segments: 1 of 1 (100%)"
    assert any("Segmenting: slice" in m for m in texts)


def test_uncertainty_map_is_added_as_an_overlay_volume(logic, tiny_checkpoint, slicer_tmp):
    """uncertainty=N: the backend's combined entropy map comes back as a scalar volume on the volume's
    grid, beside it in the data tree, coloured and overlaid on the slice views."""
    volume, voxels = make_volume(OBLIQUE, shape=(6, 18, 22), name="abdomen CT")
    node = logic.segment(volume, "liver, spleen", checkpoint=str(tiny_checkpoint), device="cpu", uncertainty=3)
    assert node.GetSegmentation().GetNumberOfSegments() == 2
    maps = [
        n
        for n in (slicer.mrmlScene.GetNthNode(i) for i in range(slicer.mrmlScene.GetNumberOfNodes()))
        if n.GetName() == "abdomen CT uncertainty"
    ]
    assert len(maps) == 1
    entropy = maps[0]
    array = slicer.util.arrayFromVolume(entropy)
    assert array.shape == voxels.shape
    assert 0.0 <= array.min() and array.max() <= np.log(2) + 1e-5 and array.max() > 0
    import vtk

    matrix = vtk.vtkMatrix4x4()
    entropy.GetIJKToRASMatrix(matrix)
    np.testing.assert_allclose(slicer.util.arrayFromVTKMatrix(matrix), OBLIQUE, atol=1e-9)
    display = entropy.GetDisplayNode()
    assert display.GetColorNodeID() == "vtkMRMLColorTableNodeFileInferno.txt"
    assert display.GetApplyThreshold() and display.GetLowerThreshold() > 0
    assert not display.GetAutoWindowLevel()  # 0 .. ln 2 whatever the map holds, so that runs compare
    assert (display.GetWindowLevelMin(), display.GetWindowLevelMax()) == (0.0, pytest.approx(np.log(2), abs=1e-4))
    assert slicer.util.sliceViewerLayers["foreground"] == entropy.GetID()
    assert slicer.util.sliceViewerLayers["background"] == volume.GetID()
    assert "dropout" in entropy.GetAttribute("TGatedSegment.Uncertainty")
    assert os.listdir(slicer_tmp) == []


def test_uncertainty_with_a_slice_wise_checkpoint_is_a_plain_error(logic, tiny_baseline_checkpoint, slicer_tmp):
    volume, _ = make_volume(AXIAL, shape=(4, 10, 12))
    before = scene_snapshot()
    with pytest.raises(glue.BackendError) as info:
        logic.segment(volume, "liver", checkpoint=str(tiny_baseline_checkpoint), device="cpu", uncertainty=3)
    assert "stochastic" in str(info.value.message)
    assert scene_snapshot() == before and os.listdir(slicer_tmp) == []


# --------------------------------------------------------------------------------------------------
# Documented Slicer calls exist in Slicer


# Slicer Python names the module's docs and docstrings may tell users to call, each one read in
# Slicer/Slicer's source (tag v5.10.0 and main at 583e9b37d5) in the file named beside it.
VERIFIED_SLICER_NAMES = {
    # Base/Python/slicer/util.py: def getModuleLogic / getNode / launchConsoleProcess / pip_install / exit /
    # startupEnvironment (there is no def selfTest: slicer.util.selfTest does not exist).
    "slicer.util",
    "slicer.util.getModuleLogic",
    "slicer.util.getNode",
    "slicer.util.launchConsoleProcess",
    "slicer.util.pip_install",
    "slicer.util.exit",
    "slicer.util.startupEnvironment",
    # Base/Python/slicer/ScriptedLoadableModule.py, ScriptedLoadableModule.__init__:
    # "slicer.selfTests[self.moduleName] = self.runTest" (the dict is created there if missing).
    "slicer.selfTests",
    # Base/Python/slicer/testing.py: def runUnitTest(path, testname) (what slicer_add_python_unittest runs).
    "slicer.testing",
    "slicer.testing.runUnitTest",
    # Base/Python/slicer/packaging.py (5.12+ only): def pip_ensure.
    "slicer.packaging.pip_ensure",
    # Base/Python/slicer/slicerqt.py: setattr(slicer, "mrmlScene", slicer.app.mrmlScene());
    # Libs/MRML/Core/vtkMRMLScene.h: AddNewNodeByClass(className, nodeBaseName).
    "slicer.mrmlScene",
    "slicer.mrmlScene.AddNewNodeByClass",
    # Base/Python/slicer/i18n.py (tr, translate, getContext); Base/Python/slicer/parameterNodeWrapper/.
    "slicer.i18n",
    "slicer.i18n.tr",
    "slicer.parameterNodeWrapper",
}
# Slicer command-line options, from the addArgument(...) calls in Base/QTCore/qSlicerCoreCommandOptions.cxx
# (testing, python-code, python-script, additional-module-paths, disable-settings, disable-cli-modules,
# ignore-slicerrc) and Base/QTGUI/qSlicerCommandOptions.cxx (no-splash, no-main-window).
VERIFIED_SLICER_OPTIONS = {
    "--testing",
    "--python-code",
    "--python-script",
    "--additional-module-paths",
    "--disable-settings",
    "--disable-cli-modules",
    "--ignore-slicerrc",
    "--no-splash",
    "--no-main-window",
}
SLICER_NAME = re.compile(r"(?<![\w/.])slicer(?:\.[A-Za-z_]\w*)+")
OPTION = re.compile(r"(?<![\w-])--[a-z][a-z-]*[a-z]")


def module_documentation() -> str:
    """What the module tells users: its docstrings and comments (not its code)."""
    import ast
    import io
    import tokenize

    source = (REPO / "TGatedSegment" / "TGatedSegment.py").read_text(encoding="utf-8")
    texts = [
        ast.get_docstring(node) or ""
        for node in ast.walk(ast.parse(source))
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef))
    ]
    texts += [
        token.string
        for token in tokenize.generate_tokens(io.StringIO(source).readline)
        if token.type == tokenize.COMMENT
    ]
    return "\n".join(texts)


def test_documented_slicer_calls_exist_in_slicer():
    """No made-up API in what users are told to type: slicer.util.selfTest is gone everywhere, the
    self-test is documented as Slicer runs it, and every slicer.* name and Slicer command-line
    option in the docs and docstrings is one verified in Slicer's source."""
    docs = (REPO / "docs" / "slicer.md").read_text(encoding="utf-8")
    documentation = {"docs/slicer.md": docs, "TGatedSegment.py (docstrings, comments)": module_documentation()}
    for path in [
        REPO / "TGatedSegment" / "TGatedSegment.py",
        REPO / "docs" / "slicer.md",
        *(REPO / "TGatedSegment" / "TGatedSegmentGlue").glob("*.py"),
    ]:
        assert "slicer.util.selfTest" not in path.read_text(encoding="utf-8"), path
    for where, text in documentation.items():
        assert "slicer.selfTests['TGatedSegment']()" in text, where
        names = set(SLICER_NAME.findall(text))
        assert names, where
        unverified = names - VERIFIED_SLICER_NAMES
        assert not unverified, f"{where}: not verified in Slicer's source: {unverified}"
    self_test = docs[docs.index("## Self-test") : docs.index("\n## ", docs.index("## Self-test") + 1)]
    # Code spans of the Self-test section, less the backend's own command line (its options are its own).
    slicer_spans = "\n".join(span for span in self_test.split("`")[1::2] if "TGatedSegmentLib" not in span)
    test_doc = TGatedSegment.TGatedSegmentTest.__doc__
    for where, text in (("docs/slicer.md, Self-test", slicer_spans), ("TGatedSegmentTest", test_doc)):
        options = set(OPTION.findall(text))
        assert {"--python-code", "--no-main-window"} <= options, where
        unknown = options - VERIFIED_SLICER_OPTIONS
        assert not unknown, f"{where}: unknown Slicer options {unknown}"


# --------------------------------------------------------------------------------------------------
# Scene memory: shared labelmap layers


def _organ_boxes(shape, count, lesion=False):
    """``count`` disjoint boxes side by side along i (plus, with ``lesion``, one inside the first)."""
    masks = np.zeros((count + lesion,) + shape, bool)
    width = shape[2] // count
    for n in range(count):
        masks[n, 2:-2, 3:-3, n * width : (n + 1) * width - 1] = True
    if lesion:
        masks[count, 4:8, 5:9, 0:3] = True  # overlaps organ 0: needs a layer of its own
    return masks


ORGANS_13 = (
    "liver, spleen, right kidney, left kidney, gallbladder, esophagus, stomach, aorta, inferior vena cava, "
    "pancreas, right adrenal gland, left adrenal gland, duodenum"
)


def _import(tmp_path, volume, voxels, masks, prompts, traced=None):
    """``logic.importResult`` on a ``.seg.nrrd`` written by the backend's writer, as a finished job
    would; ``traced``: a list that gets the import's peak of traced allocations (tracemalloc)."""
    import tracemalloc
    import types

    from TGatedSegmentLib.io.writers import write_segmentation
    from TGatedSegmentLib.vocabulary import resolve_prompts

    organs = resolve_prompts(prompts)
    geometry = glue.exportVolume(voxels, OBLIQUE, tmp_path / "in.nrrd")
    write_segmentation(tmp_path / "out.seg.nrrd", masks, organs, geometry, overwrite=True)
    request = TGatedSegment.SegmentationRequest(volume, None, replaceExisting=False, showIn3D=False, crop=None)
    job = types.SimpleNamespace(
        request=request, outputPath=tmp_path / "out.seg.nrrd", geometry=geometry, report=lambda event: None
    )
    logic = TGatedSegment.TGatedSegmentLogic()
    tracemalloc.start()
    try:
        node = logic.importResult(job, {"segments": []})
        if traced is not None:
            traced.append(tracemalloc.get_traced_memory()[1])
    finally:
        tracemalloc.stop()
    segmentation = node.GetSegmentation()
    ids = [segmentation.GetNthSegmentID(n) for n in range(segmentation.GetNumberOfSegments())]
    assert [segmentation.GetSegment(i).GetName() for i in ids] == [o.name for o in organs]  # prompt order
    for n, organ in enumerate(organs):
        np.testing.assert_array_equal(segment_array(node, organ.name, volume), masks[n])
    return [segmentation.GetSegment(i).GetRepresentation("Binary labelmap") for i in ids]


def test_thirteen_organs_share_one_layer_and_memory_stays_within_the_volume_size(slicer_tmp, tmp_path):
    """Defect 5: one binary layer per prompt cost ~2 GB for 13 organs on a 512 x 512 x 300 CT.
    Non-overlapping segments now share one uint8 layer, read without expansion and handed over one
    layer at a time: the import adds at most 1.5x the volume's size at its peak (stand-in
    accounting: numpy allocations traced by tracemalloc, plus the temporary labelmap node's VTK
    image, one byte per voxel, which tracemalloc cannot see)."""
    volume, voxels = make_volume(OBLIQUE, shape=(60, 256, 256))
    traced = []
    images = _import(tmp_path, volume, voxels, _organ_boxes(voxels.shape, 13), ORGANS_13, traced)
    assert all(image is images[0] for image in images)  # one shared layer, not 13
    assert images[0]._voxels.nbytes == voxels.size  # one byte per voxel: half the int16 volume
    peak = traced[0] + voxels.size  # + the temporary labelmap node
    print(
        f"13 organs on {voxels.shape}: scene +{images[0]._voxels.nbytes / voxels.nbytes:.2f}x the volume, "
        f"import peak +{peak / voxels.nbytes:.2f}x (volume {voxels.nbytes / 1e6:.1f} MB)"
    )
    assert peak <= 1.5 * voxels.nbytes


def test_an_overlapping_prompt_gets_a_second_layer_only(slicer_tmp, tmp_path):
    volume, voxels = make_volume(OBLIQUE, shape=(16, 20, 39))
    masks = _organ_boxes(voxels.shape, 13, lesion=True)
    images = _import(tmp_path, volume, voxels, masks, ORGANS_13 + ", liver lesion")
    assert all(image is images[0] for image in images[:13]) and images[13] is not images[0]


def test_the_module_runs_the_checkout_s_backend_and_says_which():
    """The extension's own TGatedSegmentLib (here: this checkout's) comes first on sys.path."""
    import TGatedSegmentLib

    assert Path(TGatedSegmentLib.__file__).resolve().parent == (REPO / "TGatedSegmentLib").resolve()
    assert str((REPO / "TGatedSegmentLib").resolve()) in TGatedSegment.BACKEND_REPORT
    assert TGatedSegmentLib.__version__ in TGatedSegment.BACKEND_REPORT
