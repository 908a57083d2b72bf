"""Training test helpers: settings for a run that takes seconds, a cancel token that fires after n polls,
weight comparisons."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from safetensors.torch import load_file

from TGatedSegmentLib.progress import CancelToken

if TYPE_CHECKING:
    from TGatedSegmentLib.data.dataset import Dataset

#: A paper-recipe run on ``builtin:tiny`` at 32 px: seconds on a CPU, every training code path.
FAST = dict(
    recipe="paper",
    base="builtin:tiny",
    tokenizer="compact",
    image_size=32,
    epochs=2,
    batch_size=4,
    samples_per_epoch=12,
    lr_encoder=1e-3,
    lr_decoder=1e-3,
    lr_adapter=1e-3,
    device="cpu",
    num_workers=0,
    save_every_minutes=None,
)

#: The same model and size as ``tgated train`` arguments.
TINY_CLI_ARGS = ["--recipe", "paper", "--base", "builtin:tiny", "--tokenizer", "compact", "--image-size", "32"]


def fast_settings(*, without: tuple[str, ...] = (), **changes) -> dict:
    """:data:`FAST` with ``changes``, less the keys in ``without`` (a test that brings its own base)."""
    return {**{k: v for k, v in FAST.items() if k not in without}, **changes}


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


@dataclass(frozen=True)
class PhantomRun:
    """A tiny model trained on one synthetic labelled volume: its dataset, step-0 checkpoint and run."""

    dataset: Dataset
    initial: Path
    run: Path


def train_tiny_on_phantom(folder: Path, epochs: int = 4) -> PhantomRun:
    """``builtin:tiny`` at 64 px, 100 steps an epoch at learning rates for random weights (seconds)."""
    from TGatedSegmentLib.data.dataset import load_dataset
    from TGatedSegmentLib.model.checkpoint import init_checkpoint
    from TGatedSegmentLib.model.configuration import PreprocessConfig
    from TGatedSegmentLib.training import TrainConfig, train

    from .datasets import make_dataset

    dataset = load_dataset(make_dataset(folder / "ds", cases=1))
    organs = [dataset.organs[i] for i in sorted(dataset.organs)]
    initial = init_checkpoint(
        "builtin:tiny",
        folder / "initial",
        tokenizer="compact",
        vocabulary=organs,
        seed=0,
        preprocessing=PreprocessConfig(image_size=64),
    )
    config = TrainConfig(
        data=dataset.root,
        output=folder / "run",
        base=str(initial),
        epochs=epochs,
        samples_per_epoch=800,
        batch_size=8,
        lr_encoder=1e-3,
        lr_decoder=3e-3,
        lr_adapter=3e-3,
        device="cpu",
        num_workers=0,
    )
    return PhantomRun(dataset, initial, train(config))
