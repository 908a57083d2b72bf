"""DICOM Segmentation (DICOM-SEG) output that references the DICOM series it was made from.

A DICOM-SEG belongs to the study of its source images: it names their Study, Series and Frame of
Reference UIDs and, frame by frame, the source image each mask was drawn on, so a PACS or viewer
(Slicer, OHIF) shows it on top of the right CT. That reference can only be made when the volume was
read from a DICOM series folder; for any other input :func:`source_series` says so with a fix
rather than inventing a study the segmentation does not belong to.

The writer never trusts file order alone: the series is re-listed exactly as the volume reader
lists it (:func:`~.volume.dicom_series_files`) and every slice's position and orientation is
checked against the grid the masks live on, so frame ``k`` of the SEG lands on the very patient
coordinates slice ``k`` of the labelmap does.

highdicom (and pydicom with it) is an optional dependency, imported only here and only when a
DICOM-SEG is written: ``pip install "tgated-segment[dicom]"``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from .. import __version__
from ..errors import InputError, OutputError
from ..vocabulary import ANATOMICAL_STRUCTURE, LATERALITY_CODES, Organ
from .volume import Geometry, dicom_series_files

DICOM_SEG_SUFFIX = ".dcm"
ALGORITHM_NAME = "TGatedSegment"
_INSTALL_HINT = 'Install the DICOM extra: pip install "tgated-segment[dicom]" (or write .seg.nrrd / .nii.gz instead).'
_OTHER_FORMATS = "write .seg.nrrd or .nii.gz"
_REQUIRED_UIDS = ("StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID", "SOPClassUID", "SOPInstanceUID")
_LO_MAX = 64  # DICOM "Long String" (SegmentLabel): longer values are invalid
_ST_MAX = 1024  # DICOM "Short Text" (SegmentDescription)
# Slice positions may miss the reader's regular grid by a few hundredths of a voxel (scanners round
# the decimal strings; ITK spaces slices evenly from the first to the last), while the wrong file for
# a slice misses it by a whole slice: a tenth of the smallest voxel size tells the two apart.
_POSITION_TOLERANCE = 0.1
_DIRECTION_TOLERANCE = 1e-4


def import_highdicom():
    """highdicom, or an :class:`OutputError` naming the extra to install (it is optional)."""
    try:
        import highdicom
    except ImportError:
        raise OutputError(
            "DICOM-SEG output needs the highdicom package, which is not installed", _INSTALL_HINT
        ) from None
    return highdicom


# --------------------------------------------------------------------------------------------------
# Source series


def source_series(source: str | Path | None) -> list:
    """Headers (pydicom datasets, no pixels) of the series the volume was read from, in slice order.

    Raises :class:`OutputError` when no reference can be made: no source, a source that is not
    a DICOM series folder, or a series whose UIDs were blanked (some anonymisers do).
    """
    import_highdicom()
    if source is None:
        raise OutputError(
            "DICOM-SEG output needs the DICOM series the volume was read from, and none is known",
            f"Segment a DICOM series folder (or pass source=FOLDER when writing), or {_OTHER_FORMATS}.",
        )
    folder = Path(source).expanduser()
    if not folder.is_dir():
        raise OutputError(
            f"DICOM-SEG output must reference the DICOM images it segments, and '{folder.name}' is not "
            "a DICOM series folder",
            f"Segment the DICOM series folder itself, or {_OTHER_FORMATS} for this input.",
        )
    try:
        files = dicom_series_files(folder)
    except InputError:
        raise OutputError(
            f"DICOM-SEG output needs a DICOM series, and there is none in '{folder}'",
            f"Segment a DICOM series folder, or {_OTHER_FORMATS}.",
        ) from None
    datasets = [_read_header(Path(f)) for f in files]
    _check_references(datasets, folder)
    return datasets


def _read_header(path: Path):
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        dataset = pydicom.dcmread(str(path), stop_before_pixels=True)
    except (InvalidDicomError, OSError, ValueError) as exc:
        raise OutputError(
            f"cannot read the DICOM header of '{path}' ({str(exc).strip()[:200]})",
            "Check that the series folder holds readable DICOM files.",
        ) from None
    # Anonymisers sometimes blank the dataset's SOP Class/Instance UIDs but keep the file meta
    # copies, which by definition name the same instance: those are the reference to use.
    meta = getattr(dataset, "file_meta", None)
    for name, meta_name in (
        ("SOPClassUID", "MediaStorageSOPClassUID"),
        ("SOPInstanceUID", "MediaStorageSOPInstanceUID"),
    ):
        if not str(dataset.get(name, "") or "").strip() and meta is not None and meta.get(meta_name):
            setattr(dataset, name, meta.get(meta_name))
    return dataset


def _check_references(datasets: Sequence, folder: Path) -> None:
    missing = [name for name in _REQUIRED_UIDS if not all(str(ds.get(name, "") or "").strip() for ds in datasets)]
    if missing:
        raise OutputError(
            f"the DICOM series in '{folder}' has no {', '.join(missing)} (anonymised without UIDs?), "
            "so a DICOM-SEG cannot reference it",
            f"Re-export the series with its UIDs kept, or {_OTHER_FORMATS}.",
        )
    geometry_tags = ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing")
    if not all(ds.get(name) is not None for ds in datasets for name in geometry_tags):
        raise OutputError(
            f"the DICOM series in '{folder}' lacks image position, orientation or pixel spacing",
            f"A DICOM-SEG needs images with patient geometry; {_OTHER_FORMATS}.",
        )


def check_alignment(datasets: Sequence, geometry: Geometry, folder: str | Path | None = None) -> None:
    """Refuse to write unless source image ``k`` is exactly slice ``k`` of ``geometry``.

    This is what makes the SEG's frames map to the same patient positions as the labelmap's
    voxels. It fails when the folder changed since the volume was read, or when the slices are
    unevenly spaced: the reader's regular grid then does not say where the images lie.
    """
    size_i, size_j, size_k = geometry.size
    matrix = geometry.ijk_to_lps()
    direction = np.asarray(geometry.direction).reshape(3, 3)
    problem = None
    if len(datasets) != size_k:
        problem = f"it has {len(datasets)} images for {size_k} slices"
    for k, ds in enumerate(datasets if problem is None else ()):
        orientation = np.asarray(ds.ImageOrientationPatient, dtype=float)
        position = np.asarray(ds.ImagePositionPatient, dtype=float)
        expected = matrix[:3, 3] + k * matrix[:3, 2]
        if (int(ds.Rows), int(ds.Columns)) != (size_j, size_i):
            problem = f"image {k} is {ds.Rows}x{ds.Columns} pixels, the volume {size_j}x{size_i}"
        elif not np.allclose(np.asarray(ds.PixelSpacing, dtype=float), geometry.spacing[1::-1], rtol=1e-4, atol=1e-4):
            problem = f"image {k} has pixel spacing {list(ds.PixelSpacing)}, the volume {list(geometry.spacing[1::-1])}"
        elif not np.allclose(
            orientation, np.concatenate([direction[:, 0], direction[:, 1]]), atol=_DIRECTION_TOLERANCE
        ):
            problem = f"image {k} has orientation {list(orientation)}, unlike the volume"
        elif np.abs(position - expected).max() > _POSITION_TOLERANCE * min(geometry.spacing):
            problem = f"image {k} lies at {position.round(3).tolist()}, slice {k} at {expected.round(3).tolist()}"
        if problem:
            break
    if problem:
        raise OutputError(
            f"the DICOM series in '{folder}' does not line up with the segmented volume ({problem})",
            f"Segment the folder again if its files changed, or {_OTHER_FORMATS} "
            "(unevenly spaced slices fit no regular grid).",
        )


# --------------------------------------------------------------------------------------------------
# Segments


def _code(hd, triple: Sequence[str]):
    scheme, value, meaning = triple
    return hd.sr.CodedConcept(value=value, scheme_designator=scheme, meaning=meaning)


def segment_description(hd, number: int, organ: Organ, color: Sequence[int]):
    """One SegmentSequence item: the organ's name, SNOMED codes, laterality, colour and algorithm.

    The codes are the vocabulary's, as in the ``.seg.nrrd`` terminology: category (default
    Anatomical Structure), type, the anatomic region where one is given (a kidney cyst's kidney),
    and laterality as a modifier of the region if there is one, else of the type. Free-text prompts
    outside the vocabulary have no SNOMED type; they are coded as the generic "Anatomical
    Structure" and keep their text as label and description, so nothing is made up.
    """
    from pydicom.sr.codedict import codes

    generic = _code(hd, ANATOMICAL_STRUCTURE)
    category = _code(hd, ("SCT", *organ.snomed_category)) if organ.snomed_category else generic
    kind = _code(hd, ("SCT", *organ.snomed_type)) if organ.snomed_type else generic
    region = _code(hd, ("SCT", *organ.snomed_region)) if organ.snomed_region else None
    description = hd.seg.SegmentDescription(
        segment_number=number,
        segment_label=organ.name[:_LO_MAX],
        segmented_property_category=category,
        segmented_property_type=kind,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=hd.AlgorithmIdentificationSequence(
            name=ALGORITHM_NAME, family=codes.cid7162.ArtificialIntelligence, version=__version__
        ),
        anatomic_regions=[region] if region is not None else None,
        display_color=hd.color.CIELabColor.from_rgb(*(int(c) for c in color)),
    )
    description.SegmentDescription = organ.prompt[:_ST_MAX]  # the model's prompt, as .seg.nrrd's tag keeps it
    if organ.snomed_type and organ.lateral:  # "left kidney" and "right kidney" must not both read "Kidney"
        side = [_code(hd, LATERALITY_CODES[organ.lateral])]
        if region is not None:
            description.AnatomicRegionSequence[0].AnatomicRegionModifierSequence = side
        else:
            description.SegmentedPropertyTypeCodeSequence[0].SegmentedPropertyTypeModifierCodeSequence = side
    return description


# --------------------------------------------------------------------------------------------------
# The SEG


def build_dicom_seg(
    masks: np.ndarray,
    organs: Sequence[Organ],
    colors: Sequence[Sequence[int]],
    geometry: Geometry,
    source: str | Path | None,
):
    """A BINARY ``highdicom.seg.Segmentation`` with one segment per organ, masks (K, k, j, i).

    Overlaps are kept (each segment has its own frames). Empty frames are omitted to keep the file
    small; an organ found nowhere still gets its segment (with no frames), so segment numbers
    always equal prompt order + 1. When nothing at all was found every frame is kept: a SEG needs
    at least one, and saying so ourselves spares the user highdicom's warning.
    """
    hd = import_highdicom()
    datasets = source_series(source)
    check_alignment(datasets, geometry, source)
    pixels = np.moveaxis(np.asarray(masks, dtype=bool), 0, -1)  # (k, j, i, K): frame k is source image k
    first = datasets[0]
    try:
        return hd.seg.Segmentation(
            source_images=datasets,
            pixel_array=pixels,
            segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
            segment_descriptions=[segment_description(hd, i + 1, o, c) for i, (o, c) in enumerate(zip(organs, colors))],
            series_instance_uid=hd.UID(),
            series_number=_series_number(first),
            sop_instance_uid=hd.UID(),
            instance_number=1,
            manufacturer=ALGORITHM_NAME,
            manufacturer_model_name=ALGORITHM_NAME,
            software_versions=__version__,
            device_serial_number="0",
            series_description=f"{ALGORITHM_NAME} segmentation",
            content_label="TGATED",
            content_description="Text-prompted organ segmentation",
            omit_empty_frames=bool(pixels.any()),
        )
    except ValueError as exc:  # highdicom's verdict on the source headers (missing type 1 attributes, ...)
        raise OutputError(
            f"cannot build a DICOM-SEG on the series in '{source}' ({str(exc).strip()[:300]})",
            f"The series headers are incomplete for DICOM-SEG; {_OTHER_FORMATS}.",
        ) from None


def _series_number(source) -> int:
    """Source series number + 1000: never the source's own number, and listed after it."""
    try:
        return int(source.get("SeriesNumber") or 0) % 1_000_000 + 1000
    except (TypeError, ValueError):
        return 1000
