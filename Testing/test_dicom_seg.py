"""DICOM-SEG output: segments, codes and references read back with highdicom/pydicom, and masks that
land on the same voxels as the labelmap output, whatever the series' orientation."""

from __future__ import annotations

import random
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from helpers.env import run_cli
from helpers.geometry import GEOMETRIES

from TGatedSegmentLib import __version__
from TGatedSegmentLib.errors import OutputError
from TGatedSegmentLib.io.volume import Geometry, dicom_series_files, read_image
from TGatedSegmentLib.io.writers import write_probabilities, write_segmentation
from TGatedSegmentLib.vocabulary import ABDOMEN13, generated_color, resolve_prompts

hd = pytest.importorskip("highdicom")
pydicom = pytest.importorskip("pydicom")

SERIES_GEOMETRIES = {
    "feet-first": Geometry((9, 8, 7), (0.7, 0.9, 3.0), (-120.5, 88.25, -301.0), (-1, 0, 0, 0, 1, 0, 0, 0, -1)),
    "flipped-anisotropic": GEOMETRIES["flipped-anisotropic"],
    "sagittal": GEOMETRIES["sagittal"],
    "oblique": GEOMETRIES["oblique"],
}


# --- helpers --------------------------------------------------------------------------------------


def write_dicom_series(folder: Path, geometry: Geometry, blank: tuple[str, ...] = ()) -> Path:
    """A CT series on ``geometry``, one file per slice, file names in shuffled order.

    ``blank`` names UIDs to leave empty, as some anonymisers do.
    """
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    folder.mkdir(parents=True, exist_ok=True)
    direction = np.asarray(geometry.direction).reshape(3, 3)
    matrix = geometry.ijk_to_lps()
    size_i, size_j, size_k = geometry.size
    pixels = (np.arange(size_k * size_j * size_i).reshape(size_k, size_j, size_i) % 200 - 100).astype(np.int16)
    common = {
        "StudyInstanceUID": generate_uid(),
        "SeriesInstanceUID": generate_uid(),
        "FrameOfReferenceUID": generate_uid(),
    }
    order = list(range(size_k))
    random.Random(1).shuffle(order)
    for name_index, k in enumerate(order):
        uid = generate_uid()
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
        ds.file_meta.MediaStorageSOPInstanceUID = uid
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, uid
        for key, value in common.items():
            setattr(ds, key, value)
        for key in blank:
            setattr(ds, key, "")
        ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = "Phantom^Synthetic", "TG-0001", "", "O"
        ds.StudyDate, ds.StudyTime, ds.StudyID, ds.AccessionNumber, ds.ReferringPhysicianName = (
            "20240101",
            "120000",
            "1",
            "",
            "",
        )
        ds.Modality, ds.SeriesNumber, ds.InstanceNumber, ds.Manufacturer = "CT", 7, k + 1, "synthetic"
        ds.PositionReferenceIndicator = ""
        ds.ImageOrientationPatient = [f"{v:.12g}" for v in np.concatenate([direction[:, 0], direction[:, 1]])]
        ds.ImagePositionPatient = [f"{v:.12g}" for v in matrix[:3, 3] + k * matrix[:3, 2]]
        ds.PixelSpacing = [geometry.spacing[1], geometry.spacing[0]]  # (between rows, between columns)
        ds.SliceThickness = geometry.spacing[2]
        ds.Rows, ds.Columns = size_j, size_i
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleIntercept, ds.RescaleSlope = -1024, 1
        ds.PixelData = pixels[k].tobytes()
        ds.save_as(folder / f"IM{name_index:04d}", enforce_file_format=True)
    return folder


