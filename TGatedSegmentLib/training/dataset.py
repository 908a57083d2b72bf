"""The training side of a dataset: holding out validation cases (``--val split:N``).

Reading a dataset folder (layouts, label tables, header and label-value checks) is the data
layer's job, :mod:`TGatedSegmentLib.data`, shared with evaluation; the names that used to live
here still import from this module, with a DeprecationWarning.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from ..compat import moved_names
from ..data.dataset import Dataset
from ..errors import InputError


def split_dataset(dataset: Dataset, n_val: int, seed: int = 0) -> tuple[Dataset, Dataset]:
    """Hold out ``n_val`` cases, chosen by ``seed`` from the sorted case ids (same split on every machine)."""
    n = len(dataset.cases)
    if isinstance(n_val, bool) or not isinstance(n_val, (int, np.integer)) or not 0 <= n_val < n:
        raise InputError(
            f"cannot hold out {n_val!r} validation case(s) from a dataset of {n}",
            f"Use between 0 and {max(n - 1, 0)} validation cases so that at least one is left to train on.",
        )
    ordered = sorted(dataset.cases, key=lambda case: case.case_id)
    order = np.random.default_rng(int(seed)).permutation(n)
    val_ids = {ordered[i].case_id for i in order[: int(n_val)]}
    train = [case for case in ordered if case.case_id not in val_ids]
    val = [case for case in ordered if case.case_id in val_ids]
    return replace(dataset, cases=train), replace(dataset, cases=val)


__getattr__ = moved_names(
    __name__,
    {
        **dict.fromkeys(("Case", "IMAGE_ENDINGS", "LAYOUTS", "load_dataset"), "TGatedSegmentLib.data.dataset"),
        **dict.fromkeys(("parse_label_map", "organs_for"), "TGatedSegmentLib.data.labels"),
        **dict.fromkeys(
            ("check_case_geometry", "validate_label_values", "SPACING_RTOL", "ORIGIN_ATOL_MM", "DIRECTION_ATOL"),
            "TGatedSegmentLib.data.checks",
        ),
    },
)
