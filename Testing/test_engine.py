"""The streaming engine equals the naive per-(slice, prompt) forward, encoding each slice once."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from TGatedSegmentLib.errors import Cancelled
from TGatedSegmentLib.inference.engine import StreamingEngine, window_indices
from TGatedSegmentLib.inference.reference import naive_logits
from TGatedSegmentLib.model.checkpoint import load_model
from TGatedSegmentLib.preprocessing.slices import SliceCodec
from TGatedSegmentLib.progress import CancelToken, Progress

PROMPTS = ["liver", "left kidney", "spleen"]


@pytest.fixture(scope="module")
def tiny64(tiny_checkpoint):
    loaded = load_model(tiny_checkpoint)
    loaded.model.double()
    return loaded


def _engine_logits(loaded, volume, batch_size, dtype=torch.float64):
    codec = SliceCodec(loaded.config.preprocessing, dtype=dtype)
    engine = StreamingEngine(loaded.model, loaded.tokenizer, codec, batch_size=batch_size)
    text = engine.text_embeddings(PROMPTS)
    out = [logits for _, logits in engine.run(lambda idx: volume[idx], volume.shape[0], text)]
    return torch.cat(out), engine, codec


def test_window_indices_replicate_edges():
    assert window_indices(0, 1, 5) == [0, 0, 0, 0, 0]
    assert window_indices(0, 2, 5) == [0, 0, 0, 1, 1]
    assert window_indices(4, 6, 5) == [2, 3, 4, 5, 5]
    assert window_indices(3, 10, 1) == [3]


@pytest.mark.parametrize("depth,batch_size", [(1, 1), (2, 4), (5, 2), (7, 3)])
def test_engine_probabilities_equal_naive_forward(tiny64, depth, batch_size):
    rng = np.random.default_rng(depth)
    volume = rng.random((depth, 37, 45), dtype=np.float32)
    engine_logits, engine, codec = _engine_logits(tiny64, volume, batch_size)
    naive = naive_logits(tiny64.model, tiny64.tokenizer, codec, volume, PROMPTS)
    assert engine_logits.shape == naive.shape == (depth, len(PROMPTS), 352, 352)
    assert (torch.sigmoid(engine_logits) - torch.sigmoid(naive)).abs().max() < 1e-5
    assert engine.stats.slices_encoded == depth  # each slice through the vision encoder exactly once
    assert engine.stats.windows_fused == depth  # the adapter once per centre slice, not per prompt
    assert engine.stats.decoder_items == depth * len(PROMPTS)


def test_float32_engine_matches_naive_to_round_off(tiny_checkpoint):
    loaded = load_model(tiny_checkpoint)
    volume = np.random.default_rng(0).random((6, 30, 30), dtype=np.float32)
    got, _, codec = _engine_logits(loaded, volume, batch_size=4, dtype=torch.float32)
    expected = naive_logits(loaded.model, loaded.tokenizer, codec, volume, PROMPTS)
    assert (got - expected).abs().max() <= 1e-5 * expected.abs().max()


def test_cache_holds_the_window_not_the_volume(tiny64):
    volume = np.random.default_rng(1).random((40, 20, 20), dtype=np.float32)
    _, engine, _ = _engine_logits(tiny64, volume, batch_size=2)
    assert engine.stats.slices_encoded == 40
    assert engine.stats.peak_cached_slices <= 2 * 2 + 5 - 1


def test_baseline_engine_equals_naive(tiny_baseline_checkpoint):
    loaded = load_model(tiny_baseline_checkpoint)
    loaded.model.double()
    volume = np.random.default_rng(2).random((3, 25, 25), dtype=np.float32)
    got, engine, codec = _engine_logits(loaded, volume, batch_size=2)
    expected = naive_logits(loaded.model, loaded.tokenizer, codec, volume, PROMPTS)
    assert (torch.sigmoid(got) - torch.sigmoid(expected)).abs().max() < 1e-5
    assert engine.stats.slices_encoded == 3


def test_text_is_encoded_once_per_prompt_across_volumes(tiny64):
    codec = SliceCodec(tiny64.config.preprocessing, dtype=torch.float64)
    engine = StreamingEngine(tiny64.model, tiny64.tokenizer, codec)
    engine.text_embeddings(PROMPTS)
    engine.text_embeddings(list(reversed(PROMPTS)) + ["pancreas"])
    assert engine.stats.prompts_encoded == 4


def test_progress_and_cancel(tiny64):
    events = []
    cancel = CancelToken()
    codec = SliceCodec(tiny64.config.preprocessing, dtype=torch.float64)
    engine = StreamingEngine(tiny64.model, tiny64.tokenizer, codec, batch_size=2)
    text = engine.text_embeddings(PROMPTS[:1])
    volume = np.zeros((8, 16, 16), dtype=np.float32)
    runner = engine.run(lambda idx: volume[idx], 8, text, Progress(events.append), cancel)
    next(runner)
    cancel.cancel()
    with pytest.raises(Cancelled):
        next(runner)
    assert events == [{"event": "progress", "stage": "segment", "done": 2, "total": 8}]
    assert engine.stats.slices_encoded < 8