def disjoint_masks(geometry: Geometry, count: int = 3) -> np.ndarray:
    """``count`` non-overlapping boxes spread through the volume (so the labelmap holds them all)."""
    masks = np.zeros((count,) + geometry.array_shape, bool)
    depth, rows, cols = geometry.array_shape
    masks[0, 1 : depth - 2, 1 : rows // 2, 1 : cols // 2] = True
    if count > 1:
        masks[1, depth - 2 :, rows // 2 :, cols // 2 :] = True
    if count > 2:
        masks[2, 0, rows - 1, 0] = True  # one voxel in a corner slice
    return masks


def masks_on_grid(path: Path, geometry: Geometry, count: int) -> np.ndarray:
    """Rebuild (K, k, j, i) masks from the SEG's own frame geometry, with no help from the source.

    Every frame's position must fall exactly on a slice of ``geometry`` and its orientation and
    pixel spacing must be the grid's: that is the voxel-for-voxel claim.
    """
    seg = pydicom.dcmread(str(path))
    shared = seg.SharedFunctionalGroupsSequence[0]
    direction = np.asarray(geometry.direction).reshape(3, 3)
    orientation = np.asarray(shared.PlaneOrientationSequence[0].ImageOrientationPatient, float)
    assert np.allclose(orientation, np.concatenate([direction[:, 0], direction[:, 1]]), atol=1e-6)
    assert np.allclose(np.asarray(shared.PixelMeasuresSequence[0].PixelSpacing, float), geometry.spacing[1::-1])
    assert (seg.Rows, seg.Columns) == geometry.array_shape[1:]
    frames = seg.pixel_array.reshape(int(seg.NumberOfFrames), seg.Rows, seg.Columns)
    to_index = np.linalg.inv(geometry.ijk_to_lps())
    masks = np.zeros((count,) + geometry.array_shape, bool)
    for frame, item in zip(frames, seg.PerFrameFunctionalGroupsSequence):
        position = np.asarray(item.PlanePositionSequence[0].ImagePositionPatient, float)
        i, j, k = (to_index @ np.append(position, 1.0))[:3]
        assert abs(i) < 1e-3 and abs(j) < 1e-3 and abs(k - round(k)) < 1e-3, (i, j, k)
        # with one segment highdicom puts the segment number in the shared groups
        identification = item.get("SegmentIdentificationSequence") or shared.SegmentIdentificationSequence
        number = int(identification[0].ReferencedSegmentNumber)
        masks[number - 1, int(round(k))] = frame.astype(bool)
    return masks


def labelmap_masks(path: Path, count: int) -> tuple[np.ndarray, Geometry]:
    image = sitk.ReadImage(str(path))
    labels = sitk.GetArrayFromImage(image)
    return np.stack([labels == value for value in range(1, count + 1)]), Geometry.from_image(image)


def source_uids(folder: Path) -> list[str]:
    return [str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID) for f in dicom_series_files(folder)]


# --- round trips ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(SERIES_GEOMETRIES))
def test_dicom_seg_equals_the_labelmap_voxel_for_voxel(tmp_path, name):
    folder = write_dicom_series(tmp_path / "series", SERIES_GEOMETRIES[name])
    geometry = Geometry.from_image(read_image(folder))
    assert geometry.matches(SERIES_GEOMETRIES[name], tol=1e-6)  # the series really has this orientation
    organs = resolve_prompts("liver, right kidney, spleen")
    masks = disjoint_masks(geometry)
    write_segmentation(tmp_path / "seg.dcm", masks, organs, geometry, source=folder)
    write_segmentation(tmp_path / "labels.nii.gz", masks, organs, geometry)
    expected, label_geometry = labelmap_masks(tmp_path / "labels.nii.gz", 3)
    assert label_geometry.matches(geometry)
    assert np.array_equal(masks_on_grid(tmp_path / "seg.dcm", label_geometry, 3), expected)
    # the same through highdicom's own reference bookkeeping: source image k <-> slice k
    seg = hd.seg.segread(tmp_path / "seg.dcm")
    pixels = seg.get_pixels_by_source_instance(
        source_sop_instance_uids=source_uids(folder),
        segment_numbers=[1, 2, 3],
        combine_segments=False,
        assert_missing_frames_are_empty=True,
    )
    assert np.array_equal(np.moveaxis(pixels, -1, 0).astype(bool), expected)


def test_segments_carry_names_codes_colours_and_the_algorithm(tmp_path):
    folder = write_dicom_series(tmp_path / "series", SERIES_GEOMETRIES["oblique"])
    geometry = Geometry.from_image(read_image(folder))
    organs = resolve_prompts("liver, left kidney, liver lesion")  # the lesion is free text: no SNOMED type
    write_segmentation(tmp_path / "seg.dcm", disjoint_masks(geometry), organs, geometry, source=folder)
    seg = hd.seg.segread(tmp_path / "seg.dcm")
    assert seg.SegmentationType == "BINARY"
    segments = list(seg.SegmentSequence)
    assert [s.SegmentLabel for s in segments] == ["liver", "left kidney", "liver lesion"]
    assert [int(s.SegmentNumber) for s in segments] == [1, 2, 3]
    for item in segments:
        category = item.SegmentedPropertyCategoryCodeSequence[0]
        assert (category.CodingSchemeDesignator, category.CodeValue) == ("SCT", "123037004")
        algorithm = item.SegmentationAlgorithmIdentificationSequence[0]
        assert (algorithm.AlgorithmName, algorithm.AlgorithmVersion) == ("TGatedSegment", __version__)
        assert item.SegmentAlgorithmType == "AUTOMATIC"
    liver_type = segments[0].SegmentedPropertyTypeCodeSequence[0]
    assert (liver_type.CodingSchemeDesignator, liver_type.CodeValue, liver_type.CodeMeaning) == (
        "SCT",
        "10200004",
        "Liver",
    )
    kidney_type = segments[1].SegmentedPropertyTypeCodeSequence[0]
    assert kidney_type.CodeValue == "64033007"
    assert kidney_type.SegmentedPropertyTypeModifierCodeSequence[0].CodeValue == "7771000"  # Left
    assert segments[2].SegmentedPropertyTypeCodeSequence[0].CodeValue == "123037004"  # generic, not made up
    assert segments[2].SegmentDescription == "liver lesion"
    colours = [organs[0].color, organs[1].color, generated_color(2)]
    for item, rgb in zip(segments, colours):
        assert list(item.RecommendedDisplayCIELabValue) == list(hd.color.CIELabColor.from_rgb(*rgb).value)
        assert hd.color.CIELabColor.from_dicom_value(list(item.RecommendedDisplayCIELabValue)).to_rgb() == tuple(rgb)


def test_category_region_and_laterality_follow_the_vocabulary(tmp_path):
    organ = resolve_prompts("left kidney cyst")[0]
    if organ.snomed_region is None:
        pytest.skip("the vocabulary has no kidney cyst with an anatomic region")
    folder = write_dicom_series(tmp_path / "series", SERIES_GEOMETRIES["feet-first"])
    geometry = Geometry.from_image(read_image(folder))
    write_segmentation(tmp_path / "seg.dcm", disjoint_masks(geometry, 1), [organ], geometry, source=folder)
    item = hd.seg.segread(tmp_path / "seg.dcm").SegmentSequence[0]
    assert item.SegmentedPropertyCategoryCodeSequence[0].CodeValue == organ.snomed_category[0]
    kind = item.SegmentedPropertyTypeCodeSequence[0]
    assert kind.CodeValue == organ.snomed_type[0] and "SegmentedPropertyTypeModifierCodeSequence" not in kind
    region = item.AnatomicRegionSequence[0]
    assert region.CodeValue == organ.snomed_region[0]
    assert region.AnatomicRegionModifierSequence[0].CodeValue == "7771000"  # the left kidney, not a left cyst


def test_dicom_seg_references_the_source_series_frame_by_frame(tmp_path):
    folder = write_dicom_series(tmp_path / "series", SERIES_GEOMETRIES["feet-first"])
    geometry = Geometry.from_image(read_image(folder))
    masks = disjoint_masks(geometry)
    write_segmentation(tmp_path / "seg.dcm", masks, resolve_prompts("liver, spleen, aorta"), geometry, source=folder)
    source = pydicom.dcmread(dicom_series_files(folder)[0], stop_before_pixels=True)
    seg = pydicom.dcmread(str(tmp_path / "seg.dcm"))
    assert seg.SOPClassUID == "1.2.840.10008.5.1.4.1.1.66.4"  # Segmentation Storage
    assert seg.StudyInstanceUID == source.StudyInstanceUID
    assert seg.FrameOfReferenceUID == source.FrameOfReferenceUID
    assert seg.SeriesInstanceUID != source.SeriesInstanceUID
    assert seg.PatientID == source.PatientID
    referenced = seg.ReferencedSeriesSequence[0]
    assert referenced.SeriesInstanceUID == source.SeriesInstanceUID
    assert {r.ReferencedSOPInstanceUID for r in referenced.ReferencedInstanceSequence} == set(source_uids(folder))
    uids = source_uids(folder)
    to_index = np.linalg.inv(geometry.ijk_to_lps())
    for item in seg.PerFrameFunctionalGroupsSequence:  # each frame names the image at its own position
        position = np.asarray(item.PlanePositionSequence[0].ImagePositionPatient, float)
        k = int(round((to_index @ np.append(position, 1.0))[2]))
        assert item.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID == uids[k]
    assert int(seg.NumberOfFrames) == sum(int(m.any(axis=(1, 2)).sum()) for m in masks)  # empty frames omitted


def test_overlaps_and_empty_segments_are_kept(tmp_path):
    folder = write_dicom_series(tmp_path / "series", SERIES_GEOMETRIES["sagittal"])
    geometry = Geometry.from_image(read_image(folder))
    masks = np.zeros((3,) + geometry.array_shape, bool)
    masks[0, 1:6, 2:8, 1:5] = True
    masks[1, 2:4, 3:5, 2:4] = True  # a lesion inside the liver
    organs = resolve_prompts("liver, liver lesion, spleen")  # spleen: found nowhere
    write_segmentation(tmp_path / "seg.dcm", masks, organs, geometry, source=folder)
    seg = hd.seg.segread(tmp_path / "seg.dcm")
    assert [s.SegmentLabel for s in seg.SegmentSequence] == ["liver", "liver lesion", "spleen"]
    assert np.array_equal(masks_on_grid(tmp_path / "seg.dcm", geometry, 3), masks)


def test_all_empty_segmentation_is_still_a_valid_file(tmp_path, caplog):
    folder = write_dicom_series(tmp_path / "series", SERIES_GEOMETRIES["oblique"])
    geometry = Geometry.from_image(read_image(folder))
    masks = np.zeros((2,) + geometry.array_shape, bool)
    write_segmentation(tmp_path / "seg.dcm", masks, resolve_prompts("liver, spleen"), geometry, source=folder)
    seg = hd.seg.segread(tmp_path / "seg.dcm")
    assert len(seg.SegmentSequence) == 2 and not seg.pixel_array.any()
    assert not [r for r in caplog.records if r.levelname == "WARNING"]  # no "reverting to all frames" noise
    assert np.array_equal(masks_on_grid(tmp_path / "seg.dcm", geometry, 2), masks)


# --- refusals ----------------------------------------------------------------------------------------


def test_non_dicom_input_is_a_clear_error_and_writes_nothing(tmp_path):
    geometry = SERIES_GEOMETRIES["oblique"]
    masks, organs = disjoint_masks(geometry), resolve_prompts("liver, spleen, aorta")
    volume = tmp_path / "ct.nii.gz"
    sitk.WriteImage(sitk.Image(list(geometry.size), sitk.sitkInt16), str(volume))
    (tmp_path / "empty").mkdir()
    out = tmp_path / "out" / "seg.dcm"
    for source, words in (
        (None, "none is known"),
        (volume, "not a DICOM series folder"),
        (tmp_path / "empty", "there is none"),
        (tmp_path / "empty", ".seg.nrrd"),
    ):
        with pytest.raises(OutputError, match=words) as info:
            write_segmentation(out, masks, organs, geometry, source=source)
        assert info.value.hint and ".nii.gz" in info.value.hint
    assert not out.exists()


def test_series_without_uids_cannot_be_referenced(tmp_path):
    geometry = SERIES_GEOMETRIES["feet-first"]
    folder = write_dicom_series(tmp_path / "anonymised", geometry, blank=("StudyInstanceUID", "SeriesInstanceUID"))
    with pytest.raises(OutputError, match="StudyInstanceUID, SeriesInstanceUID") as info:
        write_segmentation(
            tmp_path / "seg.dcm",
            disjoint_masks(geometry),
            resolve_prompts("liver, spleen, aorta"),
            Geometry.from_image(read_image(folder)),
            source=folder,
        )
    assert "UIDs" in info.value.hint
    assert not (tmp_path / "seg.dcm").exists()


def test_blank_sop_uids_are_taken_from_the_file_meta(tmp_path):
    geometry = SERIES_GEOMETRIES["feet-first"]
    folder = write_dicom_series(tmp_path / "series", geometry, blank=("SOPInstanceUID", "SOPClassUID"))
    geometry = Geometry.from_image(read_image(folder))
    write_segmentation(
        tmp_path / "seg.dcm", disjoint_masks(geometry), resolve_prompts("liver, spleen, aorta"), geometry, source=folder
    )
    metas = [
        pydicom.dcmread(f, stop_before_pixels=True).file_meta.MediaStorageSOPInstanceUID
        for f in dicom_series_files(folder)
    ]
    referenced = pydicom.dcmread(str(tmp_path / "seg.dcm")).ReferencedSeriesSequence[0].ReferencedInstanceSequence
    assert {r.ReferencedSOPInstanceUID for r in referenced} == set(metas)


def test_series_that_does_not_line_up_with_the_masks_is_refused(tmp_path):
    folder = write_dicom_series(tmp_path / "series", SERIES_GEOMETRIES["oblique"])
    geometry = Geometry.from_image(read_image(folder))
    shifted = Geometry(geometry.size, geometry.spacing, np.add(geometry.origin, (0.0, 0.0, 1.0)), geometry.direction)
    with pytest.raises(OutputError, match="does not line up"):
        write_segmentation(
            tmp_path / "seg.dcm",
            disjoint_masks(shifted),
            resolve_prompts("liver, spleen, aorta"),
            shifted,
            source=folder,
        )
    Path(dicom_series_files(folder)[0]).unlink()  # a slice went missing since the volume was read
    with pytest.raises(OutputError, match="6 images for 7 slices"):
        write_segmentation(
            tmp_path / "seg.dcm",
            disjoint_masks(geometry),
            resolve_prompts("liver, spleen, aorta"),
            geometry,
            source=folder,
        )
    assert not (tmp_path / "seg.dcm").exists()


def test_missing_highdicom_names_the_extra_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "highdicom", None)  # what an environment without it looks like
    geometry = SERIES_GEOMETRIES["oblique"]
    with pytest.raises(OutputError, match="highdicom") as info:
        write_segmentation(
            tmp_path / "seg.dcm",
            disjoint_masks(geometry),
            resolve_prompts("liver, spleen, aorta"),
            geometry,
            source=tmp_path,
        )
    assert 'pip install "tgated-segment[dicom]"' in info.value.hint


