"""A checkpoint's CLIP tokenizer read from its ``tokenizer.json`` by the ``tokenizers`` library
(:class:`JsonClipTokenizer`, issue 12): the same ids and masks as transformers' ``CLIPTokenizer``,
re-saved with the checkpoint, transformers for anything else; and what a model load imports."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from helpers.env import python_env

from TGatedSegmentLib.model.checkpoint import load_model, save_checkpoint
from TGatedSegmentLib.model.tokenizer import JsonClipTokenizer, load_tokenizer, tokenize

PROMPTS = [
    "liver",
    "Left  KIDNEY",
    "inferior vena cava",
    "gallbladder!!",
    "x " * 100,
    "é ü 日本",
    "it's the  aorta",
    "  right adrenal gland  ",
]


def _transformers_tokenizer(folder):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(folder))


def _assert_same(a, b, prompts=PROMPTS):
    for x, y in zip(tokenize(a, prompts), tokenize(b, prompts)):
        assert torch.equal(x, y)
    for prompt in prompts:  # one at a time too (no padding)
        for x, y in zip(tokenize(a, [prompt]), tokenize(b, [prompt])):
            assert torch.equal(x, y), prompt
    assert a.eos_token_id == b.eos_token_id and a.get_vocab() == b.get_vocab()


def test_checkpoint_tokenizer_gives_transformers_ids(tiny_checkpoint):
    ours = load_tokenizer(tiny_checkpoint)
    assert isinstance(ours, JsonClipTokenizer)
    _assert_same(ours, _transformers_tokenizer(tiny_checkpoint))
    ids, mask = tokenize(ours, ["x " * 100])
    assert ids.shape[1] == 77 and int(ids[0, -1]) == ours.eos_token_id and bool(mask.all())  # truncated, EOS kept


def test_real_clip_vocabulary_gives_transformers_ids(shared_dir):
    folder = shared_dir / "reference" / "clip-tokenizer"
    if not (folder / "tokenizer.json").is_file():
        pytest.skip("no CLIP tokenizer.json under ../shared/reference")
    ours = load_tokenizer(folder)
    assert isinstance(ours, JsonClipTokenizer)
    _assert_same(ours, _transformers_tokenizer(folder))


def test_loaded_checkpoint_resaves_its_tokenizer(tiny_checkpoint, tmp_path):
    loaded = load_model(tiny_checkpoint)
    assert isinstance(loaded.tokenizer, JsonClipTokenizer)
    again = save_checkpoint(loaded.model, loaded.tokenizer, tmp_path / "again", loaded.config)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        assert (again / name).read_bytes() == (tiny_checkpoint / name).read_bytes()
    _assert_same(load_model(again).tokenizer, _transformers_tokenizer(tiny_checkpoint))


def test_other_tokenizers_go_to_transformers(tmp_path, tiny_checkpoint):
    config = json.loads((tiny_checkpoint / "tokenizer_config.json").read_text(encoding="utf-8"))
    odd = tmp_path / "odd"
    odd.mkdir()
    (odd / "tokenizer.json").write_bytes((tiny_checkpoint / "tokenizer.json").read_bytes())
    (odd / "tokenizer_config.json").write_text(json.dumps({**config, "tokenizer_class": "BertTokenizer"}))
    assert JsonClipTokenizer.from_folder(odd) is None
    assert JsonClipTokenizer.from_folder(tmp_path) is None  # no files at all
    older = tmp_path / "older"  # special tokens stored as AddedToken dicts: still read here
    older.mkdir()
    (older / "tokenizer.json").write_bytes((tiny_checkpoint / "tokenizer.json").read_bytes())
    (older / "tokenizer_config.json").write_text(json.dumps({**config, "eos_token": {"content": config["eos_token"]}}))
    assert isinstance(JsonClipTokenizer.from_folder(older), JsonClipTokenizer)


def test_transformers_loads_only_when_a_model_is_built(tiny_checkpoint):
    """The command line, the inference API and a checkpoint's tokenizer import no transformers:
    its CLIPSeg modelling code (seconds) loads when a model is built, and only then."""
    code = f"""
import sys
import TGatedSegmentLib.cli.main, TGatedSegmentLib.inference.api
from TGatedSegmentLib.model.tokenizer import load_tokenizer
load_tokenizer({str(tiny_checkpoint)!r})
print("BEFORE", "transformers" in sys.modules)
from TGatedSegmentLib.inference.api import Segmenter
Segmenter({str(tiny_checkpoint)!r}, device="cpu").engine.text_embeddings(["liver"])
print("AFTER", "transformers.models.clipseg.modeling_clipseg" in sys.modules)
"""
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, encoding="utf-8", env=python_env(), timeout=300
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "BEFORE False" in out.stdout and "AFTER True" in out.stdout, out.stdout


def test_empty_weights_restores_the_initialisers():
    from TGatedSegmentLib.model.empty_init import empty_weights

    normal = torch.nn.init.normal_
    with empty_weights():
        layer = torch.nn.Linear(4, 3)
        assert torch.nn.init.normal_ is not normal
    assert layer.weight.is_meta and torch.nn.init.normal_ is normal


def test_a_model_built_after_a_checkpoint_load_gets_the_same_initialisation(tiny_checkpoint, tiny_config_file):
    """A fresh Python loads a checkpoint (built on ``meta`` with the initialisers swapped out), then
    builds a model from random weights, as ``tgated train`` does in Slicer's console after a
    segmentation: the weights must be those of the same build without the load. (transformers
    first imported inside the swap kept the no-ops: CLIP's token embeddings came out N(0, 1)
    instead of N(0, 0.02), and a run's first loss depended on what the process had done before.)"""
    code = f"""
import sys, hashlib, torch
from TGatedSegmentLib.model.checkpoint import build_model, load_model
if sys.argv[1] == "load":
    load_model({str(tiny_checkpoint)!r})
model = build_model({str(tiny_config_file)!r}, tokenizer="compact", seed=0).model
digest = hashlib.sha256()
for name, value in sorted(model.state_dict().items()):
    digest.update(name.encode()); digest.update(value.detach().float().numpy().tobytes())
std = model.base_model.clip.text_model.embeddings.token_embedding.weight.std().item()
print("DIGEST", digest.hexdigest(), "STD", round(std, 4))
"""
    outputs = []
    for mode in ("fresh", "load"):
        out = subprocess.run(
            [sys.executable, "-c", code, mode], capture_output=True, encoding="utf-8", env=python_env(), timeout=300
        )
        assert out.returncode == 0, out.stderr[-2000:]
        outputs.append(out.stdout.split("DIGEST", 1)[1].strip())
    assert outputs[0] == outputs[1]
    assert float(outputs[0].split("STD")[1]) < 0.1  # transformers' CLIP init, not nn.Embedding's N(0, 1)
