"""Loss, optimiser groups and the encoder treatment of T-Gated and baseline (tiny random models)."""

from __future__ import annotations

import math

import pytest
import torch

from TGatedSegmentLib.model.checkpoint import build_model
from TGatedSegmentLib.model.configuration import PreprocessConfig
from TGatedSegmentLib.model.tokenizer import tokenize
from TGatedSegmentLib.training.config import TrainConfig
from TGatedSegmentLib.training.losses import segmentation_loss, soft_dice_loss
from TGatedSegmentLib.training.optim import (
    GROUPS,
    freeze_encoders,
    freeze_zero_rate_parts,
    make_optimizer,
    parameter_group,
)
from TGatedSegmentLib.training.step import StepRunner


def tiny(temporal: bool = True):
    return build_model(
        "builtin:tiny", "compact", temporal=temporal, preprocessing=PreprocessConfig(image_size=32), seed=0
    )


def test_soft_dice_is_per_sample_and_bce_has_equal_weight():
    big = 30.0
    target = torch.zeros(2, 4, 4)
    target[0, :2] = 1.0  # sample 0: 8 of 16 pixels; sample 1: empty (a negative)
    perfect = torch.where(target > 0, big, -big)
    assert soft_dice_loss(perfect, target) < 1e-6
    half = perfect.clone()
    half[0, 2:] = big  # sample 0 predicts all 16 pixels: Dice 2*8/(16+8) = 2/3
    assert soft_dice_loss(half, target) == pytest.approx((1 - 2 / 3) / 2, abs=1e-5)
    # a negative with any predicted pixel costs (almost) a whole Dice point, which is what suppresses it
    wrong_negative = perfect.clone()
    wrong_negative[1, 0, 0] = big
    assert soft_dice_loss(wrong_negative, target) == pytest.approx(0.5, abs=1e-4)
    logits = torch.randn(2, 4, 4)
    total, parts = segmentation_loss(logits, target, torch.tensor(0.25), gate_weight=1e-3)
    bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, target)
    assert float(total) == pytest.approx(float(bce + soft_dice_loss(logits, target)) + 0.25e-3, rel=1e-6)
    assert parts["gate"] == 0.25


def test_every_parameter_has_its_group_and_learning_rate():
    config = TrainConfig(data="d", output="o")
    model = tiny().model
    optimizer = make_optimizer(model, config)
    groups = {g["name"]: g for g in optimizer.param_groups}
    assert set(groups) == set(GROUPS) - {"refine"}  # this model has no refinement head
    assert (groups["vision"]["lr"], groups["text"]["lr"], groups["decoder"]["lr"], groups["adapter"]["lr"]) == (
        1e-6,
        1e-6,
        1e-5,
        5e-5,
    )
    assert all(g["weight_decay"] == 1e-4 for g in optimizer.param_groups)
    in_groups = [id(p) for g in optimizer.param_groups for p in g["params"]]
    assert len(in_groups) == len(set(in_groups)) == len(list(model.parameters()))  # all, once
    names = {id(p): n for n, p in model.named_parameters()}
    adapter = {names[id(p)] for p in groups["adapter"]["params"]}
    assert "adapter.temporal_pos_emb" in adapter  # the authors' code never optimised it
    assert adapter == {n for n in names.values() if n.startswith("adapter.")}
    text = {names[id(p)] for p in groups["text"]["params"]}
    assert "base_model.clip.text_projection.weight" in text  # nor this one
    with pytest.raises(RuntimeError, match="no optimiser group"):
        parameter_group("something.new")


def test_baseline_has_no_adapter_group_and_frozen_encoders_are_left_out():
    config = TrainConfig(data="d", output="o")
    baseline = tiny(temporal=False).model
    assert {g["name"] for g in make_optimizer(baseline, config).param_groups} == {"vision", "text", "decoder"}
    model = tiny().model
    freeze_encoders(model)
    assert {g["name"] for g in make_optimizer(model, config).param_groups} == {"decoder", "adapter"}


