"""Writing into a segmentation the user already has: its reference geometry stays, no segment of the
same name is overwritten unless replace was chosen, and names and prompts in any script work
("Leber", "rein gauche", "肝臓"), through the command line, the backend's files and the scene.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

TESTING = Path(__file__).resolve().parent
REPO = TESTING.parent
for folder in (TESTING / "slicer_stub", REPO / "TGatedSegment"):
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))

import slicer  # noqa: E402  (the stand-in)
from helpers.slicer import (  # noqa: E402,F401
    AXIAL,
    OBLIQUE,
    existing_segmentation,
    fake_logic,
    logic,
    make_volume,
    scene_snapshot,
    segment_array,
    slicer_tmp,
    tag,
)

GEOMETRY = "Reference image geometry"


def names_of(node):
    segmentation = node.GetSegmentation()
    return [
        segmentation.GetSegment(segmentation.GetNthSegmentID(n)).GetName()
        for n in range(segmentation.GetNumberOfSegments())
    ]


def test_an_existing_segmentation_keeps_its_reference_geometry(fake_logic):
    """The user's segmentation was made on another grid (a coarser volume): it keeps that reference
    geometry and its reference volume; the new segments carry the segmented volume's own grid."""
    volume, voxels = make_volume(OBLIQUE)
    coarse, _ = make_volume(np.diag([2.0, 2.0, 4.0, 1.0]), shape=(7, 9, 11), name="coarse")
    output = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", "made on the coarse grid")
    output.CreateDefaultDisplayNodes()
    output.SetReferenceImageGeometryParameterFromVolumeNode(coarse)
    geometry = output.GetSegmentation().GetConversionParameter(GEOMETRY)
    reference = output.GetNodeReferenceID(output.GetReferenceImageGeometryReferenceRole())

    fake_logic.segment(volume, "bright", outputSegmentationNode=output)
    assert output.GetSegmentation().GetConversionParameter(GEOMETRY) == geometry
    assert output.GetNodeReferenceID(output.GetReferenceImageGeometryReferenceRole()) == reference == coarse.GetID()
    np.testing.assert_array_equal(segment_array(output, "bright", volume), voxels > 500)


def test_a_segmentation_without_reference_geometry_gets_the_volumes(fake_logic):
    volume, _ = make_volume(AXIAL)
    output = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", "empty")
    assert not output.GetSegmentation().GetConversionParameter(GEOMETRY)
    fake_logic.segment(volume, "bright", outputSegmentationNode=output)
    assert output.GetSegmentation().GetConversionParameter(GEOMETRY)
    assert output.GetNodeReferenceID(output.GetReferenceImageGeometryReferenceRole()) == volume.GetID()


def test_names_in_any_script_are_kept_and_never_overwrite(fake_logic, monkeypatch):
    """Keep (the default): every new segment beside the user's, suffixed on a name clash, whatever
    the case or script. Replace: only the segments of the same name get the new result, found by the
    module's own name rule (Slicer's GetSegmentIdBySegmentName would not match "ÖSOPHAGUS" to
    "ösophagus": it lowers ASCII letters only)."""
    monkeypatch.setenv("FAKE_BACKEND_ANY", "bright")  # every prompt gets the bright voxels
    volume, voxels = make_volume(OBLIQUE)
    small = np.zeros(voxels.shape, bool)
    small[0, 0, 0] = True
    output = existing_segmentation(
        volume,
        {"LEBER": ((0.1, 0.2, 0.3), small), "ÖSOPHAGUS": ((0.3, 0.2, 0.1), small), "肝臓": ((0.5, 0.5, 0.5), small)},
    )
    user = [entry for entry in scene_snapshot() if entry[0] == output.GetID()][0][3:]

    fake_logic.segment(volume, "Leber, rein gauche, 肝臓, ösophagus", outputSegmentationNode=output)
    assert names_of(output) == ["LEBER", "ÖSOPHAGUS", "肝臓", "Leber (2)", "rein gauche", "肝臓 (2)", "ösophagus (2)"]
    assert [entry for entry in scene_snapshot() if entry[0] == output.GetID()][0][3:6] == user  # untouched
    segmentation = output.GetSegmentation()
    for name, prompt in (("Leber (2)", "Leber"), ("rein gauche", "rein gauche"), ("肝臓 (2)", "肝臓")):
        segment = segmentation.GetSegment(segmentation.GetNthSegmentID(names_of(output).index(name)))
        assert tag(segment, "TGatedSegment.Prompt") == prompt
        assert tag(segment, "TerminologyEntry") is None  # no code a prompt does not have
        np.testing.assert_array_equal(segment_array(output, name, volume), voxels > 500)

    fake_logic.segment(volume, "leber, ösophagus", outputSegmentationNode=output, replaceExisting=True)
    assert names_of(output)[:3] == ["LEBER", "ÖSOPHAGUS", "肝臓"] and len(names_of(output)) == 7
    for index in (0, 1):  # the user's segments got the new result and kept their names
        segment_id = segmentation.GetNthSegmentID(index)
        mask = slicer.util.arrayFromSegmentBinaryLabelmap(output, segment_id, volume)
        np.testing.assert_array_equal(mask.astype(bool), voxels > 500)
    mask = slicer.util.arrayFromSegmentBinaryLabelmap(output, segmentation.GetNthSegmentID(2), volume)
    np.testing.assert_array_equal(mask.astype(bool), small)  # "肝臓" was not asked for: untouched


def test_non_ascii_prompts_through_the_real_backend(logic, tiny_checkpoint, slicer_tmp):
    """The prompts go through the command line and the model's tokenizer, the names come back through
    the backend's .seg.nrrd (UTF-8, as Slicer writes it) and its JSON events, into the scene."""
    volume, voxels = make_volume(AXIAL, shape=(6, 16, 18))
    events = []
    node = logic.segment(
        volume,
        "Leber, rein gauche, 肝臓",
        checkpoint=str(tiny_checkpoint),
        device="cpu",
        progressCallback=events.append,
    )
    assert names_of(node) == ["Leber", "rein gauche", "肝臓"]
    done = next(e for e in events if e["event"] == "done")
    assert [row["name"] for row in done["segments"]] == ["Leber", "rein gauche", "肝臓"]
    segmentation = node.GetSegmentation()
    for n, name in enumerate(names_of(node)):
        segment = segmentation.GetSegment(segmentation.GetNthSegmentID(n))
        assert tag(segment, "TGatedSegment.Prompt") == name
        assert int(segment_array(node, name, volume).sum()) == done["segments"][n]["voxels"]
