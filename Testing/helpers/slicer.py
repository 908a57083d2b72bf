"""The Slicer tests' shared part: the stand-in on sys.path, test geometries, volumes, fixtures, event pumping.

Fixtures (``slicer_tmp``, ``logic``, ``fake_logic``) are imported by the test modules that use them.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import pytest

TESTING = Path(__file__).resolve().parents[1]
REPO = TESTING.parent
for folder in (TESTING / "slicer_stub", REPO / "TGatedSegment"):
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))

import qt  # noqa: E402  (the stand-in)
import slicer  # noqa: E402  (the stand-in)

import TGatedSegment  # noqa: E402
import TGatedSegmentGlue as glue  # noqa: E402,F401  (re-exported for the test modules)

FAKE_BACKEND = [sys.executable, str(TESTING / "fake_backend.py")]
TERMINOLOGY_TAG = "TerminologyEntry"


# --------------------------------------------------------------------------------------------------
# Fixtures and helpers


@pytest.fixture
def slicer_tmp(tmp_path, monkeypatch):
    """A fresh stand-in scene, Slicer's temporary folder, and PythonSlicer on PATH (this Python)."""
    if os.name == "nt":
        pytest.skip("the PythonSlicer stand-in on PATH is a POSIX shell script")
    temporary = tmp_path / "slicer-temp"
    slicer.resetStandIn(temporary)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    shim = bin_dir / "PythonSlicer"
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    shim.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
    yield temporary
    assert qt.activeTimerCount() == 0, "a finished job left its QTimer running"


@pytest.fixture
def logic(slicer_tmp):
    """A logic that starts one backend process per run (the warm backend's tests are test_slicer_warm's)."""
    logic = TGatedSegment.TGatedSegmentLogic()
    logic.keepBackendLoaded = False
    return logic


@pytest.fixture
def warm_logic(slicer_tmp):
    """A logic as Slicer makes it: the warm backend on; stopped (and checked gone) at the end."""
    logic = TGatedSegment.TGatedSegmentLogic()
    assert logic.keepBackendLoaded
    yield logic
    backend = logic.warmBackend
    logic.stopBackend()
    assert backend is None or not backend.running


@pytest.fixture
def fake_logic(slicer_tmp, tmp_path, monkeypatch):
    """A logic whose backend is Testing/fake_backend.py; ``logic.argv()`` is the argv it got."""
    record = tmp_path / "argv.json"
    monkeypatch.setenv("FAKE_BACKEND_ARGV", str(record))
    logic = TGatedSegment.TGatedSegmentLogic()
    logic.keepBackendLoaded = False  # the fake backend answers one-shot commands only
    logic.backendCommand = FAKE_BACKEND
    logic.argv = lambda: json.loads(record.read_text(encoding="utf-8"))
    return logic


def rotation(axis: int, degrees: float) -> np.ndarray:
    c, s = np.cos(np.deg2rad(degrees)), np.sin(np.deg2rad(degrees))
    m = np.eye(3)
    a, b = [x for x in range(3) if x != axis]
    m[a, a], m[a, b], m[b, a], m[b, b] = c, -s, s, c
    return m


# IJK-to-RAS matrices: axial stored like a typical CT (LPS voxel order), sagittal, and oblique sagittal.
AXIAL = np.array([[-0.8, 0, 0, 40.0], [0, -0.8, 0, 30.0], [0, 0, 2.5, -100.0], [0, 0, 0, 1]])
SAGITTAL_AXES = np.array([[0, 0, -1], [1, 0, 0], [0, -1, 0]], float)  # I: anterior, J: inferior, K: left


def ijk_to_ras(axes: np.ndarray, spacing, origin) -> np.ndarray:
    m = np.eye(4)
    m[:3, :3] = axes * np.asarray(spacing, float)
    m[:3, 3] = origin
    return m


SAGITTAL = ijk_to_ras(SAGITTAL_AXES, (1.1, 0.9, 2.0), (12.0, -7.0, 55.0))
OBLIQUE = ijk_to_ras(rotation(0, 20) @ rotation(2, -10) @ SAGITTAL_AXES, (1.1, 0.9, 2.0), (12.0, -7.0, 55.0))
# Coronal slices (K along A), I along R, J along S: a left-handed voxel frame (determinant < 0).
CORONAL = ijk_to_ras(np.array([[1, 0, 0], [0, 0, 1], [0, 1, 0]], float), (0.7, 1.3, 3.0), (-60.0, -20.0, -90.0))
GEOMETRIES = {"axial": AXIAL, "sagittal": SAGITTAL, "oblique": OBLIQUE, "coronal": CORONAL}


def make_volume(matrix: np.ndarray, shape=(14, 18, 22), name="CT", seed=0):
    """A noisy volume (k, j, i) with a bright box around its centre."""
    rng = np.random.default_rng(seed)
    voxels = rng.normal(0, 60, shape).astype(np.int16)
    voxels[4:9, 6:12, 8:14] = 900  # straddles the centre: partly on each side
    return slicer.util.addVolumeFromArray(voxels, matrix, name), voxels


def segment_array(segmentation_node, name, volume_node):
    segmentation = segmentation_node.GetSegmentation()
    segment_id = segmentation.GetSegmentIdBySegmentName(name)
    assert segment_id, f"no segment named {name!r}"
    return slicer.util.arrayFromSegmentBinaryLabelmap(segmentation_node, segment_id, volume_node)


def tag(segment, name):
    import vtk

    value = vtk.reference("")
    return str(value) if segment.GetTag(name, value) else None


def scene_snapshot():
    """Everything a run could change: nodes, and every segment's id, name, colour, tags and voxels."""
    scene = slicer.mrmlScene
    nodes = []
    for index in range(scene.GetNumberOfNodes()):
        node = scene.GetNthNode(index)
        entry = [node.GetID(), node.GetClassName(), node.GetName()]
        if node.IsA("vtkMRMLSegmentationNode"):
            segmentation = node.GetSegmentation()
            for n in range(segmentation.GetNumberOfSegments()):
                segment_id = segmentation.GetNthSegmentID(n)
                segment = segmentation.GetSegment(segment_id)
                data = segment.GetRepresentation("Binary labelmap")
                # the segment's own voxels (a shared layer also holds its neighbours' labels)
                own = None if data is None else data._voxels == segment.GetLabelValue()
                digest = hashlib.sha1(own.tobytes()).hexdigest() if own is not None else None
                entry.append((segment_id, segment.GetName(), segment.GetColor(), dict(segment._tags), digest))
        nodes.append(entry)
    return nodes


def pump_until(condition, timeout=120.0, what="the condition"):
    """Return to the (stand-in) event loop, as the panel does, until ``condition()`` holds."""
    end = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < end, f"timed out waiting for {what}"
        slicer.app.processEvents()
        time.sleep(0.01)


def run_until_done(job, timeout=120.0):
    """The panel's path: the QTimer polls the job until it ends."""
    pump_until(lambda: not job.running, timeout, "the job to finish")
    return job


def existing_segmentation(volume_node, segments):
    """A user's segmentation with segments {name: (color, mask)}."""
    node = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", "user segmentation")
    node.CreateDefaultDisplayNodes()
    node.SetReferenceImageGeometryParameterFromVolumeNode(volume_node)
    for name, (color, mask) in segments.items():
        segment_id = node.GetSegmentation().AddEmptySegment("", name, color)
        slicer.util.updateSegmentBinaryLabelmapFromArray(mask.astype(np.uint8), node, segment_id, volume_node)
    return node
