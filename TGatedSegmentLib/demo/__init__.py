"""``tgated demo``: the whole job on a fresh, offline machine, in under five CPU minutes.

>>> from TGatedSegmentLib.demo import run_demo
>>> result = run_demo("demo_output")          # quick=True: the test suite's seconds-long version
>>> result.dice                                  # per-organ Dice on a held-out phantom

What it does:

1. generates a small training set of synthetic abdominal CT phantoms (:mod:`TGatedSegmentLib.phantom`,
   written as an nnU-Net dataset, one case held out for validation);
2. trains a small T-Gated CLIPSeg from random weights with the ``cpu`` training recipe
   (``builtin:cpu``, the offline "compact" tokenizer, multi-prompt slice batches, the refinement
   head, the residual adapter), or fine-tunes ``base`` (a checkpoint / CLIPSeg folder or hub id);
3. segments a phantom that was in neither set and scores it against its labels;
4. writes ``OUTPUT/`` (see :data:`OUTPUT_FILES`) and returns the per-organ metrics.

The output folder is built under a temporary name next to ``OUTPUT`` and renamed into place at the
very end (an existing one is replaced only with ``overwrite``), so Ctrl-C, a kill or an error at
any moment leave either the previous folder or nothing, never half of one.
"""

from __future__ import annotations

from .checks import check_base, check_output
from .held_out import OUTPUT_FILES, figure_slices
from .recipe import DEMO_RECIPE, QUICK_RECIPE, PhantomRecipe
from .run import DemoResult, run_demo

__all__ = [
    "DEMO_RECIPE",
    "OUTPUT_FILES",
    "QUICK_RECIPE",
    "DemoResult",
    "PhantomRecipe",
    "check_base",
    "check_output",
    "figure_slices",
    "run_demo",
]
