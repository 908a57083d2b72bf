"""The authors' checkpoints (``CLIPSegTemporalAdapter``) in our format: ``tgated import``.

Their training script saves a bare ``state_dict`` (or a training dict with ``model_state_dict``)
with the adapter's keys at the top level and no config; ours is a checkpoint folder
(:mod:`.checkpoint`). Everything specific to their layout lives here, so the checkpoint format
itself never has to know it.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..errors import CheckpointError
from ..preprocessing.config import PreprocessConfig
from .checkpoint import load_state_dict_checked, save_checkpoint
from .clipseg_base import load_clipseg_config
from .configuration import REFERENCE_SLICE_LAYOUT, AdapterConfig, TGatedConfig
from .modeling import TGatedCLIPSeg
from .source import classify_source
from .tokenizer import check_tokenizer, load_tokenizer


def _is_base_key(key: str) -> bool:
    return key.startswith("base_model.")


def convert_reference_state_dict(state_dict: dict) -> dict:
    """The authors' ``CLIPSegTemporalAdapter`` layout (adapter keys at top level) -> ours (``adapter.``)."""
    if "model_state_dict" in state_dict and isinstance(state_dict["model_state_dict"], dict):
        state_dict = state_dict["model_state_dict"]
    converted = {}
    for key, value in state_dict.items():
        if not isinstance(value, torch.Tensor):
            continue
        key = key.removeprefix("module.")  # DataParallel / DDP wrappers
        if key.endswith("position_ids"):  # a buffer older transformers versions saved
            continue
        converted[key if _is_base_key(key) else f"adapter.{key}"] = value
    return converted


def reference_adapter_config(state_dict: dict, num_heads: int = 8) -> AdapterConfig | None:
    """Adapter sizes read off the weight shapes of an (already converted) state dict."""
    if "adapter.proj_in.0.weight" not in state_dict:
        return None
    layers = {int(k.split(".")[2]) for k in state_dict if k.startswith("adapter.temporal_layers.")}
    return AdapterConfig(
        context_size=int(state_dict["adapter.temporal_pos_emb"].shape[1]),
        proj_dim=int(state_dict["adapter.proj_in.0.weight"].shape[0]),
        num_heads=num_heads,
        num_layers=len(layers),
        ffn_dim=int(state_dict["adapter.temporal_layers.0.ff.0.weight"].shape[0]),
        spatial_heads=num_heads,
        spatial_mlp_ratio=state_dict["adapter.spatial_context.mlp.0.weight"].shape[0]
        / state_dict["adapter.spatial_context.mlp.0.weight"].shape[1],
        mode="reference",
    )


def import_reference_checkpoint(
    weights: str | Path,
    base: str | Path,
    output: str | Path,
    tokenizer: str | Path | None = None,
    slice_layout: tuple[str, ...] = REFERENCE_SLICE_LAYOUT,
) -> Path:
    """Convert a checkpoint saved by the authors' code (bare state dict or training dict)."""
    from ..vocabulary import ABDOMEN13

    weights = Path(weights)
    if not weights.is_file():
        raise CheckpointError(
            f"'{weights}' does not exist", "Pass the .pt/.pth file saved by the authors' training script."
        )
    try:
        raw = torch.load(str(weights), map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle/zip errors for corrupt or foreign files
        raise CheckpointError(
            f"cannot read '{weights}' as a PyTorch checkpoint ({str(exc).splitlines()[0][:200]})",
            "Pass the file written by torch.save(model.state_dict(), ...) in the authors' code.",
        ) from None
    if not isinstance(raw, dict):
        raise CheckpointError(
            f"'{weights}' holds a {type(raw).__name__}, not a state dict",
            "Save the model with torch.save(model.state_dict(), path) and import that file.",
        )
    state_dict = convert_reference_state_dict(raw)
    if not any(_is_base_key(k) for k in state_dict):
        raise CheckpointError(
            f"'{weights}' has no 'base_model.' weights",
            "Import the full model state dict of CLIPSegTemporalAdapter, not the adapter alone.",
        )
    clipseg_config = load_clipseg_config(base)
    config_only = classify_source(base).random_weights
    if tokenizer is None:
        if config_only:
            raise CheckpointError(
                "the base is a config file, so there is no tokenizer to copy",
                "Pass --tokenizer with a CLIP tokenizer folder or hub id.",
            )
        tokenizer = base
    tok = load_tokenizer(tokenizer)
    check_tokenizer(tok, clipseg_config)
    config = TGatedConfig(
        clipseg_config=clipseg_config.to_dict(),
        base_model_id=None if config_only else str(base),
        adapter=reference_adapter_config(state_dict),
        preprocessing=PreprocessConfig(slice_layout=tuple(slice_layout)),
        vocabulary=list(ABDOMEN13),
        training={"imported_from": weights.name, "source": "authors' CLIPSegTemporalAdapter"},
    )
    model = TGatedCLIPSeg(config)
    load_state_dict_checked(model, state_dict, str(weights))
    return save_checkpoint(model, tok, output, config)
