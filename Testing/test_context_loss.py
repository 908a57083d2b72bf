"""The context loss (``--context-loss``): a per-token probe on the residual adapter's output.

What it must do: change nothing the model computes (only a training loss reads the probe), score each
item's tokens against its mask pooled to the token grid, send gradient into the temporal adapter,
and exist only where there is a residual adapter to read.
"""

from __future__ import annotations

import pytest
import torch

from TGatedSegmentLib.errors import InputError
from TGatedSegmentLib.model.architectures import adapter_sizes
from TGatedSegmentLib.model.checkpoint import build_model
from TGatedSegmentLib.model.configuration import AdapterConfig, PreprocessConfig
from TGatedSegmentLib.model.tokenizer import tokenize
from TGatedSegmentLib.training.config import TrainConfig
from TGatedSegmentLib.training.losses import context_token_loss

PP = PreprocessConfig(image_size=32)


def _tiny(head: str):
    hidden = 32  # builtin:tiny's vision width
    adapter = AdapterConfig.default_for(hidden, **adapter_sizes("builtin:tiny"), context_head=head)
    return build_model("builtin:tiny", tokenizer="compact", adapter=adapter, preprocessing=PP, seed=4)


def _batch(loaded):
    torch.manual_seed(0)
    pixels = torch.randn(7, 3, 32, 32)  # 7 distinct slices, 3 centre windows over them
    windows = torch.tensor([[0, 1, 2, 3, 4], [1, 2, 3, 4, 5], [2, 3, 4, 5, 6]])
    ids, mask = tokenize(loaded.tokenizer, ["liver", "spleen"])
    items = torch.tensor([[0, 0], [0, 1], [1, 0], [2, 1]])
    return pixels, ids, mask, windows, items


