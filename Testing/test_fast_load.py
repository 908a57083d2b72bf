"""Loading for inference without a wasted start (issue 12): the plain-PyTorch CLIPSeg and tokenizer
give transformers' numbers, and loading a checkpoint imports neither transformers nor torch's
compiler stack."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from conftest import python_env

from TGatedSegmentLib.model.checkpoint import build_model, load_model, save_checkpoint
from TGatedSegmentLib.model.clipseg_native import NativeCLIPSeg
from TGatedSegmentLib.model.configuration import AdapterConfig, PeftConfig, RefineConfig
from TGatedSegmentLib.model.tokenizer import NativeClipTokenizer, tokenize

PROMPTS = ["liver", "Left  KIDNEY", "inferior vena cava", "gallbladder!!", "x " * 100, "é ü 日本", "it's the  aorta"]


def _outputs(loaded, prompts=PROMPTS, seed=0):
    """Every stage the engine runs, on one random window: encoder, text, adapter, decoder."""
    model = loaded.model.eval()
    generator = torch.Generator().manual_seed(seed)
    size = model.config.preprocessing.image_size
    pixels = torch.randn(model.context_size, 3, size, size, generator=generator)
    ids, mask = tokenize(loaded.tokenizer, prompts)
    with torch.inference_mode():
        features = model.encode_images(pixels)
        text = model.encode_text(ids, mask)
        fused = model.fuse(features.unsqueeze(0))
        image = model.image_features(pixels[model.context_size // 2:][:1])
        items = torch.stack([torch.zeros(len(prompts), dtype=torch.long), torch.arange(len(prompts))], dim=1)
        logits = model.decode(fused, text, image, items)
    return {"features": features, "text": text, "fused": fused, "logits": logits, "ids": ids, "mask": mask}


@pytest.mark.parametrize("variant", ["residual", "reference", "baseline", "refine", "peft", "cpu-arch"])
def test_native_clipseg_equals_transformers(tmp_path, tiny_config_file, variant):
    base = "builtin:cpu" if variant == "cpu-arch" else tiny_config_file
    kwargs = {"temporal": variant != "baseline"}
    if variant == "reference":
        kwargs["adapter"] = AdapterConfig.default_for(32, mode="reference")
    if variant == "refine":
        kwargs["refine"] = RefineConfig()
    loaded = build_model(base, tokenizer="compact", **kwargs)
    if variant == "peft":
        from TGatedSegmentLib.model.modeling import TGatedCLIPSeg

        loaded.config.peft = PeftConfig(variant="dense")
        loaded.model = TGatedCLIPSeg(loaded.config, base_model=loaded.model.base_model)
        with torch.no_grad():  # trained-looking adapters, so that they change the output
            for name, p in loaded.model.peft.named_parameters():
                p.fill_(0.5) if name.endswith("scale") else None
    with torch.no_grad():  # a non-zero adapter output, so that the fused path is exercised
        for p in loaded.model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    folder = save_checkpoint(loaded.model, loaded.tokenizer, tmp_path / "ckpt", loaded.config)
    reference, native = load_model(folder), load_model(folder, native=True)
    assert isinstance(native.model.base_model, NativeCLIPSeg)
    assert isinstance(native.tokenizer, NativeClipTokenizer)
    assert not isinstance(reference.model.base_model, NativeCLIPSeg)
    a, b = _outputs(reference), _outputs(native)
    assert torch.equal(a["ids"], b["ids"]) and torch.equal(a["mask"], b["mask"])
    for key in ("features", "text", "fused", "logits"):
        scale = a[key].abs().max().clamp(min=1.0)
        assert (a[key] - b[key]).abs().max() <= 1e-5 * scale, key
    stored = json.loads((folder / "config.json").read_text())["clipseg_config"]
    assert native.model.base_model.config.to_dict() == stored  # what a re-save would write


def test_native_tokenizer_matches_on_the_real_clip_vocabulary(shared_dir):
    from TGatedSegmentLib.model.tokenizer import load_tokenizer

    folder = shared_dir / "reference" / "clip-tokenizer"
    if not (folder / "tokenizer.json").is_file():
        pytest.skip("no CLIP tokenizer.json under ../shared/reference")
    hf, native = load_tokenizer(folder), load_tokenizer(folder, native=True)
    assert isinstance(native, NativeClipTokenizer)
    for a, b in zip(tokenize(hf, PROMPTS), tokenize(native, PROMPTS)):
        assert torch.equal(a, b)
    assert native.eos_token_id == hf.eos_token_id and native.get_vocab() == hf.get_vocab()


def test_partial_and_odd_tokenizers_fall_back_to_transformers(tmp_path, tiny_checkpoint):
    config = json.loads((tiny_checkpoint / "tokenizer_config.json").read_text())
    odd = tmp_path / "odd"
    odd.mkdir()
    (odd / "tokenizer.json").write_bytes((tiny_checkpoint / "tokenizer.json").read_bytes())
    (odd / "tokenizer_config.json").write_text(json.dumps({**config, "tokenizer_class": "BertTokenizer"}))
    assert NativeClipTokenizer.from_folder(odd) is None
    assert NativeClipTokenizer.from_folder(tmp_path) is None  # no files at all


def test_loading_for_inference_imports_no_transformers_and_no_compiler(tiny_checkpoint):
    """The one-slice start-up budget: loading builds nothing at random and pulls in neither
    transformers nor torch._dynamo / the symbolic-shape machinery (seconds of imports each)."""
    code = f"""
import sys
from TGatedSegmentLib.inference.api import Segmenter
seg = Segmenter({str(tiny_checkpoint)!r}, device="cpu")
seg.engine.text_embeddings(["liver"])
heavy = [m for m in ("transformers", "torch._dynamo", "torch.fx.experimental.symbolic_shapes", "sympy")
         if m in sys.modules]
print("HEAVY", heavy)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=python_env(), timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "HEAVY []" in out.stdout, out.stdout


def test_empty_weights_restores_the_initialisers():
    from TGatedSegmentLib.model.empty_init import empty_weights

    normal = torch.nn.init.normal_
    with empty_weights():
        layer = torch.nn.Linear(4, 3)
        assert torch.nn.init.normal_ is not normal
    assert layer.weight.is_meta and torch.nn.init.normal_ is normal
