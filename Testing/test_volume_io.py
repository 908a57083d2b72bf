"""Input volumes: geometry survives every format, bad inputs fail with one clear line."""

from __future__ import annotations

import gzip
import logging
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from helpers.geometry import GEOMETRIES, physical_point

from TGatedSegmentLib.errors import InputError
from TGatedSegmentLib.io.volume import (
    MODALITY_TAG,
    Geometry,
    array_from_image,
    check_volume_values,
    image_from_array,
    image_modality,
    read_image,
)

FORMATS = [".nii.gz", ".nii", ".nrrd", ".mha"]


def blob_volume(geometry: Geometry) -> np.ndarray:
    """Int16 ramp with one bright voxel whose physical position the tests track."""
    array = np.arange(np.prod(geometry.array_shape), dtype=np.int16).reshape(geometry.array_shape) % 100
    array[2, 3, 4] = 1000
    return array


# --- Geometry -------------------------------------------------------------------------------------


def test_geometry_matrices_and_dict_round_trip():
    g = GEOMETRIES["oblique"]
    assert g.array_shape == (7, 8, 9)
    lps = g.ijk_to_lps()
    ras = g.ijk_to_ras()
    assert np.allclose(ras[:2], -lps[:2]) and np.allclose(ras[2:], lps[2:])
    assert Geometry.from_ijk_to_ras(ras, g.size).matches(g, tol=1e-9)
    assert Geometry.from_ijk_to_lps(lps, g.size).matches(g, tol=1e-9)
    assert Geometry.from_dict(g.to_dict()) == g
    import json

    assert Geometry.from_dict(json.loads(json.dumps(g.to_dict()))) == g


def test_geometry_matches_tolerance_and_size():
    g = GEOMETRIES["flipped-anisotropic"]
    nudged = Geometry(g.size, tuple(s * (1 + 1e-6) for s in g.spacing), tuple(o + 1e-5 for o in g.origin), g.direction)
    assert g.matches(nudged)
    assert not g.matches(Geometry(g.size, g.spacing, tuple(o + 0.5 for o in g.origin), g.direction))
    assert not g.matches(Geometry((9, 8, 8), g.spacing, g.origin, g.direction))