def test_a_zero_learning_rate_freezes_its_part_and_the_optimiser_is_fused():
    """--lr-text 0 (the cpu recipe): no gradients for the text encoder, no AdamW group for it."""
    config = TrainConfig(data="d", output="o", lr_text=0.0)
    model = tiny().model
    frozen = freeze_zero_rate_parts(model, config)
    assert (
        frozen == {n for n in frozen if parameter_group(n) == "text"}
        and "base_model.clip.text_projection.weight" in frozen
    )
    optimizer = make_optimizer(model, config)
    assert {g["name"] for g in optimizer.param_groups} == {"vision", "decoder", "adapter"}
    assert optimizer.defaults["fused"]
    ids, mask = tokenize(tiny().tokenizer, ["liver"])
    model(torch.randn(1, 5, 3, 32, 32), ids, mask).mean().backward()
    assert all(p.grad is None for n, p in model.named_parameters() if n in frozen)
    assert model.base_model.clip.vision_model.encoder.layers[0].mlp.fc1.weight.grad is not None


@pytest.mark.parametrize("temporal", [True, False])
def test_both_models_train_their_encoders(temporal):
    """One optimiser step moves vision and text encoder weights for T-Gated *and* the baseline
    (the authors' baseline went through HF's no_grad forward and never trained them)."""
    loaded = tiny(temporal)
    model = loaded.model.train()
    optimizer = make_optimizer(
        model, TrainConfig(data="d", output="o", lr_encoder=1e-3, lr_decoder=1e-3, lr_adapter=1e-3)
    )
    vision = model.base_model.clip.vision_model.encoder.layers[0].mlp.fc1.weight
    text = model.base_model.clip.text_model.encoder.layers[0].mlp.fc1.weight
    before = vision.detach().clone(), text.detach().clone()
    ids, mask = tokenize(loaded.tokenizer, ["liver", "spleen"])
    pixels = torch.randn(2, model.context_size, 3, 32, 32)
    loss, _ = segmentation_loss(model(pixels, ids, mask), torch.rand(2, 32, 32), model.gate_penalty())
    loss.backward()
    optimizer.step()
    assert not torch.equal(vision, before[0]) and not torch.equal(text, before[1])


def test_random_decoder_starts_with_moderate_logits():
    """HF's generic init would give logits of +-100 (saturated, untrainable); build_model resets it."""
    loaded = tiny()
    ids, mask = tokenize(loaded.tokenizer, ["liver"])
    with torch.no_grad():
        logits = loaded.model.eval()(torch.randn(1, 5, 3, 32, 32), ids, mask)
    assert math.isfinite(float(logits.std())) and float(logits.abs().max()) < 20


def test_a_non_finite_step_is_skipped_and_changes_nothing():
    loaded = tiny()
    model = loaded.model.train()
    config = TrainConfig(data="d", output="o", lr_decoder=1e-2)
    ids, mask = tokenize(loaded.tokenizer, ["liver"])
    step = StepRunner(model, make_optimizer(model, config), config, ids, mask)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    pixels = torch.randn(2, 5, 3, 32, 32)
    pixels[0, 2, 0, 3, 3] = float("nan")
    loss = step({"pixels": pixels, "target": torch.zeros(2, 32, 32), "prompt": torch.zeros(2, dtype=torch.long)})
    assert math.isnan(loss) and step.skipped == 1
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert not step.optimizer.state  # AdamW never stepped: no moments polluted by NaN
    loss = step(
        {
            "pixels": torch.randn(2, 5, 3, 32, 32),
            "target": torch.zeros(2, 32, 32),
            "prompt": torch.zeros(2, dtype=torch.long),
        }
    )
    assert math.isfinite(loss) and step.skipped == 1
    assert not torch.equal(before["base_model.decoder.film_mul.weight"], model.base_model.decoder.film_mul.weight)