def test_existing_dicom_seg_is_kept_unless_overwrite(tmp_path):
    folder = write_dicom_series(tmp_path / "series", SERIES_GEOMETRIES["oblique"])
    geometry = Geometry.from_image(read_image(folder))
    out = tmp_path / "seg.dcm"
    out.write_text("precious")
    args = (out, disjoint_masks(geometry), resolve_prompts("liver, spleen, aorta"), geometry)
    with pytest.raises(OutputError, match="already exists"):
        write_segmentation(*args, source=folder)
    assert out.read_text(encoding="utf-8") == "precious"
    write_segmentation(*args, source=folder, overwrite=True)
    assert hd.seg.segread(out).SegmentationType == "BINARY"


def test_probabilities_cannot_be_a_dicom_seg(tmp_path):
    geometry = SERIES_GEOMETRIES["oblique"]
    with pytest.raises(OutputError, match="segmentation file"):
        write_probabilities(tmp_path / "p.dcm", np.zeros((1,) + geometry.array_shape, np.float32), ["a"], geometry)


# --- the real series in ../shared --------------------------------------------------------------------


def _with_uids(source: Path, target: Path) -> Path:
    """A copy of an anonymised series with consistent Study/Series UIDs, as an archive would hold it."""
    from pydicom.uid import generate_uid

    target.mkdir()
    study, series = generate_uid(), generate_uid()
    for path in sorted(source.iterdir()):
        ds = pydicom.dcmread(str(path))  # pixel data stays compressed, byte for byte
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        ds.save_as(target / path.name)
    return target


