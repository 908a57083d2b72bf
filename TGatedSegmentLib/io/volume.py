"""Reading input volumes and carrying their voxel grid through the pipeline.

Masks must land back on exactly the input's voxels, so the grid (:class:`Geometry`) travels with
the data and every writer reuses it verbatim. Everything a user can get wrong about the input
(missing file, corrupt or truncated file, a 2D slice, a time series, RGB pixels, a blank volume) is
reported as one :class:`InputError` line before any model work starts.
"""

from __future__ import annotations

import contextlib
import gzip
import logging
import math
import struct
import zlib
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import SimpleITK as sitk

from ..errors import InputError
from ..modality import modality_hint
from .geometry import Geometry  # the grid lived here: still importable from this module

log = logging.getLogger(__name__)

MODALITY_TAG = "0008|0060"
_SERIES_UID_TAG = "0020|000e"
_SERIES_DESCRIPTION_TAG = "0008|103e"
_FORMATS_HINT = "Pass a NIfTI (.nii, .nii.gz), NRRD or MHA volume, or a DICOM series folder."
_COMPLEX = {sitk.sitkComplexFloat32, sitk.sitkComplexFloat64}


# --------------------------------------------------------------------------------------------------
# Reading


def read_image(path: str | Path) -> sitk.Image:
    """A scalar 3D volume from a file SimpleITK reads or from a DICOM series folder.

    The pixel type is kept. DICOM series get their Modality (0008|0060) copied into the image's
    metadata, so :func:`image_modality` works for both single files and folders.
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise InputError(
            f"'{path}' does not exist",
            "Check the path: pass a volume file (.nii.gz, .nrrd, .mha) or a DICOM series folder.",
        )
    image = _read_dicom_folder(path) if path.is_dir() else _read_file(path)
    if image.GetDimension() == 4 and image.GetSize()[3] == 1:  # a one-frame "time series" is a volume
        image = sitk.Extract(image, list(image.GetSize()[:3]) + [0], [0, 0, 0, 0])
    _check_layout(
        path, image.GetDimension(), image.GetSize(), image.GetNumberOfComponentsPerPixel(), image.GetPixelID()
    )
    return image


def _corrupt(path: Path, reason: str) -> InputError:
    return InputError(f"cannot read '{path}': {reason}", "Re-export or re-download the file; it is damaged.")


@contextlib.contextmanager
def _quiet_itk() -> Iterator[None]:
    """ITK prints warnings such as "No Series were found" to stderr; our own message says it better."""
    previous = sitk.ProcessObject.GetGlobalWarningDisplay()
    sitk.ProcessObject.SetGlobalWarningDisplay(False)
    try:
        yield
    finally:
        sitk.ProcessObject.SetGlobalWarningDisplay(previous)


def _read_file(path: Path) -> sitk.Image:
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as exc:
        log.debug("SimpleITK cannot read %s: %s", path, exc)
        raise InputError(f"cannot read '{path}': not an image file, or a damaged one", _FORMATS_HINT) from None
    # Fail on the layout before decoding (possibly large) pixel data.
    size = reader.GetSize()
    if not (reader.GetDimension() == 4 and size[3] == 1):
        _check_layout(path, reader.GetDimension(), size, reader.GetNumberOfComponents(), reader.GetPixelID())
    _check_nifti_complete(path)
    try:
        image = reader.Execute()
    except RuntimeError as exc:
        log.debug("SimpleITK failed reading %s: %s", path, exc)
        raise _corrupt(path, "the file is corrupt or truncated") from None
    if image.HasMetaDataKey(MODALITY_TAG):
        image.SetMetaData(MODALITY_TAG, image.GetMetaData(MODALITY_TAG).strip())
    if size[2] == 1 and reader.GetImageIOFromFileName(str(path)) == "GDCMImageIO":
        _warn_single_dicom_slice(path, image)
    return image


def _warn_single_dicom_slice(path: Path, image: sitk.Image) -> None:
    """A user who picked one file of a series almost always meant the whole series."""
    uid = image.GetMetaData(_SERIES_UID_TAG).strip() if image.HasMetaDataKey(_SERIES_UID_TAG) else ""
    try:
        with _quiet_itk():
            files = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(path.parent), uid)
    except RuntimeError:
        return
    if len(files) > 1:
        log.warning(
            "'%s' is one slice of a %d-file DICOM series; pass the folder '%s' to read the whole volume.",
            path.name,
            len(files),
            path.parent,
        )


def dicom_series_files(folder: str | Path) -> list[str]:
    """The files of the series :func:`read_image` reads from ``folder``, in its slice order.

    File ``k`` holds slice ``k`` of the volume, so writers that must reference the source images
    (DICOM-SEG) pair masks with files through this very list.
    """
    return _dicom_series(Path(folder))[1]


def _dicom_series(folder: Path) -> tuple[str, list[str], int]:
    """(chosen series id, its files in slice order, number of series in the folder).

    The series with most files wins: a folder with a scout next to the CT means the CT.
    """
    try:
        with _quiet_itk():
            series_ids = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder))
    except RuntimeError:
        series_ids = ()
    if not series_ids:
        raise InputError(
            f"no DICOM series found in folder '{folder}'",
            "Select the folder that directly holds one series' DICOM files, or a volume file (.nii.gz, .nrrd, .mha).",
        )
    files = {sid: list(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), sid)) for sid in series_ids}
    chosen = max(series_ids, key=lambda sid: len(files[sid]))
    return chosen, files[chosen], len(series_ids)


def _read_dicom_folder(folder: Path) -> sitk.Image:
    chosen, files, series_count = _dicom_series(folder)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(files)
    reader.MetaDataDictionaryArrayUpdateOn()
    try:
        image = reader.Execute()
    except RuntimeError as exc:
        log.debug("SimpleITK failed reading the DICOM series in %s: %s", folder, exc)
        raise InputError(
            f"cannot read the DICOM series in '{folder}' (corrupt or inconsistent slices)",
            "Check the series loads in 3D Slicer's DICOM module, or convert it to .nii.gz first.",
        ) from None

    def tag(key: str) -> str:
        return reader.GetMetaData(0, key).strip() if reader.HasMetaDataKey(0, key) else ""

    if series_count > 1:
        description = tag(_SERIES_DESCRIPTION_TAG)
        log.warning(
            "'%s' holds %d DICOM series; reading series %s%s (%d files), the one with most files. "
            "Put the series you want in a folder of its own to choose another.",
            folder,
            series_count,
            chosen or "(no Series Instance UID)",
            f" '{description}'" if description else "",
            len(files),
        )
    if tag(MODALITY_TAG):
        image.SetMetaData(MODALITY_TAG, tag(MODALITY_TAG))
    return image


def _check_layout(path: Path, dimension: int, size: Sequence[int], components: int, pixel_id: int) -> None:
    name = path.name or str(path)
    dims = " x ".join(str(s) for s in size)
    if dimension == 2:
        raise InputError(
            f"'{name}' is a 2D image ({dims}); TGatedSegment needs a 3D volume",
            "Load a 3D volume (a CT or MR series); for a DICOM slice, pass the folder of its series.",
        )
    if dimension == 4:
        raise InputError(
            f"'{name}' is a 4D image ({dims}: a time series of {size[3]} volumes)",
            "Extract one 3D frame first (e.g. in Slicer's Sequences module, or with SimpleITK's Extract).",
        )
    if dimension != 3:
        raise InputError(
            f"'{name}' is a {dimension}D image ({dims}); TGatedSegment needs a 3D volume",
            "Convert it to a single 3D volume first.",
        )
    if components != 1 or pixel_id in _COMPLEX:
        what = (
            "complex-valued pixels"
            if pixel_id in _COMPLEX
            else f"vector or RGB pixels ({components} components per voxel)"
        )
        raise InputError(
            f"'{name}' has {what}; TGatedSegment needs a scalar grey-value volume",
            "Convert it to a single-component volume first (extract one channel or convert to grayscale).",
        )


def _check_nifti_complete(path: Path) -> None:
    """ITK's NIfTI reader silently zero-fills a truncated file, so check the byte count ourselves.

    For .nii.gz that means inflating the stream once more (a fraction of a second per 100 MB),
    which also catches CRC errors and streams cut before their end marker.
    """
    name = path.name.lower()
    compressed = name.endswith(".nii.gz")
    if not (compressed or name.endswith(".nii")):
        return
    try:
        with gzip.open(path, "rb") if compressed else open(path, "rb") as stream:
            header = stream.read(544)
            expected = _nifti_expected_bytes(header)
            if expected is None:
                return
            if compressed:
                total = len(header)
                while chunk := stream.read(1 << 20):
                    total += len(chunk)
            else:
                total = path.stat().st_size
    except (EOFError, OSError, zlib.error) as exc:
        log.debug("gzip stream of %s is broken: %s", path, exc)
        raise _corrupt(path, "the compressed data is truncated or corrupt") from None
    if total < expected:
        raise _corrupt(path, f"the file is truncated ({total} of {expected} bytes)")


def _nifti_expected_bytes(header: bytes) -> int | None:
    """Header + voxel bytes of a single-file NIfTI-1/-2 image, or None if it cannot tell."""
    if len(header) < 348:
        return None
    for endian in "<>":
        sizeof_hdr = struct.unpack(endian + "i", header[:4])[0]
        if sizeof_hdr == 348 and header[344:347] == b"n+1":
            dims = struct.unpack(endian + "8h", header[40:56])
            bitpix = struct.unpack(endian + "h", header[72:74])[0]
            offset = max(int(struct.unpack(endian + "f", header[108:112])[0]), 352)
        elif sizeof_hdr == 540 and len(header) >= 540 and header[4:7] == b"n+2":
            bitpix = struct.unpack(endian + "h", header[14:16])[0]
            dims = struct.unpack(endian + "8q", header[16:80])
            offset = max(struct.unpack(endian + "q", header[168:176])[0], 544)
        else:
            continue
        if not 1 <= dims[0] <= 7 or bitpix <= 0:
            return None
        return offset + math.prod(max(int(d), 1) for d in dims[1 : dims[0] + 1]) * bitpix // 8
    return None


def image_modality(image: sitk.Image) -> str | None:
    """ "ct" or "mr" from the DICOM Modality tag, when the input carried one."""
    if not image.HasMetaDataKey(MODALITY_TAG):
        return None
    hint = modality_hint(image.GetMetaData(MODALITY_TAG))
    return None if hint == "auto" else hint


# --------------------------------------------------------------------------------------------------
# Arrays


def image_from_array(array_kji: np.ndarray, geometry: Geometry) -> sitk.Image:
    """A SimpleITK image on ``geometry`` from a (k, j, i) array (bool becomes uint8)."""
    array = np.asarray(array_kji)
    if array.shape != geometry.array_shape:
        raise ValueError(f"array shape {array.shape} does not match the geometry's (k, j, i) {geometry.array_shape}")
    if array.dtype == bool:
        array = array.astype(np.uint8)
    return geometry.apply_to(sitk.GetImageFromArray(array))


def array_from_image(image: sitk.Image) -> np.ndarray:
    """A float32 copy of the voxels, axes (k, j, i); never a view into SimpleITK's buffer."""
    return sitk.GetArrayFromImage(image).astype(np.float32, copy=False)


def check_volume_values(array: np.ndarray) -> None:
    """Refuse volumes the model cannot segment, with the reason, before any inference."""
    array = np.asarray(array)
    if array.size == 0:
        raise InputError("the volume is empty (it has no voxels)", "Select a volume with image data.")
    values = array
    finite_only = False
    if np.issubdtype(array.dtype, np.floating):
        finite = np.isfinite(array)
        if not finite.any():
            raise InputError(
                "the volume has no usable values (every voxel is NaN or infinite)",
                "Check the file: it was probably saved from a failed computation; re-export it.",
            )
        if not finite.all():
            values, finite_only = array[finite], True
    low, high = values.min(), values.max()
    if low == high:
        which = "every finite voxel" if finite_only else "every voxel"
        raise InputError(
            f"the volume is constant ({which} is {float(low):g}); nothing to segment",
            "Check that you selected the right volume, not a blank or placeholder one.",
        )
