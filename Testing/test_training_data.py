"""Training data: the preprocessing cache, the paper's sampling (checked on counts) and augmentation."""

from __future__ import annotations

import os
from dataclasses import replace

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from helpers.datasets import make_dataset, phantom

from TGatedSegmentLib.data.dataset import load_dataset
from TGatedSegmentLib.errors import InputError
from TGatedSegmentLib.io.volume import read_image
from TGatedSegmentLib.model.configuration import REFERENCE_SLICE_LAYOUT, PreprocessConfig
from TGatedSegmentLib.preprocessing.slices import SliceCodec
from TGatedSegmentLib.preprocessing.volume import prepare_volume
from TGatedSegmentLib.training import augment, cache
from TGatedSegmentLib.training.sampling import Sample, SampleIndex, WindowSampler
from TGatedSegmentLib.training.windows import WindowDataset
from TGatedSegmentLib.vocabulary import ABDOMEN13, Organ

PP = PreprocessConfig(image_size=32)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return load_dataset(make_dataset(tmp_path_factory.mktemp("data") / "ds", cases=2))


# --------------------------------------------------------------------------- cache


def test_cache_is_the_inference_preprocessing_and_is_built_once(dataset, tmp_path, monkeypatch):
    case = dataset.cases[0]
    entry = cache.cached_volume(case, PP, tmp_path)
    prepared = prepare_volume(read_image(case.image), PP, "ct")
    native = sitk.GetArrayFromImage(read_image(case.label))
    labels = prepared.to_canonical(native)
    assert entry.shape == prepared.shape and entry.modality == "ct"
    assert np.abs(entry.unit_slices(slice(None)) - prepared.unit).max() <= 0.5 / cache.IMAGE_SCALE + 1e-7
    assert np.array_equal(entry.labels, labels)
    _, truth = phantom(seed=0, shift=0)
    assert np.array_equal(entry.labels, truth), "canonical frame: the phantom's own (S, P, L) array"
    assert np.array_equal(entry.presence[:, 1], (labels == 1).any(axis=(1, 2)))
    assert entry.present_ids() == (1, 2, 3)
    assert np.array_equal(entry.native_labels(), native)
    assert isinstance(entry.labels, np.memmap)

    monkeypatch.setattr(cache, "_build_entry", lambda *a: pytest.fail("rebuilt a valid entry"))
    again = cache.cached_volume(case, PP, tmp_path)
    assert again.folder == entry.folder
    # model input settings are applied per sample, so they share the entry
    assert (
        cache.cached_volume(case, replace(PP, image_size=64, slice_layout=REFERENCE_SLICE_LAYOUT), tmp_path).folder
        == entry.folder
    )


def test_cache_key_follows_files_and_intensity_settings(dataset, tmp_path):
    case = dataset.cases[0]
    key = cache.cache_key(case, PP, "ct")
    assert cache.cache_key(case, replace(PP, ct_window=(-100.0, 200.0)), "ct") != key
    assert cache.cache_key(case, PP, "mr") != key
    label = tmp_path / "label.nii.gz"
    label.write_bytes(case.label.read_bytes())
    moved = replace(case, label=label)
    assert cache.cache_key(moved, PP, "ct") != key
    before = cache.cache_key(moved, PP, "ct")
    os.utime(label, ns=(1, 1))  # a rewritten file
    assert cache.cache_key(moved, PP, "ct") != before