def test_real_dicom_series_round_trip_equals_its_label_volume(tmp_path, shared_data):
    folder = _with_uids(shared_data / "dicom-series" / "ts_ct_dicom", tmp_path / "series")
    label_image = sitk.ReadImage(str(shared_data / "dicom-series" / "ts_ct_dicom_label.nii.gz"))
    geometry = Geometry.from_image(read_image(folder))
    assert Geometry.from_image(label_image).matches(geometry)
    labels = sitk.GetArrayFromImage(label_image)
    organs = [o for o in ABDOMEN13 if (labels == o.label).any()]
    masks = np.stack([labels == o.label for o in organs])
    write_segmentation(tmp_path / "ct.dcm", masks, organs, geometry, source=folder)
    write_segmentation(tmp_path / "ct.nii.gz", masks, organs, geometry)
    expected, label_geometry = labelmap_masks(tmp_path / "ct.nii.gz", len(organs))
    assert np.array_equal(masks_on_grid(tmp_path / "ct.dcm", label_geometry, len(organs)), expected)
    seg = hd.seg.segread(tmp_path / "ct.dcm")
    assert [s.SegmentLabel for s in seg.SegmentSequence] == [o.name for o in organs]
    assert [s.SegmentedPropertyTypeCodeSequence[0].CodeValue for s in seg.SegmentSequence] == [
        o.snomed_type[0] for o in organs
    ]
    assert (
        seg.ReferencedSeriesSequence[0].SeriesInstanceUID
        == pydicom.dcmread(dicom_series_files(folder)[0], stop_before_pixels=True).SeriesInstanceUID
    )


