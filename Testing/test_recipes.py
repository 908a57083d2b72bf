"""Training recipes: chosen by the base, recorded, and overridden by any explicit setting."""

from __future__ import annotations

import argparse

import pytest

from TGatedSegmentLib.errors import InputError
from TGatedSegmentLib.training.config import TrainConfig, structural_differences
from TGatedSegmentLib.training.recipes import CPU, PAPER, recipe_for


def test_the_recipe_follows_the_base_unless_named(tmp_path):
    assert recipe_for(None, "builtin:cpu") == "cpu"
    assert recipe_for(None, "CIDAS/clipseg-rd64-refined") == "paper"
    assert recipe_for(None, None) == "paper"
    assert recipe_for("paper", "builtin:tiny") == "paper"
    config = TrainConfig(data=tmp_path, output=tmp_path / "run", base="builtin:tiny")
    assert config.recipe == "cpu" and config.batching == "slices" and config.lr_text == CPU["lr_text"]
    assert config.tokenizer == "compact" and config.schedule == "cosine" and config.flip_probability == 0.0
    default = TrainConfig(data=tmp_path, output=tmp_path / "run")
    assert default.recipe == "paper" and default.base == PAPER["base"] and default.lr_encoder == 1e-6
    assert default.batching == "pairs" and default.schedule == "restarts" and default.refine == 0


def test_explicit_settings_override_the_recipe_and_everything_is_recorded(tmp_path):
    config = TrainConfig(
        data=tmp_path,
        output=tmp_path / "run",
        recipe="cpu",
        lr_decoder=5e-4,
        batch_size=4,
        refine=0,
        adapter="reference",
    )
    assert config.lr_decoder == 5e-4 and config.batch_size == 4 and config.refine == 0
    assert config.lr_encoder == CPU["lr_encoder"] and config.base == CPU["base"]
    saved = config.to_dict()
    assert saved["recipe"] == "cpu" and saved["adapter"] == "reference"
    again = TrainConfig.from_dict(saved)
    assert again.to_dict() == saved and structural_differences(saved, again) == []
    changed = TrainConfig.from_dict({**saved, "recipe": "paper"})
    assert any(d.startswith("recipe:") for d in structural_differences(saved, changed))


def test_bad_recipe_settings_are_refused_with_the_fix(tmp_path):
    with pytest.raises(InputError, match="unknown recipe"):
        TrainConfig(data=tmp_path, output=tmp_path / "run", recipe="gpu")
    with pytest.raises(InputError, match="refinement head is not part of the authors"):
        TrainConfig(data=tmp_path, output=tmp_path / "run", recipe="cpu", adapter="reference")
    with pytest.raises(InputError, match="lr_text"):
        TrainConfig(data=tmp_path, output=tmp_path / "run", recipe="cpu", lr_text=-1.0)


def test_the_cli_passes_the_recipe_and_its_overrides(tmp_path):
    from TGatedSegmentLib.cli import train as cli

    parser = argparse.ArgumentParser()
    cli.add_parser(parser.add_subparsers())
    args = parser.parse_args(
        [
            "train",
            "--data",
            str(tmp_path),
            "--output",
            str(tmp_path / "r"),
            "--recipe",
            "cpu",
            "--lr-text",
            "1e-4",
            "--refine",
            "4",
            "--max-minutes",
            "5",
            "--dice",
            "sample",
        ]
    )
    config = cli.build_config(args)
    assert (config.recipe, config.lr_text, config.refine, config.max_seconds, config.dice) == (
        "cpu",
        1e-4,
        4,
        300.0,
        "sample",
    )
    assert config.batching == CPU["batching"]  # not given: the recipe's


def test_a_run_saved_before_a_setting_existed_resumes_with_the_value_it_trained_with(tmp_path):
    """hard_pixels joined the cpu recipe later: a cpu run saved without it resumes without it."""
    from TGatedSegmentLib.training.config import PREDATING

    saved = TrainConfig(data=str(tmp_path), output=str(tmp_path / "run"), recipe="cpu").to_dict()
    assert saved["hard_pixels"] == 1.0
    for name in PREDATING:
        saved.pop(name)
    resumed = TrainConfig.from_dict({**PREDATING, **saved})
    assert resumed.hard_pixels == 0.0 and structural_differences(saved, resumed) == []
    assert structural_differences(saved, TrainConfig.from_dict(saved))  # the new default would be a change


def test_hard_pixel_loss_is_the_mean_bce_of_each_items_hardest_pixels():
    import torch
    import torch.nn.functional as F

    from TGatedSegmentLib.training.losses import hard_pixel_loss

    torch.manual_seed(0)
    logits, target = torch.randn(3, 20, 20), (torch.rand(3, 20, 20) > 0.5).float()
    bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none").flatten(1)
    expected = bce.sort(dim=1, descending=True).values[:, :4].mean()  # 1 % of 400 pixels
    assert hard_pixel_loss(logits, target).item() == pytest.approx(expected.item(), rel=1e-6)
