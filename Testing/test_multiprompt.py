"""Multi-prompt slice batches ("slices" batching): the same data, the same loss as one prompt per sample.

A chunk encodes each slice once and decodes every centre for every organ; these tests check that
this is an implementation detail: its targets and inputs are the paper pipeline's, its logits are
those of one forward per (window, prompt) pair, and its loss is the same function of those items.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from helpers.datasets import make_dataset

from TGatedSegmentLib.data.dataset import load_dataset
from TGatedSegmentLib.model.checkpoint import build_model
from TGatedSegmentLib.model.configuration import PreprocessConfig, RefineConfig
from TGatedSegmentLib.model.tokenizer import tokenize
from TGatedSegmentLib.training import cache
from TGatedSegmentLib.training.chunks import (
    Chunk,
    ChunkAugmentation,
    ChunkDataset,
    ChunkSampler,
    collate_chunks,
    slice_weights,
)
from TGatedSegmentLib.training.losses import batch_dice_loss, exclusive_loss, segmentation_loss
from TGatedSegmentLib.training.sampling import Sample
from TGatedSegmentLib.training.windows import WindowDataset

PP = PreprocessConfig(image_size=32)


@pytest.fixture(scope="module")
def volumes(tmp_path_factory):
    root = tmp_path_factory.mktemp("mp")
    data = load_dataset(make_dataset(root / "ds", cases=2))
    return data, cache.cache_cases(data.cases, PP, root / "cache")


def _datasets(volumes, context):
    data, cached = volumes
    ids = sorted(data.organs)
    prompts = {label: n for n, label in enumerate(ids)}
    chunks = ChunkDataset(cached, PP, context, [ids, ids], prompts)
    pairs = WindowDataset(cached, PP, context, prompts)
    return ids, chunks, pairs


def test_a_chunk_holds_the_paper_pipelines_windows_and_targets(volumes):
    ids, chunks, pairs = _datasets(volumes, 5)
    item = chunks[Chunk(1, 0, 4)]  # centres 0..3: windows reach slices 0..5, edges replicated
    assert item["pixels"].shape[0] == 6 and item["targets"].shape == (4, len(ids), 32, 32)
    for b, z in enumerate(range(4)):
        for k, label in enumerate(ids):
            sample = pairs[Sample(1, z, label, True)]
            assert torch.equal(item["pixels"][item["windows"][b]], sample["pixels"])
            assert torch.equal(item["targets"][b, k], sample["target"])
            assert item["prompts"][k] == sample["prompt"]


@pytest.mark.parametrize("temporal,refine", [(True, True), (True, False), (False, True), (True, "window")])
def test_multi_prompt_loss_equals_the_single_prompt_batches_of_the_same_items(volumes, temporal, refine):
    torch.manual_seed(0)
    loaded = build_model(
        "builtin:tiny",
        tokenizer="compact",
        temporal=temporal,
        preprocessing=PP,
        refine=RefineConfig(4, window=5 if refine == "window" else 1) if refine else None,
    )
    model = loaded.model.eval()
    with torch.no_grad():  # a model whose every part matters (fresh residual branches add zero)
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    ids, chunks, _ = _datasets(volumes, model.context_size)
    batch = collate_chunks([chunks[Chunk(0, 2, 5)], chunks[Chunk(1, 7, 9)]])
    prompt_ids, prompt_mask = tokenize(loaded.tokenizer, ["liver", "spleen", "left kidney"])  # rows of ids 1, 2, 3
    assert ids == [1, 2, 3] and batch["items"].shape == (5 * 3, 2)

    with torch.no_grad():
        multi = model(batch["pixels"], prompt_ids, prompt_mask, windows=batch["windows"], items=batch["items"])
        single = torch.cat(
            [
                model(batch["pixels"][batch["windows"][b]].unsqueeze(0), prompt_ids[k : k + 1], prompt_mask[k : k + 1])
                for b, k in batch["items"].tolist()
            ]
        )
    assert torch.allclose(multi, single, atol=1e-4, rtol=1e-4)
    for dice in ("batch", "sample"):
        a = segmentation_loss(multi, batch["targets"], model.gate_penalty(), 1e-3, dice, batch["items"][:, 1])[0]
        b = segmentation_loss(single, batch["targets"], model.gate_penalty(), 1e-3, dice, batch["items"][:, 1])[0]
        assert torch.allclose(a, b, atol=1e-5)


def test_batch_dice_pools_each_prompt_and_ignores_prompts_without_target():
    logits = torch.full((4, 2, 2), 10.0)
    target = torch.zeros(4, 2, 2)
    target[0, 0] = 1.0  # prompt 5: 2 of its 8 predicted pixels are true
    groups = torch.tensor([5, 5, 9, 9])  # prompt 9 has no target pixel: BCE alone teaches it
    expected = 1 - (2 * 2 + 1) / (8 + 2 + 1)
    assert batch_dice_loss(logits, target, groups).item() == pytest.approx(expected, rel=1e-4)
    order = torch.tensor([2, 0, 3, 1])  # a set of items: their order does not matter
    assert batch_dice_loss(logits[order], target[order], groups[order]).item() == pytest.approx(expected, rel=1e-4)
    assert batch_dice_loss(logits, torch.zeros_like(target), groups).item() == 0.0


def test_exclusive_loss_is_one_softmax_per_slice_pixel_over_its_prompts_and_a_zero_background():
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(5, 4, 4, generator=generator) * 3  # items: slice 7 x 3 prompts, slice 2 x 2 prompts
    target = torch.zeros(5, 4, 4)
    target[0, :2] = 1
    target[1, 2:] = 0.6  # a soft edge: the background takes the remaining 0.4
    target[4, :, 1] = 1
    slices = torch.tensor([7, 7, 7, 2, 2])
    expected = 0.0
    for rows in ([0, 1, 2], [3, 4]):
        z = torch.cat([torch.zeros(1, 4, 4), logits[rows]])
        t = target[rows]
        q = torch.cat([(1 - t.sum(0, keepdim=True)).clamp_min(0), t])
        expected += -(q * torch.log_softmax(z, 0)).sum()
    assert float(exclusive_loss(logits, target, slices)) == pytest.approx(float(expected) / 32, rel=1e-5)
    # the items' order does not matter, and huge logits stay finite
    order = torch.tensor([4, 2, 0, 3, 1])
    assert float(exclusive_loss(logits[order], target[order], slices[order])) == pytest.approx(
        float(expected) / 32, rel=1e-5
    )
    assert torch.isfinite(exclusive_loss(logits * 1e3, target, slices))
    # a confident, correct, exclusive prediction costs almost nothing
    right = torch.where(target > 0.5, 20.0, -20.0)
    assert float(exclusive_loss(right, (target > 0.5).float(), slices)) < 1e-6


def test_slice_weights_favour_organ_boundaries_and_hard_slices():
    presence = np.zeros((12, 3), bool)
    presence[4:8, 1] = True  # organ 1 in slices 4..7
    w = slice_weights(presence, [1, 2], boundary_margin=2, boundary_weight=3.0, hints=[10], hint_weight=5.0)
    assert w.tolist() == [1, 1, 4, 4, 1, 1, 1, 1, 4, 4, 6, 1]


def test_chunk_sampler_is_reproducible_and_places_chunks_inside_the_volume():
    weights = [np.ones(10), np.r_[np.zeros(15), np.ones(5)]]
    sampler = ChunkSampler(
        [10, 20],
        weights,
        chunk_slices=4,
        batch_size=2,
        epoch_size=50,
        seed=3,
        augmentation=ChunkAugmentation(max_rotation=5.0, max_zoom=0.1, intensity=0.2),
    )
    chunks = sampler.epoch_items(0)
    assert chunks == ChunkSampler(
        [10, 20], weights, 4, 2, 50, seed=3, augmentation=ChunkAugmentation(5.0, 0.1, 0.2)
    ).epoch_items(0)
    assert len(chunks) == 50 and sampler.steps_per_epoch == 25
    for c in chunks:
        depth = (10, 20)[c.volume]
        assert 0 <= c.start < c.stop <= depth and c.stop - c.start == 4
        if c.volume == 1:
            assert c.stop > 15  # the anchor (a slice >= 15) lies inside the chunk
        assert abs(c.angle) <= 5 and 0.9 <= c.zoom <= 1.1 and 0.8 <= c.contrast <= 1.2


def test_exclusive_term_is_for_slice_batches_only():
    """The cpu recipe's exclusive term lapses with --batching pairs; asked for explicitly, it is an error."""
    from TGatedSegmentLib.errors import InputError
    from TGatedSegmentLib.training.config import TrainConfig

    assert TrainConfig(data="d", output="o", recipe="cpu").exclusive == 1.0
    assert TrainConfig(data="d", output="o", recipe="cpu", batching="pairs").exclusive == 0.0
    with pytest.raises(InputError, match="--exclusive needs multi-prompt slice batches"):
        TrainConfig(data="d", output="o", recipe="cpu", batching="pairs", exclusive=0.5)