def test_real_anonymised_series_without_uids_is_refused(tmp_path, shared_data):
    folder = shared_data / "dicom-series" / "ts_ct_dicom"  # its Study/Series Instance UIDs are blank
    geometry = Geometry.from_image(read_image(folder))
    with pytest.raises(OutputError, match="cannot reference it"):
        write_segmentation(
            tmp_path / "ct.dcm",
            np.zeros((1,) + geometry.array_shape, bool),
            resolve_prompts("liver"),
            geometry,
            source=folder,
        )


# --- CLI -------------------------------------------------------------------------------------------


def test_cli_dicom_seg_output_matches_the_labelmap_output(tmp_path, tiny_checkpoint):
    folder = write_dicom_series(tmp_path / "series", SERIES_GEOMETRIES["feet-first"])
    base = ["segment", str(folder), "--prompts", "liver", "--checkpoint", str(tiny_checkpoint), "--progress", "none"]
    # The untrained model's probabilities are nearly flat: threshold between two of them, near the
    # median, so that the mask is a real pattern (a full or empty mask would hide a flipped axis).
    proc = run_cli(*base, "--output", str(tmp_path / "first.nii.gz"), "--probabilities", str(tmp_path / "p.nii.gz"))
    assert proc.returncode == 0, proc.stderr
    values = np.unique(sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "p.nii.gz"))))
    threshold = float(values[len(values) // 2] + values[len(values) // 2 + 1]) / 2
    outputs = {}
    for name in ("seg.dcm", "labels.nii.gz"):
        proc = run_cli(*base, "--threshold", repr(threshold), "--output", str(tmp_path / name))
        assert proc.returncode == 0, proc.stderr
        outputs[name] = tmp_path / name
    expected, geometry = labelmap_masks(outputs["labels.nii.gz"], 1)
    assert geometry.matches(Geometry.from_image(read_image(folder)))
    assert 0 < expected.sum() < expected.size
    assert np.array_equal(masks_on_grid(outputs["seg.dcm"], geometry, 1), expected)
    assert [s.SegmentLabel for s in hd.seg.segread(outputs["seg.dcm"]).SegmentSequence] == ["liver"]


def test_cli_dicom_seg_from_a_non_dicom_input_fails_before_the_model(tmp_path):
    volume = tmp_path / "ct.nii.gz"
    image = sitk.GetImageFromArray(np.random.default_rng(0).normal(0, 100, (4, 16, 16)).astype(np.float32))
    sitk.WriteImage(image, str(volume))
    out = tmp_path / "out" / "seg.dcm"
    proc = run_cli(
        "segment",
        str(volume),
        "--prompts",
        "liver",
        "--checkpoint",
        str(tmp_path / "no-such-checkpoint"),
        "--output",
        str(out),
        "--progress",
        "none",
    )
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert "not a DICOM series folder" in lines[0] and ".seg.nrrd" in lines[0]  # not the checkpoint error
    assert not out.exists() and not out.parent.exists()