def test_geometry_from_slicer_ijk_to_ras():
    # A typical Slicer axial CT: IJKToRAS has negative x/y spacing on the diagonal (LPS identity).
    ijk_to_ras = np.array([[-0.75, 0, 0, 180.0], [0, -0.75, 0, 150.0], [0, 0, 2.5, -400.0], [0, 0, 0, 1]])
    g = Geometry.from_ijk_to_ras(ijk_to_ras, (512, 512, 90))
    assert g.direction == (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
    assert g.spacing == (0.75, 0.75, 2.5) and g.origin == (-180.0, -150.0, -400.0)
    with pytest.raises(ValueError):
        Geometry.from_ijk_to_ras(np.zeros((4, 4)), (2, 2, 2))


def test_image_from_array_and_back():
    g = GEOMETRIES["sagittal"]
    volume = blob_volume(g)
    image = image_from_array(volume, g)
    assert Geometry.from_image(image) == g
    assert image.GetPixelID() == sitk.sitkInt16
    array = array_from_image(image)
    assert array.dtype == np.float32 and np.array_equal(array, volume)
    array[:] = -1  # a copy, never a view into the image
    assert sitk.GetArrayViewFromImage(image).max() == 1000
    assert image_from_array(volume > 50, g).GetPixelID() == sitk.sitkUInt8
    with pytest.raises(ValueError):
        image_from_array(volume.transpose(2, 1, 0), g)


# --- Round trips through files --------------------------------------------------------------------


@pytest.mark.parametrize("suffix", FORMATS)
@pytest.mark.parametrize("name", list(GEOMETRIES))
def test_geometry_round_trip_keeps_the_blob_in_place(tmp_path, name, suffix):
    g = GEOMETRIES[name]
    volume = blob_volume(g)
    path = tmp_path / f"volume{suffix}"
    sitk.WriteImage(image_from_array(volume, g), str(path))

    image = read_image(path)
    back = Geometry.from_image(image)
    assert back.matches(g), (back, g)
    assert image.GetPixelID() == sitk.sitkInt16  # pixel type kept
    array = sitk.GetArrayFromImage(image)
    assert np.array_equal(array, volume)
    hit = np.argwhere(array == 1000)[0]
    assert np.allclose(physical_point(back, hit), physical_point(g, (2, 3, 4)), atol=1e-3)
    assert image_modality(image) is None


def test_single_slice_volume_is_valid(tmp_path):
    g = Geometry((16, 12, 1), (0.5, 0.5, 5.0), (1.0, 2.0, 3.0))
    path = tmp_path / "slice.nrrd"
    sitk.WriteImage(image_from_array(np.random.default_rng(0).random((1, 12, 16)).astype(np.float32), g), str(path))
    image = read_image(path)
    assert image.GetDimension() == 3 and image.GetSize() == (16, 12, 1)


def test_one_frame_4d_is_read_as_3d(tmp_path):
    frame = sitk.GetImageFromArray(np.random.default_rng(0).random((4, 5, 6)).astype(np.float32))
    path = tmp_path / "one_frame.nrrd"
    sitk.WriteImage(sitk.JoinSeries([frame]), str(path))
    image = read_image(path)
    assert image.GetDimension() == 3 and image.GetSize() == (6, 5, 4)


# --- Bad inputs -----------------------------------------------------------------------------------


def _raises(path, *fragments) -> InputError:
    with pytest.raises(InputError) as info:
        read_image(path)
    text = str(info.value)
    for fragment in fragments:
        assert fragment in text, text
    assert info.value.hint and "\n" not in text
    return info.value


def test_missing_path(tmp_path):
    _raises(tmp_path / "nope.nii.gz", "does not exist", "nope.nii.gz")


def test_text_file_named_nifti(tmp_path):
    path = tmp_path / "notes.nii.gz"
    path.write_text("this is not an image\n")
    _raises(path, "cannot read", "notes.nii.gz")


def test_gzip_of_garbage_named_nifti(tmp_path):
    path = tmp_path / "garbage.nii.gz"
    path.write_bytes(gzip.compress(b"\x00garbage" * 100))
    _raises(path, "cannot read", "garbage.nii.gz")


@pytest.mark.parametrize("suffix", FORMATS)
@pytest.mark.parametrize("keep", [0.6, 0.05])
def test_truncated_files(tmp_path, suffix, keep):
    """ITK silently zero-fills truncated NIfTI; the reader must not."""
    g = GEOMETRIES["flipped-anisotropic"]
    full = tmp_path / f"full{suffix}"
    noise = np.random.default_rng(1).integers(-1000, 1000, g.array_shape).astype(np.int16)  # incompressible
    sitk.WriteImage(image_from_array(noise, g), str(full), useCompression=True)
    data = full.read_bytes()
    cut = tmp_path / f"cut{suffix}"
    cut.write_bytes(data[: int(len(data) * keep)])
    _raises(cut, "cannot read", f"cut{suffix}")


def test_folder_without_dicom(tmp_path):
    _raises(tmp_path, "no DICOM series", str(tmp_path))
    (tmp_path / "readme.txt").write_text("no images here")
    _raises(tmp_path, "no DICOM series")


def test_2d_image(tmp_path):
    path = tmp_path / "screenshot.png"
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((30, 40), np.uint8)), str(path))
    error = _raises(path, "is a 2D image (40 x 30); TGatedSegment needs a 3D volume", "screenshot.png")
    assert "3D volume" in error.hint


def test_4d_time_series(tmp_path):
    frames = [sitk.GetImageFromArray(np.full((3, 4, 5), t, np.float32)) for t in range(6)]
    path = tmp_path / "cine.nii.gz"
    sitk.WriteImage(sitk.JoinSeries(frames), str(path))
    error = _raises(path, "4D image", "time series")
    assert "extract one 3d frame first" in error.hint.lower()


@pytest.mark.parametrize("suffix", [".nrrd", ".nii.gz", ".mha"])
def test_rgb_and_vector_pixels(tmp_path, suffix):
    path = tmp_path / f"rgb{suffix}"
    rgb = np.random.default_rng(0).integers(0, 255, (4, 5, 6, 3)).astype(np.uint8)
    sitk.WriteImage(sitk.GetImageFromArray(rgb, isVector=True), str(path))
    _raises(path, "vector or RGB pixels (3 components per voxel)", "scalar")


def test_constant_and_non_finite_volumes():
    with pytest.raises(InputError, match=r"the volume is constant \(every voxel is -1024\); nothing to segment"):
        check_volume_values(np.full((3, 4, 5), -1024, np.int16))
    with pytest.raises(InputError, match="NaN or infinite"):
        check_volume_values(np.full((3, 4, 5), np.nan, np.float32))
    with pytest.raises(InputError, match="NaN or infinite"):
        check_volume_values(np.array([[[np.inf, -np.inf]]]))
    partly = np.zeros((3, 4, 5), np.float32)
    partly[0, 0, 0] = np.nan
    with pytest.raises(InputError, match=r"every finite voxel is 0"):
        check_volume_values(partly)
    partly[1, 1, 1] = 5.0
    check_volume_values(partly)  # one NaN in real data is not our business
    check_volume_values(np.arange(60, dtype=np.int16).reshape(3, 4, 5))