def test_an_interrupted_cache_write_leaves_no_entry(dataset, tmp_path, monkeypatch):
    def boom(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(cache.np, "save", boom)
    with pytest.raises(KeyboardInterrupt):
        cache.cached_volume(dataset.cases[0], PP, tmp_path)
    assert list(tmp_path.iterdir()) == []  # neither an entry nor a temporary folder


def test_modality_hints():
    assert cache.modality_hint("CT") == "ct" and cache.modality_hint("MR (T2-SPIR)") == "mr"
    assert cache.modality_hint("CT or MR") == "auto" and cache.modality_hint(None) == "auto"


# --------------------------------------------------------------------------- windows


def test_window_is_five_neighbouring_slices_of_the_volume_with_edges_replicated(dataset, tmp_path):
    volumes = cache.cache_cases(dataset.cases, PP, tmp_path)
    windows = WindowDataset(volumes, PP, 5, {1: 0, 2: 1, 3: 2})
    codec = SliceCodec(PP)
    volume = volumes[0]
    # slice 6 holds three organs: the authors' manifest-row window would repeat it; ours is z-2..z+2
    assert volume.presence[6, 1:].sum() == 3
    for z, expected in ((6, [4, 5, 6, 7, 8]), (0, [0, 0, 0, 1, 2]), (11, [9, 10, 11, 11, 11])):
        item = windows[Sample(0, z, 2, True)]
        assert torch.equal(item["pixels"], codec.encode(volume.unit_slices(expected)))
        assert torch.equal(item["target"], codec.encode_masks((volume.labels[z] == 2)[None])[0])
        assert item["prompt"] == 1
    assert WindowDataset(volumes, PP, 1, {2: 0})[Sample(0, 6, 2, True)]["pixels"].shape == (1, 3, 32, 32)


# --------------------------------------------------------------------------- sampling


def _table(rows: int, present: dict[int, list[int]], n_values: int = 14) -> np.ndarray:
    table = np.zeros((rows, n_values), bool)
    for label, zs in present.items():
        table[zs, label] = True
    return table


ORGANS = {o.label: o for o in ABDOMEN13}


def test_negatives_are_absent_organs_including_slices_with_other_organs_at_one_per_three():
    # 20 slices; liver (1) in 0..11, left adrenal (8) in 5..7, right kidney (2) in 4..9
    presence = [_table(20, {1: list(range(12)), 8: [5, 6, 7], 2: list(range(4, 10))})]
    index = SampleIndex(presence, [[1, 2, 8]], ORGANS)
    assert index.counts() == {"positives": 12 + 3 + 6, "negatives": 3 * 20 - 21}
    sampler = WindowSampler(index, batch_size=8, seed=1, epoch_size=4000)
    samples = sampler.epoch_items(0)
    positives = [s for s in samples if s.positive]
    negatives = [s for s in samples if not s.positive]
    assert len(samples) == 4000 and len(positives) == 3 * len(negatives) == 3000  # exactly 1 : 3
    table = presence[0]
    assert all(table[s.z, s.label] for s in positives) and not any(table[s.z, s.label] for s in negatives)
    hard = [s for s in negatives if table[s.z, 1:].any()]  # other organs present in the centre slice
    assert len(hard) > 0.3 * len(negatives)
    default = WindowSampler(index, batch_size=8)
    assert default.split == (21, 7)  # the paper's epoch: every positive pair once in expectation + 1/3


def test_class_weighting_follows_the_sampling_weights():
    # every organ present in 10 slices: draws must follow the weights (adrenal 8, pancreas 3, liver 1)
    presence = [_table(30, {1: list(range(10)), 4: list(range(10, 20)), 7: list(range(20, 30))})]
    index = SampleIndex(presence, [[1, 4, 7]], ORGANS)
    sampler = WindowSampler(index, batch_size=8, seed=0, epoch_size=24000)
    samples = sampler.epoch_items(3)
    for positive in (True, False):
        labels = np.array([s.label for s in samples if s.positive == positive])
        share = {label: float(np.mean(labels == label)) for label in (1, 4, 7)}
        expected = {1: 1 / 12, 4: 3 / 12, 7: 8 / 12}
        for label in share:
            assert share[label] == pytest.approx(expected[label], abs=0.015), (positive, share)
    # unequal slice counts: a pair's chance is its organ's weight (liver in 20 slices, adrenal in 2)
    presence = [_table(30, {1: list(range(20)), 8: [3, 4]})]
    labels = np.array(
        [
            s.label
            for s in WindowSampler(SampleIndex(presence, [[1, 8]], ORGANS), 8, epoch_size=20000).epoch_items(0)
            if s.positive
        ]
    )
    assert np.mean(labels == 8) == pytest.approx(16 / 36, abs=0.015)


def test_lateral_organs_are_never_flipped_and_others_half_the_time():
    presence = [_table(10, {label: list(range(10)) for label in range(1, 14)})]
    index = SampleIndex(presence, [list(range(1, 14))], ORGANS)
    samples = WindowSampler(index, batch_size=8, seed=0, epoch_size=26000).epoch_items(0)
    lateral = {2, 7, 8, 13}  # kidneys and adrenals
    assert {o.label for o in ABDOMEN13 if o.lateral} == lateral
    flips_lateral = [s.flip for s in samples if s.label in lateral]
    flips_other = [s.flip for s in samples if s.label not in lateral]
    assert len(flips_lateral) > 5000 and not any(flips_lateral)
    assert np.mean(flips_other) == pytest.approx(0.5, abs=0.02)
    angles = np.array([s.angle for s in samples])
    assert angles.min() >= -5 and angles.max() <= 5 and angles.min() < -4.9 and angles.max() > 4.9
    assert abs(np.mean(np.abs(angles)) - 2.5) < 0.05  # uniform in +-5
    # unknown labels with a side in their name are not flipped either
    assert not augment.flip_allowed(Organ("lung_left", "lung left"))
    assert augment.flip_allowed(Organ("bladder", "bladder"))
    validation_like = WindowSampler(index, 8, max_rotation=0.0, flip_probability=0.0).epoch_items(0)
    assert not any(s.flip or s.angle for s in validation_like)


def test_only_annotated_organs_are_sampled():
    presence = [_table(10, {1: [2, 3], 3: [4]}), _table(10, {1: [5]})]
    index = SampleIndex(presence, [[1, 3], [1]], ORGANS)  # case 1 is annotated for the liver only
    assert not any(v == 1 and label == 3 for v, _, label in np.concatenate([index.positives, index.negatives]))
    with pytest.raises(InputError, match="no organ voxels"):
        SampleIndex([_table(5, {})], [[1]], ORGANS)


def test_sampler_is_seeded_resumable_and_shards_across_ranks():
    presence = [_table(40, {1: list(range(30)), 3: list(range(10, 25))})]
    index = SampleIndex(presence, [[1, 3]], ORGANS)
    one = WindowSampler(index, batch_size=4, seed=5)
    assert one.epoch_items(2) == WindowSampler(index, batch_size=4, seed=5).epoch_items(2)
    assert one.epoch_items(2) != one.epoch_items(3) != WindowSampler(index, 4, seed=6).epoch_items(3)
    full = list(iter(one))
    one.set_epoch(0, position=3)
    assert list(iter(one)) == full[12:] and len(one) == len(full) - 12
    assert one.load_state_dict(one.state_dict()) is None and one.position == 3

    ranks = [WindowSampler(index, batch_size=4, seed=5, rank=r, world_size=2) for r in range(2)]
    shards = [list(iter(r)) for r in ranks]
    total = one.epoch_size
    assert len(shards[0]) == len(shards[1]) == (total + 1) // 2
    assert ranks[0].steps_per_epoch == ranks[1].steps_per_epoch
    everything = one.epoch_items(0)
    interleaved = [s for pair in zip(*shards) for s in pair]
    assert interleaved[:total] == everything  # disjoint shares that together are the epoch


# --------------------------------------------------------------------------- augmentation


def test_augmentation_moves_all_slices_and_the_mask_together():
    codec = SliceCodec(PreprocessConfig(image_size=32))
    unit = np.zeros((32, 32), np.float32)
    unit[8:20, 4:12] = 1.0  # a bright block on the patient's right (low x)
    mask = unit > 0.5
    pixels = codec.encode(np.stack([unit] * 5))
    target = codec.encode_masks(mask[None])[0]
    out, out_target = augment.apply(pixels, target, 0.0, True, codec.fill, codec.left_right_dim)
    assert torch.equal(out, pixels.flip(-1)) and torch.equal(out_target, target.flip(-1))  # columns run R->L
    rotated, rotated_target = augment.apply(pixels, target, 5.0, False, codec.fill, codec.left_right_dim)
    assert all(torch.equal(rotated[0], rotated[i]) for i in range(5))  # one transform for the window
    bright = (rotated[0, 0] > 0).float()
    assert torch.corrcoef(torch.stack([bright.flatten(), rotated_target.flatten()]))[0, 1] > 0.95
    assert not torch.equal(rotated_target, target)
    # corners come in as black (the normalised value of 0), not as the mean grey
    assert torch.allclose(rotated[0, :, 0, 0], codec.fill, atol=1e-5)
    # with the authors' layout (rows run toward L) the left-right flip is along the rows
    assert SliceCodec(PreprocessConfig(slice_layout=REFERENCE_SLICE_LAYOUT)).left_right_dim == -2


def test_organ_intensity_moves_one_organ_level_at_a_time_reproducibly():
    """augment.apply_organ_intensity: per organ (coin flip) a shift of its level within +- strength,
    texture kept, background untouched, the same draws for the same seed."""
    import numpy as np

    from TGatedSegmentLib.training.augment import apply_organ_intensity

    rng = np.random.default_rng(0)
    unit = (0.4 + 0.02 * rng.standard_normal((3, 32, 32))).astype(np.float32)
    labels = np.zeros((3, 32, 32), np.uint8)
    labels[:, 4:12, 4:12] = 1
    labels[:, 20:28, 20:28] = 2
    assert apply_organ_intensity(unit, labels, 0.0, 7) is unit
    moved = set()
    for seed in range(12):
        out = apply_organ_intensity(unit, labels, 0.3, seed)
        assert np.array_equal(out, apply_organ_intensity(unit, labels, 0.3, seed))
        assert np.array_equal(out[labels == 0], unit[labels == 0])
        for organ in (1, 2):
            inside = labels == organ
            shift = out[inside] - unit[inside]
            assert np.ptp(shift) < 1e-5 and abs(float(shift.mean())) <= 0.3 + 1e-6  # one level shift, texture kept
            if abs(float(shift.mean())) > 1e-6:
                moved.add((seed, organ))
    assert {organ for _, organ in moved} == {1, 2} and len(moved) < 24  # each organ moves in some draws, not all


def test_random_contrast_remaps_a_window_with_one_network_reproducibly():
    """augment.apply_random_contrast: off at probability 0, applied to some draws only at 0.5, the
    same draws for the same seed, one network for every slice of the window, output in [0, 1]."""
    import numpy as np

    from TGatedSegmentLib.training.augment import apply_random_contrast

    rng = np.random.default_rng(0)
    ramp = np.linspace(0.0, 1.0, 32, dtype=np.float32)
    unit = np.stack([np.tile(ramp, (32, 1)), np.tile(ramp, (32, 1)), rng.random((32, 32), np.float32)])
    assert apply_random_contrast(unit, 0.0, 3) is unit
    changed = 0
    for seed in range(20):
        out = apply_random_contrast(unit, 0.5, seed)
        assert np.array_equal(out, apply_random_contrast(unit, 0.5, seed))
        assert out.shape == unit.shape and out.dtype == np.float32
        assert out.min() >= 0.0 and out.max() <= 1.0
        if out is not unit:
            changed += 1
            assert np.array_equal(out[0], out[1])  # identical slices: the same network on both
            assert not np.allclose(out, unit, atol=1e-3)
    assert 3 <= changed <= 17  # about half of the draws
    always = [apply_random_contrast(unit, 1.0, seed) for seed in range(20)]
    assert all(out is not unit for out in always)
    # non-monotonic on some draws: the ramp's order is not kept (a brighter organ can turn darker)
    assert any(np.any(np.diff(out[0, 16]) < -1e-4) for out in always)
