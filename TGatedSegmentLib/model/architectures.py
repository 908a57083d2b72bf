"""Built-in CLIPSeg architectures, usable wherever a base config is expected as ``builtin:NAME``.

They let a fresh, offline machine build a model with random weights without any file:
``rd64-refined`` is the architecture of ``CIDAS/clipseg-rd64-refined`` (ViT-B/16, what users run;
for benchmarks), ``tiny`` the 1.7 M-parameter model of the same structure used by tests, and
``cpu`` the architecture of the ``cpu`` training recipe: a 64-wide, 4-layer ViT with 8-pixel
patches at 128 px (16 x 16 tokens: twice the token density of ``tiny``, so small organs span
several tokens) whose prompt conditioning enters before the last decoder layer, chosen for what a
laptop CPU can train from random weights in minutes.

:data:`ADAPTERS` gives an architecture's temporal adapter where the paper's sizes (narrowed to the
encoder width) do not fit it: on ``cpu`` the paper's 4-layer, 4x-wide temporal transformer over
every token of 5 slices would cost more per step than the whole vision encoder.
"""

from __future__ import annotations

import copy

PREFIX = "builtin:"

_CLIP_TEXT = {
    "max_position_embeddings": 77,
    "vocab_size": 49408,
    "bos_token_id": 49406,
    "eos_token_id": 49407,
    "pad_token_id": 1,
}


def _small_clipseg(
    width: int,
    mlp: int,
    vision_heads: int,
    projection_dim: int,
    reduce_dim: int,
    patch_size: int,
    image_size: int,
    conditional_layer: int = 0,
) -> dict:
    """The small CLIPSeg of ``tiny`` and ``cpu``: 2 text and 4 vision layers of ``width``, a 64-wide decoder."""
    return {
        "model_type": "clipseg",
        "conditional_layer": conditional_layer,
        "decoder_intermediate_size": 64,
        "decoder_num_attention_heads": 2,
        "extract_layers": [1, 2, 3],
        "projection_dim": projection_dim,
        "reduce_dim": reduce_dim,
        "use_complex_transposed_convolution": True,
        "text_config": {
            "hidden_size": width,
            "intermediate_size": mlp,
            "num_attention_heads": 2,
            "num_hidden_layers": 2,
            **_CLIP_TEXT,
        },
        "vision_config": {
            "hidden_size": width,
            "intermediate_size": mlp,
            "num_attention_heads": vision_heads,
            "num_hidden_layers": 4,
            "patch_size": patch_size,
            "image_size": image_size,
        },
    }


ARCHITECTURES: dict[str, dict] = {
    "rd64-refined": {
        "model_type": "clipseg",
        "conditional_layer": 0,
        "decoder_attention_dropout": 0.0,
        "decoder_hidden_act": "quick_gelu",
        "decoder_intermediate_size": 2048,
        "decoder_num_attention_heads": 4,
        "extract_layers": [3, 6, 9],
        "projection_dim": 512,
        "reduce_dim": 64,
        "use_complex_transposed_convolution": True,
        "text_config": {
            "hidden_size": 512,
            "intermediate_size": 2048,
            "num_attention_heads": 8,
            "num_hidden_layers": 12,
            **_CLIP_TEXT,
        },
        "vision_config": {
            "hidden_size": 768,
            "intermediate_size": 3072,
            "num_attention_heads": 12,
            "num_hidden_layers": 12,
            "patch_size": 16,
            "image_size": 224,
        },
    },
    "tiny": _small_clipseg(
        width=32, mlp=64, vision_heads=2, projection_dim=32, reduce_dim=16, patch_size=16, image_size=224
    ),
    # the FiLM before the last decoder layer, not the first: the first two then see no prompt and
    # run once per slice instead of once per (slice, prompt) (TGatedCLIPSeg.decode); 13% less
    # time per 9-prompt training step, the same Dice at equal steps within a seed's noise
    "cpu": _small_clipseg(
        width=64,
        mlp=256,
        vision_heads=4,
        projection_dim=64,
        reduce_dim=32,
        patch_size=8,
        image_size=128,
        conditional_layer=2,
    ),
}

#: Temporal adapter sizes per architecture (AdapterConfig fields); others get the paper's.
ADAPTERS: dict[str, dict] = {
    "cpu": {
        "proj_dim": 32,
        "num_heads": 2,
        "num_layers": 2,
        "ffn_dim": 64,
        "spatial_heads": 4,
        "dropout": 0.0,
        "drop_path_rate": 0.0,
        "spatial_drop_path": 0.0,
        "head_dropout": 0.0,
        "head_out_dropout": 0.0,
    },
}


def is_builtin(name: str) -> bool:
    return str(name).startswith(PREFIX)


def builtin_config(name: str):
    """``builtin:tiny`` -> a transformers CLIPSegConfig (random weights when a model is built from it)."""
    from transformers import CLIPSegConfig

    from ..errors import CheckpointError

    key = str(name)[len(PREFIX) :] if is_builtin(name) else str(name)
    if key not in ARCHITECTURES:
        raise CheckpointError(
            f"unknown built-in architecture '{name}'", f"Use one of: {', '.join(PREFIX + k for k in ARCHITECTURES)}."
        )
    return CLIPSegConfig.from_dict(copy.deepcopy(ARCHITECTURES[key]))


def adapter_sizes(name: str) -> dict:
    """The :data:`ADAPTERS` entry of ``builtin:NAME`` (empty for other bases)."""
    if not is_builtin(name):
        return {}
    return dict(ADAPTERS.get(str(name)[len(PREFIX) :], {}))
