"""Reading a Slicer ``.seg.nrrd`` as its shared layers, in about the memory the layers take.

A 13-organ result on a 512 x 512 x 300 CT is one uint8 layer of 79 MB (non-overlapping segments
share a layer; see :func:`TGatedSegmentLib.io.writers.write_segmentation`). Expanding it into one
mask per segment costs 13 times that, and even slicerio's reader peaks at about 5 times the
voxels (decompressed bytes, then copies while reshaping). Here the header and the segment table
come from slicerio (``skip_voxels``) and the gzip payload is inflated straight into the final
array, so the peak is the layers themselves plus a few MB of buffers. Files this fast path does
not cover (other encodings or voxel types, detached data) go through slicerio as before.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InputError
from .nrrd_text import segment_names
from .volume import Geometry

_CHUNK = 1 << 18  # compressed bytes read at a time
_MAX_OUT = 1 << 18  # decompressed bytes produced at a time


@dataclass(frozen=True)
class SegmentLayers:
    """The layers (L separate uint8 (k, j, i) arrays) and each segment's (name, layer, label value).

    Separate arrays, so that a consumer (the Slicer module) can let go of each layer once it has
    handed it on; :meth:`mask` expands one segment when a caller needs it alone.
    """

    layers: list[np.ndarray]
    segments: list[tuple[str, int, int]]
    geometry: Geometry

    def mask(self, index: int) -> np.ndarray:
        _, layer, label = self.segments[index]
        return self.layers[layer] == label


def read_segmentation_layers(path: str | Path) -> SegmentLayers:
    """The layers of a ``.seg.nrrd`` written by Slicer or :func:`write_segmentation`, unexpanded."""
    import slicerio

    path = Path(path)
    if not path.exists():
        raise InputError(f"'{path}' does not exist", "Check the path of the segmentation file.")
    try:
        table = slicerio.read_segmentation(str(path), skip_voxels=True)
        voxels = _inflate(path)
        if voxels is None:
            voxels = slicerio.read_segmentation(str(path))["voxels"].transpose()  # (i, j, k[, L]) -> ([L,] k, j, i)
        geometry = Geometry.from_ijk_to_lps(table["ijkToLPS"], voxels.shape[:3][::-1])
    except InputError:
        raise
    except Exception as exc:  # nrrd, slicerio, zlib and numpy raise a zoo of types for a bad file
        raise InputError(
            f"cannot read '{path}' as a Slicer segmentation ({str(exc).strip()[:200]})",
            "Check that it is a .seg.nrrd saved by 3D Slicer or TGatedSegment.",
        ) from None
    if voxels.ndim == 3:
        layers = [np.ascontiguousarray(voxels)]
    else:  # 4-D: the layer is the fastest axis in the file, so each layer is gathered into its own array
        layers = [np.ascontiguousarray(voxels[..., n]) for n in range(voxels.shape[-1])]
    del voxels
    names = segment_names(path, len(table["segments"]))  # UTF-8, which slicerio's reader drops
    segments = [
        (names[n] or str(s.get("name", s["id"])), int(s.get("layer", 0)), int(s.get("labelValue", 1)))
        for n, s in enumerate(table["segments"])
    ]
    return SegmentLayers(layers, segments, geometry)


def _inflate(path: Path) -> np.ndarray | None:
    """The voxels in file order as a C array ((k, j, i) or (k, j, i, L)), or None when not covered."""
    import nrrd

    with open(path, "rb") as handle:
        header = nrrd.read_header(handle)
        if (
            header.get("type") not in ("uint8", "unsigned char", "uchar")
            or "data file" in header
            or "datafile" in header
            or header.get("line skip")
            or header.get("byte skip")
        ):
            return None
        shape = tuple(int(n) for n in header["sizes"])[::-1]
        out = np.empty(shape, np.uint8)
        flat = out.reshape(-1)
        encoding = header.get("encoding")
        if encoding == "raw":
            count = handle.readinto(flat.data)
        elif encoding in ("gzip", "gz"):
            count = _gunzip_into(handle, flat)
        else:
            return None
    if count != flat.size:
        raise ValueError(f"the file holds {count} voxels, its header says {flat.size}")
    return out


def _gunzip_into(handle, flat: np.ndarray) -> int:
    inflater = zlib.decompressobj(zlib.MAX_WBITS | 32)  # gzip or zlib header
    position = 0
    while chunk := handle.read(_CHUNK):
        while chunk:
            data = inflater.decompress(chunk, _MAX_OUT)
            position = _put(flat, position, data)
            chunk = inflater.unconsumed_tail
        if inflater.eof:
            break
    return _put(flat, position, inflater.flush())


def _put(flat: np.ndarray, position: int, data: bytes) -> int:
    end = position + len(data)
    if end > flat.size:
        raise ValueError(f"the file holds more voxels than its header's {flat.size}")
    flat[position:end] = np.frombuffer(data, np.uint8)
    return end
