"""Training test helpers: a cancel token that fires after n polls, weight comparisons."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file

from TGatedSegmentLib.progress import CancelToken


def weights(folder: Path) -> dict:
    """The tensors of a checkpoint folder's model.safetensors."""
    return load_file(str(Path(folder) / "model.safetensors"))


def assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    different = [k for k in wa if not torch.equal(wa[k], wb[k])]
    assert not different, f"{len(different)} tensors differ, e.g. {different[:3]}"


class CancelAfterPolls(CancelToken):
    """Cancels at poll n + 1 (the trainer polls before every step, after each epoch and per cached case)."""

    def __init__(self, polls: int):
        super().__init__()
        self.polls = polls

    @property
    def cancelled(self) -> bool:
        self.polls -= 1
        if self.polls < 0:
            self.cancel()
        return super().cancelled