def test_the_probe_changes_no_output_and_no_other_weight():
    with_probe, without = _tiny("logits"), _tiny("none")
    plain = without.model.state_dict()
    probed = with_probe.model.state_dict()
    assert set(probed) - set(plain) == {"context_probe.weight", "context_probe.bias"}
    assert all(torch.equal(plain[k], probed[k]) for k in plain)  # built last: the same random init
    pixels, ids, mask, windows, items = _batch(with_probe)
    with torch.no_grad():
        a = with_probe.model.train()(pixels, ids, mask, windows=windows, items=items)
        b = without.model.train()(pixels, ids, mask, windows=windows, items=items)
    assert torch.equal(a, b)
    tokens = with_probe.model.context_logits
    assert tokens.shape == (4, (32 // with_probe.model.base_model.config.vision_config.patch_size) ** 2)
    assert torch.count_nonzero(tokens) == 0  # zero-initialised probe: logits 0 until it learns
    assert without.model.context_logits is None
    with torch.no_grad():
        with_probe.model.eval()(pixels, ids, mask, windows=windows, items=items)
    assert with_probe.model.context_logits is None  # inference computes nothing for it


def test_each_token_is_scored_against_the_share_of_its_pixels_in_the_mask():
    target = torch.zeros(1, 16, 16)
    target[0, 4:8, 8:12] = 1.0  # token (row 1, column 2) of a 4 x 4 grid of 4-px tokens
    target[0, 12:14, 0:4] = 1.0  # half of token (3, 0)
    logits = torch.full((1, 16), -30.0)
    logits[0, 1 * 4 + 2] = 30.0
    logits[0, 3 * 4 + 0] = 0.0  # sigmoid 0.5 against a target of 0.5: its minimal BCE, log 2
    expected = torch.log(torch.tensor(2.0)) / 16
    assert torch.allclose(context_token_loss(logits, target), expected, atol=1e-6)
    transposed = logits.view(1, 4, 4).transpose(1, 2).reshape(1, 16)  # row-major order matters
    assert context_token_loss(transposed, target) > 1.0
    with pytest.raises(ValueError, match="square token grid"):
        context_token_loss(torch.zeros(1, 15), target)


def test_the_context_loss_reaches_the_temporal_adapter():
    loaded = _tiny("loss")
    model = loaded.model.train()
    with torch.no_grad():  # a trained-looking adapter: its zero-initialised residual head passes gradient on
        for p in model.adapter.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    pixels, ids, mask, windows, items = _batch(loaded)
    target = (torch.rand(len(items), 32, 32) > 0.7).float()
    optimizer = torch.optim.SGD(model.context_probe.parameters(), lr=1.0)
    for _ in range(2):  # the zero probe passes no gradient on at first; one update of it opens the path
        optimizer.zero_grad()
        model.zero_grad(set_to_none=True)
        model(pixels, ids, mask, windows=windows, items=items)
        context_token_loss(model.context_logits, target).backward()
        optimizer.step()
    assert model.context_probe.weight.abs().sum() > 0
    grad = model.adapter.temporal_layers[0].ff[0].weight.grad
    assert grad is not None and grad.abs().sum() > 0


def test_the_context_head_needs_the_residual_adapter_and_its_loss_needs_the_head():
    for kind in ("paper", "cpu"):
        for other in ({"adapter": "reference", "refine": 0}, {"temporal": False}):
            config = TrainConfig(data="d", output="o", recipe=kind, **other)
            assert (config.context_head, config.context_loss) == ("none", 0.0)
    config = TrainConfig(data="d", output="o", recipe="cpu", context_head="loss", context_loss=0.5)
    assert (config.context_head, config.context_loss) == ("loss", 0.5)
    with pytest.raises(InputError, match="--context-head reads the residual adapter's output"):
        TrainConfig(data="d", output="o", recipe="cpu", adapter="reference", refine=0, context_head="logits")
    with pytest.raises(InputError, match="no temporal adapter"):
        TrainConfig(data="d", output="o", recipe="cpu", temporal=False, context_head="loss")
    with pytest.raises(InputError, match="--context-head loss is read by the context loss only"):
        TrainConfig(data="d", output="o", recipe="cpu", context_head="loss")
    with pytest.raises(InputError, match="--context-loss trains the context head"):
        TrainConfig(data="d", output="o", recipe="cpu", context_head="none", context_loss=0.5)
    with pytest.raises(ValueError, match="residual"):
        AdapterConfig(mode="reference", context_head="loss")
    with pytest.raises(ValueError, match="context_head must be one of"):
        AdapterConfig(context_head="sometimes")


def test_a_logits_head_adds_its_token_logits_to_the_decoders_and_a_loss_head_does_not():
    """Same weights, a trained-looking probe: "logits" shifts each item's logits by its tokens' probe
    logits (bilinearly upsampled), "loss" leaves the prediction to the decoder."""
    logits_head, loss_head, plain = _tiny("logits"), _tiny("loss"), _tiny("none")
    torch.manual_seed(1)
    probe = torch.randn_like(logits_head.model.context_probe.weight) * 0.1
    for loaded in (logits_head, loss_head):
        with torch.no_grad():
            loaded.model.context_probe.weight.copy_(probe)
    pixels, ids, mask, windows, items = _batch(plain)
    with torch.no_grad():
        out = {
            n: m.model.eval()(pixels, ids, mask, windows=windows, items=items)
            for n, m in (("logits", logits_head), ("loss", loss_head), ("none", plain))
        }
        fused = plain.model.fuse(plain.model.encode_images(pixels)[windows])
        text = plain.model.encode_text(ids, mask)
        tokens = logits_head.model._context_logits(fused, text, items)  # (M, g * g)
    assert torch.equal(out["loss"], out["none"])
    g = int(round(tokens.shape[1] ** 0.5))
    shift = torch.nn.functional.interpolate(tokens.view(-1, 1, g, g), size=(32, 32), mode="bilinear").squeeze(1)
    assert torch.count_nonzero(tokens) > 0
    assert torch.allclose(out["logits"] - out["none"], shift, atol=1e-4)
