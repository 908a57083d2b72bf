"""VLSM-style bottleneck adapters: identity at init, VLSM's sizes, engine properties, small checkpoints."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from TGatedSegmentLib.inference.api import Segmenter
from TGatedSegmentLib.io.volume import Geometry
from TGatedSegmentLib.model.architectures import builtin_config
from TGatedSegmentLib.model.checkpoint import WEIGHTS_NAME, LoadedModel, load_model, save_checkpoint
from TGatedSegmentLib.model.configuration import AdapterConfig, TGatedConfig
from TGatedSegmentLib.model.modeling import TGatedCLIPSeg
from TGatedSegmentLib.model.peft import PeftAdapters, PeftConfig
from TGatedSegmentLib.model.tokenizer import compact_clip_tokenizer, tokenize


def _model(peft: PeftConfig | None, temporal: bool = True, base=None) -> TGatedCLIPSeg:
    torch.manual_seed(0)
    clip = builtin_config("builtin:tiny")
    config = TGatedConfig(
        clipseg_config=clip.to_dict(), adapter=AdapterConfig.default_for(32) if temporal else None, peft=peft
    )
    return TGatedCLIPSeg(config, base_model=base).eval()


@pytest.mark.parametrize("variant", ["dense", "shallow"])
def test_fresh_adapters_receive_gradients(variant):
    """Identity at init must not mean dead: a loss reaches every adapter at once through its scale,
    and fc1/fc2 after the scale's first update (a zero-initialised last layer behind ReLU would not)."""
    model = _model(PeftConfig(variant=variant)).train()
    model.set_finetune("adapters")
    tok = compact_clip_tokenizer(["liver"])
    ids, mask = tokenize(tok, ["liver", "spleen"])
    pixels = torch.randn(2, model.context_size, 3, 64, 64)
    model(pixels, ids, mask).sigmoid().mean().backward()
    scales = [(n, p) for n, p in model.peft.named_parameters() if n.endswith("scale")]
    assert scales and all(p.grad is not None and p.grad.abs() > 0 for _, p in scales)
    model.zero_grad()
    with torch.no_grad():
        for _, p in scales:
            p.fill_(0.1)
    model(pixels, ids, mask).sigmoid().mean().backward()
    fc2 = [p for n, p in model.peft.named_parameters() if n.endswith("fc2.weight")]
    assert all(p.grad is not None and p.grad.abs().max() > 0 for p in fc2)


@pytest.mark.parametrize("variant", ["dense", "shallow"])
@pytest.mark.parametrize("temporal", [True, False])
def test_fresh_adapters_leave_outputs_unchanged(variant, temporal):
    plain = _model(None, temporal)
    adapted = _model(PeftConfig(variant=variant), temporal)
    adapted.load_state_dict(plain.state_dict(), strict=False)
    tok = compact_clip_tokenizer(["liver", "kidney"])
    ids, mask = tokenize(tok, ["liver", "left kidney"])
    pixels = torch.randn(2, adapted.context_size, 3, 352, 352)
    with torch.no_grad():
        assert torch.allclose(adapted(pixels, ids, mask), plain(pixels, ids, mask), atol=1e-5)
        for p in adapted.peft.parameters():  # trained adapters do change the output
            p.add_(torch.randn_like(p) * 0.1)
        assert not torch.allclose(adapted(pixels, ids, mask), plain(pixels, ids, mask), atol=1e-3)


def test_real_size_counts_match_vlsm_adapter():
    clip = builtin_config("builtin:rd64-refined")

    def count(**kw):
        return sum(p.numel() for p in PeftAdapters(PeftConfig(**kw), clip, one_activation=False).parameters())

    # VLSM-Adapter's counts plus one output scale per adapter (18 + 18 + 1 dense, 3 + 3 + 1 shallow)
    assert count(variant="dense", text=False, conditional=False) == 1_784_448 + 18  # DA-V
    assert count(variant="dense") == 3_237_376 + 37  # DA-VLC, the paper's "about 3M"
    assert count(variant="shallow", text=False, conditional=False) == 2_363_136 + 3  # SA-V
    assert count(variant="shallow") == 4_201_984 + 7  # SA-VLC


def test_finetune_modes_select_parameters():
    model = _model(PeftConfig(variant="dense"))
    full = set(model.set_finetune("full"))
    adapters = set(model.set_finetune("adapters"))
    assert adapters == {n for n in full if n.startswith(("adapter.", "peft."))}
    assert model.vision_needs_grad  # dense vision adapters need gradients through the ViT
    decoder = set(model.set_finetune("decoder"))
    assert any(n.startswith("base_model.decoder.") for n in decoder)
    assert not any(n.startswith("base_model.clip.") for n in decoder)
    shallow = _model(PeftConfig(variant="shallow"))
    shallow.set_finetune("adapters")
    assert not shallow.vision_needs_grad  # the encoder can run under no_grad


def test_dense_vision_adapters_keep_one_encode_per_slice(tmp_path):
    model = _model(PeftConfig(variant="dense"))
    tok = compact_clip_tokenizer(["liver"])
    seg = Segmenter(loaded=LoadedModel(model, tok, model.config, "memory"), device="cpu", batch_size=2)
    calls = []
    # every encode starts at the patch embedding (the encoder may stop before its last layer)
    model.base_model.clip.vision_model.embeddings.register_forward_hook(lambda m, i, o: calls.append(o.shape[0]))
    volume = np.random.default_rng(0).normal(0, 100, (6, 24, 24)).astype(np.float32)
    geometry = Geometry(size=(24, 24, 6), spacing=(1.0, 1.0, 1.0), origin=(0.0, 0.0, 0.0))
    seg.segment(volume, prompts="liver, spleen, aorta", geometry=geometry, modality="ct")
    assert sum(calls) == 6


def test_adapter_only_checkpoint_is_small_and_reloads_identically(tmp_path):
    base_dir = tmp_path / "base-clipseg"
    base = _model(None).base_model
    base.save_pretrained(base_dir)  # the base model's identity: a folder (or a hub id)
    tok = compact_clip_tokenizer(["liver", "kidney"])
    tok.save_pretrained(base_dir)
    from transformers import CLIPSegForImageSegmentation

    model = _model(PeftConfig(variant="dense"), base=CLIPSegForImageSegmentation.from_pretrained(base_dir))
    model.config.base_model_id = str(base_dir)
    trained = model.set_finetune("adapters")
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name in trained:
                p.add_(torch.randn_like(p) * 0.05)
    params = dict(model.named_parameters())
    save_checkpoint(model, tok, tmp_path / "full", model.config)
    save_checkpoint(
        model,
        tok,
        tmp_path / "adapters",
        model.config,
        state_dict={n: params[n] for n in trained},
        partial_weights=True,
    )
    full_size = (tmp_path / "full" / WEIGHTS_NAME).stat().st_size
    small_size = (tmp_path / "adapters" / WEIGHTS_NAME).stat().st_size
    assert small_size < 0.2 * full_size
    reloaded = load_model(tmp_path / "adapters").model
    ids, mask = tokenize(tok, ["liver", "left kidney"])
    pixels = torch.randn(2, 5, 3, 352, 352)
    with torch.no_grad():
        assert torch.equal(reloaded(pixels, ids, mask), model.eval()(pixels, ids, mask))
