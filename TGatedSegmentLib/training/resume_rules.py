"""What a resume may change: the saved run's settings against the current ones."""

from __future__ import annotations

from dataclasses import fields
from typing import TYPE_CHECKING

from .options import defining_the_run, predating
from .recipes import RECIPES

if TYPE_CHECKING:
    from .config import TrainConfig


def structural_differences(saved: dict, current: TrainConfig) -> list[str]:
    """Settings a resume may not change (they define the run), as 'name: saved -> now'.

    A setting the saved run predates counts as its default (e.g. ``finetune`` of runs made before
    it existed: ``decoder`` when they froze the encoders, else ``full``).
    """
    config_class = type(current)
    # runs saved before recipes existed were the paper's
    defaults = {
        **{f.name: f.default for f in fields(config_class)},
        **RECIPES["paper"],
        "recipe": "paper",
        **predating(config_class),
    }
    saved = dict(saved)
    saved.setdefault("finetune", "decoder" if saved.get("freeze_encoders") else "full")
    now = current.to_dict()
    return [
        f"{k}: {saved.get(k, defaults.get(k))!r} -> {now.get(k)!r}"
        for k in defining_the_run(config_class)
        if saved.get(k, defaults.get(k)) != now.get(k)
    ]
