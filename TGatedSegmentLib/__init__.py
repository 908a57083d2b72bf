"""TGatedSegment backend: text-prompted volumetric segmentation with CLIPSeg + the T-Gated adapter.

No Slicer imports anywhere in this package; heavy libraries (torch, transformers) load lazily so
that ``import TGatedSegmentLib`` stays cheap for the Slicer module and the CLI's ``--help``.
"""

__version__ = "0.1.0"
