"""Shared fixtures: tiny random-weight models, an offline tokenizer, and the optional ../shared data.

Tests never touch the network (HF_HUB_OFFLINE is forced) and never need ../shared to run: what
needs real data skips cleanly when it is absent.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"

# The tiny CLIPSeg of ../shared/reference/clipseg-tiny.config.json (same structure as
# clipseg-rd64-refined, hidden 32), inlined so that tests run without ../shared.
TINY_CLIPSEG_CONFIG = {
    "architectures": ["CLIPSegForImageSegmentation"],
    "model_type": "clipseg",
    "conditional_layer": 0,
    "decoder_intermediate_size": 64,
    "decoder_num_attention_heads": 2,
    "extract_layers": [1, 2, 3],
    "projection_dim": 32,
    "reduce_dim": 16,
    "use_complex_transposed_convolution": True,
    "text_config": {"hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 2, "num_hidden_layers": 2,
                    "max_position_embeddings": 77, "vocab_size": 49408, "bos_token_id": 49406,
                    "eos_token_id": 49407, "pad_token_id": 1},
    "vision_config": {"hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 2, "num_hidden_layers": 4,
                      "patch_size": 16, "image_size": 224},
}


def python_env() -> dict:
    """Environment for subprocesses running this checkout's backend (offline, importable)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["HF_HUB_OFFLINE"] = "1"
    env["TRANSFORMERS_OFFLINE"] = "1"
    return env


def backend_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "TGatedSegmentLib", *args]


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not SHARED.is_dir():
        pytest.skip("../shared is not present")
    return SHARED


@pytest.fixture(scope="session")
def shared_data(shared_dir) -> Path:
    data = shared_dir / "data"
    if not data.is_dir():
        pytest.skip("../shared/data is not present")
    return data


@pytest.fixture(scope="session")
def tiny_config_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("configs") / "clipseg-tiny.config.json"
    path.write_text(json.dumps(TINY_CLIPSEG_CONFIG))
    return path


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory, tiny_config_file) -> Path:
    """An untrained T-Gated checkpoint on the tiny CLIPSeg, with the compact offline tokenizer."""
    from TGatedSegmentLib.model.checkpoint import init_checkpoint

    return init_checkpoint(tiny_config_file, tmp_path_factory.mktemp("ckpt") / "tiny-tgated", tokenizer="compact", seed=0)


@pytest.fixture(scope="session")
def tiny_baseline_checkpoint(tmp_path_factory, tiny_config_file) -> Path:
    from TGatedSegmentLib.model.checkpoint import init_checkpoint

    return init_checkpoint(tiny_config_file, tmp_path_factory.mktemp("ckpt") / "tiny-baseline", tokenizer="compact",
                           temporal=False, seed=0)