def test_random_contrast_changes_the_pixels_not_the_masks_and_keeps_the_other_draws(volumes):
    """--random-contrast: the sampler draws its seeds after everything else (a run without it keeps its
    exact chunks), and the dataset remaps a chunk's pixels with them while its masks stay."""
    data, cached = volumes
    ids = sorted(data.organs)
    prompts = {label: n for n, label in enumerate(ids)}
    weights = [np.ones(v.depth) for v in cached]
    depths = [v.depth for v in cached]

    def epoch(augmentation):
        return ChunkSampler(depths, weights, 4, 1, 20, seed=3, augmentation=augmentation).epoch_items(0)

    plain, remapped = epoch(ChunkAugmentation(5.0, 0.1, 0.2)), epoch(ChunkAugmentation(5.0, 0.1, 0.2, 0.0, 1.0))
    assert [replace(c, contrast_seed=0) for c in remapped] == plain
    assert len({c.contrast_seed for c in remapped}) == len(remapped)
    chunk = Chunk(0, 2, 6, contrast_seed=remapped[0].contrast_seed)
    before = ChunkDataset(cached, PP, 5, [ids, ids], prompts)[chunk]
    after = ChunkDataset(cached, PP, 5, [ids, ids], prompts, augmentation=ChunkAugmentation(random_contrast=1.0))[chunk]
    assert not torch.allclose(before["pixels"], after["pixels"])
    assert torch.equal(before["targets"], after["targets"]) and torch.equal(before["windows"], after["windows"])
