"""The vision encoder's hidden states that CLIPSeg's decoder reads, computed no deeper than needed.

transformers' CLIPSeg runs every vision layer and then picks the states after its
``extract_layers``; with rd64-refined (12 layers, extract ``[3, 6, 9]``) the last two layers'
output is never read on the text-prompt path, a sixth of the encoder's time per slice. Stopping
after the deepest extract layer, as the original CLIPSeg does, gives the same numbers
(``Testing/test_model.py``) with transformers' own modules.
"""

from __future__ import annotations

import inspect

import torch
from torch import nn

_TAKES_CAUSAL_MASK: dict[type, bool] = {}  # encoder-layer class -> its forward wants a causal mask too


def _takes_causal_mask(layer: nn.Module) -> bool:
    """Whether this layer's class wants a causal mask too (transformers before 5.0); read once per
    class, not once per layer call."""
    kind = type(layer)
    if kind not in _TAKES_CAUSAL_MASK:
        _TAKES_CAUSAL_MASK[kind] = "causal_attention_mask" in inspect.signature(kind.forward).parameters
    return _TAKES_CAUSAL_MASK[kind]


def _run_encoder_layer(layer: nn.Module, hidden: torch.Tensor) -> torch.Tensor:
    """One transformers ``CLIPSegEncoderLayer`` without a mask, (N, T, C) -> (N, T, C), across the
    transformers versions the package supports (before 5.0 the layer also takes a causal mask and
    returns a tuple)."""
    if _takes_causal_mask(layer):
        out = layer(hidden, None, None)
    else:
        out = layer(hidden, None)
    return out[0] if isinstance(out, tuple) else out


def extracted_states(vision: nn.Module, pixel_values: torch.Tensor, extract_layers) -> list[torch.Tensor]:
    """(N, 3, H, W) -> the hidden states after each of ``extract_layers`` (0-based, CLIPSeg's
    convention: ``hidden_states[i + 1]``), each (N, T, C), running ``vision`` (transformers'
    CLIPSeg vision model) only up to the deepest of them."""
    wanted = [int(i) + 1 for i in extract_layers]  # hidden_states[k]: after layer k
    hidden = vision.pre_layrnorm(vision.embeddings(pixel_values, interpolate_pos_encoding=True))  # (N, T, C)
    states = {}
    for k, layer in enumerate(vision.encoder.layers[: max(wanted)], start=1):
        hidden = _run_encoder_layer(layer, hidden)
        if k in wanted:
            states[k] = hidden
    return [states[k] for k in wanted]