# --- DICOM ----------------------------------------------------------------------------------------


def write_dicom_series(
    folder: Path,
    array: np.ndarray,
    series_uid: str,
    modality: str,
    description: str,
    spacing=(0.7, 0.7, 2.0),
    origin=(-100.0, -80.0, 50.0),
) -> None:
    """A minimal but valid DICOM series (one file per slice), as SimpleITK's own example writes it."""
    folder.mkdir(parents=True, exist_ok=True)
    image = sitk.GetImageFromArray(array.astype(np.int16))
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    common = {
        "0008|0060": modality,
        "0008|103e": description,
        "0020|000d": "1.2.826.0.1.3680043.2.1125.1",
        "0020|000e": series_uid,
        "0020|0037": "1\\0\\0\\0\\1\\0",
        "0008|0016": "1.2.840.10008.5.1.4.1.1.2",
        "0018|0050": str(spacing[2]),
    }
    for z in range(array.shape[0]):
        piece = image[:, :, z]
        for tag, value in common.items():
            piece.SetMetaData(tag, value)
        piece.SetMetaData("0008|0018", f"{series_uid}.{z + 1}")
        piece.SetMetaData("0020|0013", str(z + 1))
        piece.SetMetaData("0020|0032", "\\".join(str(v) for v in image.TransformIndexToPhysicalPoint((0, 0, z))))
        writer.SetFileName(str(folder / f"{description}_{z:03d}.dcm"))
        writer.Execute(piece)


def test_dicom_folder_with_two_series_reads_the_larger(tmp_path, caplog):
    rng = np.random.default_rng(0)
    small = rng.integers(0, 100, (3, 10, 12))
    large = rng.integers(0, 100, (5, 10, 12))
    write_dicom_series(tmp_path, small, "1.2.826.0.1.3680043.2.1125.2", "CT", "scout")
    write_dicom_series(tmp_path, large, "1.2.826.0.1.3680043.2.1125.3", "MR", "t2axial")
    with caplog.at_level(logging.WARNING, logger="TGatedSegmentLib.io.volume"):
        image = read_image(tmp_path)
    assert image.GetSize() == (12, 10, 5)
    assert np.array_equal(sitk.GetArrayFromImage(image), large)
    assert np.allclose(image.GetSpacing(), (0.7, 0.7, 2.0)) and np.allclose(image.GetOrigin(), (-100, -80, 50))
    assert image.GetMetaData(MODALITY_TAG) == "MR" and image_modality(image) == "mr"
    warning = " ".join(r.getMessage() for r in caplog.records)
    assert "2 DICOM series" in warning and "1.2.826.0.1.3680043.2.1125.3" in warning and "t2axial" in warning


def test_single_dicom_file_is_a_one_slice_volume_with_a_hint(tmp_path, caplog):
    write_dicom_series(tmp_path, np.arange(4 * 6 * 7).reshape(4, 6, 7), "1.2.826.0.1.3680043.2.1125.4", "CT", "ax")
    with caplog.at_level(logging.WARNING, logger="TGatedSegmentLib.io.volume"):
        image = read_image(tmp_path / "ax_001.dcm")
    assert image.GetSize() == (7, 6, 1) and image_modality(image) == "ct"
    assert "pass the folder" in caplog.text


def test_real_dicom_series(shared_data):
    folder = shared_data / "dicom-series" / "ts_ct_dicom"
    image = read_image(folder)
    assert image.GetDimension() == 3 and image.GetSize() == (512, 512, 20)
    assert image_modality(image) == "ct"
    label = sitk.ReadImage(str(shared_data / "dicom-series" / "ts_ct_dicom_label.nii.gz"))
    assert Geometry.from_image(image).matches(Geometry.from_image(label))
    check_volume_values(sitk.GetArrayViewFromImage(image))


def test_real_nifti_has_no_modality(shared_data):
    image = read_image(shared_data / "abdomen-sample" / "imagesTr" / "ts_ct_sm_0000.nii.gz")
    assert image.GetSize() == (122, 101, 30) and image_modality(image) is None
    check_volume_values(array_from_image(image))
