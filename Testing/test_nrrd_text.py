"""Segment names and prompts outside ASCII survive a .seg.nrrd, written as UTF-8 the way Slicer writes them
(pynrrd alone raises on writing them and drops them on reading)."""

from __future__ import annotations

import numpy as np
import slicerio

from TGatedSegmentLib.io.seg_nrrd import read_segmentation_layers
from TGatedSegmentLib.io.volume import Geometry
from TGatedSegmentLib.io.writers import PROMPT_TAG, read_segmentation, write_segmentation
from TGatedSegmentLib.vocabulary import resolve_prompts

NAMES = ["Leber", "rein gauche", "肝臓", "rein gauché", "liver"]


def _write(tmp_path):
    organs = resolve_prompts(", ".join(NAMES))
    geometry = Geometry.from_ijk_to_ras(np.diag([0.8, 0.8, 2.0, 1.0]), (6, 5, 4))
    masks = np.zeros((len(organs),) + geometry.array_shape, bool)
    for n in range(len(organs)):
        masks[n, n % 4, 1:3, n] = True
    path = tmp_path / "names.seg.nrrd"
    write_segmentation(path, masks, organs, geometry)
    return path, masks


def test_non_ascii_names_round_trip(tmp_path):
    path, masks = _write(tmp_path)
    layers = read_segmentation_layers(path)
    assert [name for name, _, _ in layers.segments] == NAMES
    for n in range(len(NAMES)):
        np.testing.assert_array_equal(layers.mask(n), masks[n])
    assert read_segmentation(path)[1] == NAMES


def test_the_header_holds_utf8_text_and_stays_a_valid_segmentation(tmp_path):
    path, _ = _write(tmp_path)
    header = path.read_bytes().split(b"\n\n", 1)[0]
    assert "Segment2_Name:=肝臓".encode() in header
    assert f"{PROMPT_TAG}:rein gauché|".encode() in header
    assert b"tgated-utf8" not in header  # no placeholder left behind
    table = slicerio.read_segmentation(str(path))  # another reader still parses it (and the voxels)
    assert len(table["segments"]) == len(NAMES) and table["voxels"].any()
    assert [p.name for p in tmp_path.iterdir()] == ["names.seg.nrrd"]  # no temporary file left
