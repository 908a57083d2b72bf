"""The naive scheme the engine replaces: every (slice, prompt) pair encodes its own window.

This is how the authors' inference ran a volume (one full model forward per slice and organ).
It is kept as the ground truth for the engine's equivalence tests and as the benchmark's baseline,
never used for real work.
"""

from __future__ import annotations

import numpy as np
import torch

from ..model.modeling import TGatedCLIPSeg
from ..model.tokenizer import tokenize
from ..preprocessing.slices import SliceCodec
from .engine import window_indices


@torch.inference_mode()
def naive_logits(
    model: TGatedCLIPSeg,
    tokenizer,
    codec: SliceCodec,
    volume: np.ndarray,
    prompts: list[str],
    centres: list[int] | None = None,
) -> torch.Tensor:
    """(N, Y, X) canonical volume in [0, 1] -> (len(centres), K, S, S) logits, one forward per pair."""
    depth = volume.shape[0]
    centres = list(range(depth)) if centres is None else centres
    out = []
    for centre in centres:
        window = codec.encode(volume[window_indices(centre, depth, model.context_size)])  # (S, 3, H, W)
        per_prompt = []
        for prompt in prompts:
            ids, mask = tokenize(tokenizer, [prompt], codec.device)
            per_prompt.append(model(window.unsqueeze(0), ids, mask)[0])
        out.append(torch.stack(per_prompt))
    return torch.stack(out).float()
