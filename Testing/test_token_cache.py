"""--token-cache: training a frozen-encoder model from the encoder's cached output (tiny random models)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from helpers.datasets import make_dataset
from safetensors.torch import load_file

from TGatedSegmentLib.errors import InputError
from TGatedSegmentLib.training import TrainConfig, train

FAST = dict(
    recipe="cpu",
    base="builtin:tiny",
    image_size=32,
    epochs=1,
    steps=4,
    batch_size=4,
    chunk_slices=4,
    max_rotation=0.0,
    max_zoom=0.0,
    intensity=0.0,
    finetune="decoder",
    device="cpu",
    num_workers=0,
    save_every_minutes=None,
    warmup_steps=1,
)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("tok") / "ds", cases=1, depth=10, size=24)


def _weights(run: Path) -> dict:
    return load_file(str(run / "last" / "model.safetensors"))


def test_training_from_cached_tokens_matches_encoding_every_step(data, tmp_path):
    cache = tmp_path / "cache"
    plain = train(TrainConfig(data=data, output=tmp_path / "plain", cache_dir=cache, **FAST))
    cached = train(TrainConfig(data=data, output=tmp_path / "cached", cache_dir=cache, token_cache=True, **FAST))
    entries = list(cache.rglob("tokens.npy"))
    assert len(entries) == 1
    tokens = np.load(entries[0], mmap_mode="r")
    assert tokens.dtype == np.float16 and tokens.shape[0] == 10 and tokens.shape[1] == 3  # (Z, L, T, C)
    a, b = _weights(plain), _weights(cached)
    # the same steps on float16-rounded tokens: the same weights up to that rounding; the encoder untouched.
    # AdamW moves a weight whose gradient is about 0 by up to its learning rate a step, whichever the sign,
    # so a rare element may go the other way (1 of 2048 in one decoder layer with centred prompts, 3e-3):
    # all but 0.1 % of the weights within 2e-3, none further than that sign flip can take it
    steps, lr = FAST["steps"], max(TrainConfig(data=data, output=tmp_path / "x", **FAST).lr_decoder, 1e-12)
    diffs = torch.cat([(a[k].float() - b[k].float()).abs().flatten() for k in a])
    assert (diffs > 2e-3).float().mean() <= 1e-3, int((diffs > 2e-3).sum())
    assert diffs.max() <= 2 * lr * steps, float(diffs.max())
    assert all(torch.equal(a[k], b[k]) for k in a if k.startswith("base_model.clip.vision_model."))
    # a second run reuses the entry (built once)
    stamp = entries[0].stat().st_mtime_ns
    train(TrainConfig(data=data, output=tmp_path / "again", cache_dir=cache, token_cache=True, **FAST))
    assert entries[0].stat().st_mtime_ns == stamp


@pytest.mark.parametrize(
    "change,message",
    [
        (dict(finetune="full"), "needs a frozen vision encoder"),
        (dict(max_rotation=5.0), "Add --max-rotation 0"),
        (dict(batching="pairs"), "works with multi-prompt slice batches"),
    ],
)
def test_token_cache_refuses_what_would_make_its_tokens_stale(tmp_path, change, message):
    with pytest.raises(InputError) as info:
        TrainConfig(data=tmp_path, output=tmp_path / "o", token_cache=True, **{**FAST, **change})
    assert message in str(info.value) + str(getattr(info.value, "hint", ""))
