"""Per-organ thresholds calibrated on validation volumes: the choice, its counts, the engine's use of
them, and the trainer's checkpoints."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from helpers.datasets import make_dataset
from helpers.training import fast_settings

from TGatedSegmentLib.data.dataset import load_dataset
from TGatedSegmentLib.evaluation.calibration import DEFAULT, GRID, MIN_GAIN, ThresholdCounts, calibrate
from TGatedSegmentLib.evaluation.evaluate import ScoredCase, dataset_cases, score_case
from TGatedSegmentLib.inference.api import Segmenter
from TGatedSegmentLib.model.configuration import TGatedConfig
from TGatedSegmentLib.training.dataset import split_dataset
from TGatedSegmentLib.vocabulary import normalize, resolve_prompts


def test_each_organ_gets_its_best_pooled_threshold_and_keeps_the_default_without_a_real_gain():
    truth = torch.zeros(1000, dtype=torch.bool)
    truth[:100] = True
    under = torch.full((1000,), 0.05)
    under[:100] = 0.33  # an under-confident organ: everything true sits at 0.33
    under[100:110] = 0.27  # and a few false voxels just below it
    flat = torch.full((1000,), 0.05)
    flat[:100] = 0.9  # a confident organ: every threshold up to 0.9 is as good as 0.5
    counts = ThresholdCounts()
    counts.add("gallbladder", under[:500], truth[:500])  # pooled over two blocks ...
    counts.add("gallbladder", under[500:], truth[500:])
    counts.add("liver", flat, truth)
    counts.add("spleen", flat, torch.zeros(1000, dtype=torch.bool))  # no true voxel in validation
    chosen = counts.choose()
    assert chosen == {"gallbladder": 0.3, "liver": DEFAULT}  # the spleen is not listed: nothing to choose on
    dice = counts.dice("gallbladder")
    assert dice[GRID.index(0.3)] == pytest.approx(1.0) and dice[GRID.index(0.5)] == 0.0
    assert dice[GRID.index(0.25)] == pytest.approx(200 / 210)

    merged = ThresholdCounts()
    for state in ({"gallbladder": counts.counts["gallbladder"].tolist()}, {"liver": counts.counts["liver"].tolist()}):
        merged.merge(json.loads(json.dumps(state)))  # as gathered from the processes of a DDP run
    assert merged.choose() == chosen

    small = ThresholdCounts()  # a better threshold by less than MIN_GAIN does not move the organ
    p = torch.full((2000,), 0.05)
    t = torch.zeros(2000, dtype=torch.bool)
    t[:1000] = True
    p[:1000] = 0.6
    p[1000] = 0.45  # one true voxel below 0.5 among 1000: 0.45 gains 1e-3 < MIN_GAIN
    t[1000] = True
    small.add("liver", p, t)
    assert 0 < small.dice("liver")[GRID.index(0.45)] - small.dice("liver")[GRID.index(0.5)] < MIN_GAIN
    assert small.choose() == {"liver": DEFAULT}


def _oblique_volume(seed: int = 0) -> tuple[sitk.Image, np.ndarray]:
    """A CT stored with permuted, flipped axes, and labels on its own (k, j, i) grid."""
    rng = np.random.default_rng(seed)
    array = rng.normal(40, 60, (7, 20, 16)).astype(np.int16)
    image = sitk.GetImageFromArray(array)
    image.SetSpacing((1.5, 2.0, 3.0))
    image.SetDirection((0, 0, -1, -1, 0, 0, 0, 1, 0))  # i -> -z... : canonical order differs from storage
    labels = np.zeros(array.shape, np.uint8)
    labels[1:5, 3:12, 2:9] = 1
    labels[2:6, 12:18, 9:15] = 2
    return image, labels


def test_the_validation_counts_equal_those_of_the_whole_probability_volume_in_any_orientation(tiny_checkpoint):
    segmenter = Segmenter(tiny_checkpoint, device="cpu", precision="fp32")
    image, labels = _oblique_volume()
    organs = resolve_prompts("liver, spleen")
    whole = segmenter.segment(image, prompts=organs, return_probabilities=True)
    # an untrained model's probabilities sit in one 0.05 bin: thresholds at their quantiles split them
    grid = tuple(sorted({DEFAULT, *(float(q) for q in np.quantile(whole.probabilities, [0.2, 0.4, 0.6, 0.8]))}))
    counts = ThresholdCounts(grid)
    score_case(
        segmenter, ScoredCase("c", image, labels, (3.0, 2.0, 1.5), {1: organs[0], 2: organs[1]}), calibration=counts
    )

    expected = ThresholdCounts(grid)
    for n, label in enumerate((1, 2)):
        expected.add(organs[n].prompt, torch.from_numpy(whole.probabilities[n]), torch.from_numpy(labels == label))
    assert counts.counts.keys() == expected.counts.keys() == {"liver", "spleen"}
    for organ in counts.counts:
        np.testing.assert_array_equal(counts.counts[organ], expected.counts[organ])
    # not a vacuous match: the grid splits the voxels, and labels flipped along any axis count otherwise
    assert len(set(counts.counts["liver"][:, 1])) > 2
    for wrong in (labels[:, ::-1], labels[:, :, ::-1], labels[::-1]):  # a flip the engine did not make
        unturned = ThresholdCounts(grid)
        unturned.add("liver", torch.from_numpy(whole.probabilities[0]), torch.from_numpy(wrong.copy() == 1))
        assert not np.array_equal(unturned.counts["liver"], counts.counts["liver"])


def test_the_engine_applies_each_organs_calibrated_threshold_unless_one_is_named(tmp_path, tiny_checkpoint):
    checkpoint = shutil.copytree(tiny_checkpoint, tmp_path / "calibrated")
    saved = json.loads((checkpoint / "config.json").read_text())
    assert TGatedConfig.from_dict(saved).organ_thresholds == {}  # configs saved before the field: none
    saved["organ_thresholds"] = {"liver": 0.45}
    (checkpoint / "config.json").write_text(json.dumps(saved))
    config = TGatedConfig.from_dict(saved)
    assert TGatedConfig.from_dict(config.to_dict()).organ_thresholds == {"liver": 0.45}

    segmenter = Segmenter(checkpoint, device="cpu", precision="fp32")
    image, _ = _oblique_volume()
    organs = resolve_prompts("liver, spleen, a free-text prompt")
    result = segmenter.segment(image, prompts=organs, return_probabilities=True)
    assert result.thresholds == (0.45, 0.5, 0.5) and result.threshold == 0.5
    assert [row["threshold"] for row in result.summary()] == [0.45, 0.5, 0.5]  # what `tgated segment` reports
    prob = result.probabilities
    for n, cut in enumerate(result.thresholds):
        np.testing.assert_array_equal(result.masks[n], prob[n] >= cut)
    assert (result.masks[0] != (prob[0] >= 0.5)).any()  # the calibrated threshold changed the liver

    # found by the prompt the model reads, however it was named: typed, an alias, a preset, a dataset's label
    saved["organ_thresholds"] = {"right_kidney": 0.35}
    (checkpoint / "config.json").write_text(json.dumps(saved))
    config = TGatedConfig.from_dict(saved)
    typed = [resolve_prompts(text)[0] for text in ("right kidney", "RK", "Right_Kidney", "left kidney")]
    assert config.thresholds_for(typed) == [0.35, 0.35, 0.35, 0.5]
    preset = resolve_prompts(None, "abdomen13")
    assert [t for o, t in zip(preset, config.thresholds_for(preset)) if t != 0.5] == [0.35]

    named = segmenter.segment(image, prompts=organs, threshold=0.55)
    assert named.thresholds == (0.55, 0.55, 0.55)
    for n in range(3):
        np.testing.assert_array_equal(named.masks[n], prob[n] >= 0.55)


def test_a_calibrated_run_gives_its_checkpoints_the_thresholds_and_a_new_run_drops_a_bases(tmp_path):
    from TGatedSegmentLib.training import TrainConfig, resume_config, train

    data = make_dataset(tmp_path / "ds", cases=2)
    run = train(
        TrainConfig(**fast_settings(data=data, output=tmp_path / "run", val="split:1", thresholds="calibrated"))
    )
    best = json.loads((run / "best" / "config.json").read_text())
    last = json.loads((run / "last" / "config.json").read_text())
    history = last["training"]["history"]
    assert all("thresholds" in entry for entry in history)
    assert last["organ_thresholds"] == history[-1]["thresholds"]
    assert best["organ_thresholds"] == history[best["training"]["best"]["epoch"] - 1]["thresholds"]
    validated = {normalize(organ) for organ, dice in history[-1]["val_dice"].items() if dice == dice}  # not NaN
    assert {normalize(prompt) for prompt in last["organ_thresholds"]} == validated  # keyed by prompt
    assert all(t in GRID for t in last["organ_thresholds"].values())
    # a checkpoint calibrated afterwards on the same validation volumes gets the same thresholds
    # (what benchmarks/phantom_runs.calibrated does for runs trained before the option existed)
    _, val = split_dataset(load_dataset(data), 1, seed=0)
    assert (
        calibrate(Segmenter(run / "last", device="cpu", precision="fp32"), dataset_cases(val))
        == last["organ_thresholds"]
    )

    # resumed with fixed thresholds, the next epoch's checkpoints carry none (no stale ones on new weights)
    train(resume_config(run, epochs=3, thresholds="fixed"))
    resumed = json.loads((run / "last" / "config.json").read_text())
    assert resumed["training"]["history"][-1]["step"] > history[-1]["step"] and resumed["organ_thresholds"] == {}

    again = train(
        TrainConfig(
            **fast_settings(without=("base",), base=str(run / "best"), data=data, output=tmp_path / "again", epochs=1)
        )
    )
    assert json.loads((again / "last" / "config.json").read_text())["organ_thresholds"] == {}


def test_tgated_calibrate_writes_a_calibrated_copy_and_never_replaces_a_checkpoint_unasked(tmp_path, tiny_checkpoint):
    from helpers.env import run_cli, run_cli_here
    from helpers.training import assert_same_weights

    data = make_dataset(tmp_path / "ds", cases=1)
    out = tmp_path / "calibrated"
    args = ("calibrate", "--checkpoint", str(tiny_checkpoint), "--data", str(data), "--device", "cpu")
    done = run_cli(*args, "--output", str(out), "--progress", "none")  # a real process: the entry point's exit code
    assert done.returncode == 0, done.stderr
    saved = json.loads((out / "config.json").read_text())
    expected = calibrate(Segmenter(tiny_checkpoint, device="cpu", precision="fp32"), dataset_cases(load_dataset(data)))
    assert saved["organ_thresholds"] == expected and expected  # every labelled organ of the case, each chosen
    assert_same_weights(out, tiny_checkpoint)
    source = json.loads((tiny_checkpoint / "config.json").read_text())
    assert {k: v for k, v in saved.items() if k != "organ_thresholds"} == {
        k: v for k, v in source.items() if k != "organ_thresholds"
    }
    for target in (out, tiny_checkpoint):  # an existing folder, the source included, only with --overwrite
        refused = run_cli_here(*args, "--output", str(target), "--progress", "none")
        assert refused.returncode == 2 and "--overwrite" in refused.stderr
    assert "organ_thresholds" not in source or source["organ_thresholds"] == {}
    assert json.loads((tiny_checkpoint / "config.json").read_text()) == source

    in_place = shutil.copytree(tiny_checkpoint, tmp_path / "in-place")  # asked for: the folder itself, replaced
    args_here = ("calibrate", "--checkpoint", str(in_place), "--data", str(data), "--device", "cpu")
    done = run_cli_here(*args_here, "--output", str(in_place), "--overwrite", "--progress", "none")
    assert done.returncode == 0, done.stderr
    assert json.loads((in_place / "config.json").read_text())["organ_thresholds"] == expected
    assert_same_weights(in_place, tiny_checkpoint)
