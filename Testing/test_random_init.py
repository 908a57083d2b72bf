"""A model built from random weights: smooth position embeddings and PyTorch's decoder init, drawn
without random numbers; a pretrained base keeps its own weights."""

from __future__ import annotations

import pytest
import torch

from TGatedSegmentLib.model.checkpoint import build_model
from TGatedSegmentLib.model.random_init import POSITION_AMPLITUDE, init_vision_positions, sincos_2d


def test_the_code_is_one_direction_per_row_and_per_column():
    code = sincos_2d(4, 16).view(4, 4, 16)  # (row, column, width)
    rows, cols = code[..., :8], code[..., 8:]
    assert torch.equal(rows[:, 0], rows[:, 3])  # the row half ignores the column
    assert torch.equal(cols[0], cols[3])  # and the column half the row
    assert not torch.equal(cols[:, 0], cols[:, 1])
    # smooth: neighbouring columns are closer than distant ones, in every row
    near = (cols[:, 1] - cols[:, 0]).norm(dim=-1)
    far = (cols[:, 3] - cols[:, 0]).norm(dim=-1)
    assert bool((near < far).all())
    assert code.abs().max() <= 1.0
    with pytest.raises(ValueError, match="divisible by 4"):
        sincos_2d(4, 6)


def test_a_random_base_starts_from_the_sincos_code_and_draws_nothing_for_it():
    loaded = build_model("builtin:cpu", "compact", seed=0)
    weight = loaded.model.base_model.clip.vision_model.embeddings.position_embedding.weight
    assert torch.equal(weight[0], torch.zeros_like(weight[0]))  # the class token's position
    torch.testing.assert_close(weight[1:], POSITION_AMPLITUDE * sincos_2d(16, 64))
    assert weight.requires_grad  # still trained

    state = torch.get_rng_state()
    init_vision_positions(loaded.model.base_model.clip.vision_model.embeddings)
    assert torch.equal(torch.get_rng_state(), state)  # every other weight of a seed is unchanged


def test_a_pretrained_base_keeps_its_position_embeddings(tmp_path):
    from transformers import CLIPSegForImageSegmentation

    from TGatedSegmentLib.model.architectures import builtin_config

    torch.manual_seed(3)
    stock = CLIPSegForImageSegmentation(builtin_config("tiny"))
    stock.save_pretrained(str(tmp_path / "clipseg"))
    expected = stock.clip.vision_model.embeddings.position_embedding.weight.detach().clone()
    loaded = build_model(tmp_path / "clipseg", "compact", seed=0)
    torch.testing.assert_close(loaded.model.base_model.clip.vision_model.embeddings.position_embedding.weight, expected)
