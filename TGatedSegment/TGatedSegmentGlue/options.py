"""The run options a user sets (device, modality, threshold, batch size, uncertainty samples), checked
in the GUI process before anything starts, so that a typo costs nothing.

Device names are the backend's (``tgated segment --device``): auto, cpu, cuda, cuda:N, mps. Whether
the device is *there* only the backend process can tell (:mod:`.devices`).
"""

from __future__ import annotations

import re

from TGatedSegmentLib.errors import InputError
from TGatedSegmentLib.modality import check_modality, modality_hint

from .i18n import tr as _

DEVICE_PATTERN = re.compile(r"^(auto|cpu|cuda|cuda:\d+|mps)$")


def checkedDevice(device: str | None) -> str:
    name = (device or "auto").strip().lower()
    if not DEVICE_PATTERN.match(name):
        raise ValueError(
            _("Unknown device '{device}': use auto, cpu, cuda, cuda:N (the N-th GPU) or mps.").format(device=device)
        )
    return name


def checkedModality(modality: str | None) -> str:
    """The backend's rule (:func:`TGatedSegmentLib.modality.check_modality`), in the panel's words."""
    try:
        return check_modality(modality)
    except InputError:
        raise ValueError(_("Unknown modality '{modality}': use auto, ct or mr.").format(modality=modality)) from None


def checkedThreshold(threshold) -> float | None:
    """None (the checkpoint's own) or a probability strictly between 0 and 1."""
    if threshold is None:
        return None
    if not 0.0 < float(threshold) < 1.0:
        raise ValueError(_("Threshold {threshold} is outside (0, 1).").format(threshold=threshold))
    return float(threshold)


def checkedBatchSize(batchSize) -> int | None:
    if batchSize is None:
        return None
    if int(batchSize) < 1:
        raise ValueError(_("Batch size {size} must be at least 1.").format(size=batchSize))
    return int(batchSize)


def checkedUncertainty(samples) -> int:
    """0 (no uncertainty map) or at least 2 stochastic passes."""
    samples = int(samples or 0)
    if samples and samples < 2:
        raise ValueError(_("An uncertainty map needs at least 2 samples, got {samples}.").format(samples=samples))
    return samples


def modalityFromDicom(value: str | None) -> str | None:
    """'ct' or 'mr' from a DICOM Modality value (Slicer keeps it as the 'DICOM.Modality' attribute)."""
    hint = modality_hint(value)
    return None if hint == "auto" else hint
