"""``python -m TGatedSegmentLib ...`` (and ``PythonSlicer -m TGatedSegmentLib ...`` from Slicer)."""

import sys

from .cli.main import main

sys.exit(main())
