"""Vision-encoder outputs on disk, for fine-tuning with a frozen encoder on a CPU.

With the CLIP vision encoder frozen (``--finetune decoder`` or ``adapters``), every training step
re-runs the same ViT on the same slices: at the real size (ViT-B/16 at 352 px) that forward pass
is most of a CPU step. ``--token-cache`` runs it once per slice of every training volume and
stores what the rest of the model reads (the extract layers' hidden states, (L, T, C) per slice,
float16) beside the volume's preprocessing cache; training steps then read tokens instead of
encoding pixels.

What it rules out, and why: augmentation in pixel space (rotation, zoom, intensity) would change
the tokens, so the cache needs ``--max-rotation 0 --max-zoom 0 --intensity 0``; a trained vision
encoder or dense vision adapters change them too, so the encoder must be frozen (shallow PEFT
adapters work: they act on the cached tokens). An entry is keyed on the vision weights, the input
size and normalisation: a different base or image size builds a new entry, never a stale read.
Written atomically (a kill leaves a complete entry or none). Shapes: Z slices, L activations, T
tokens, C width.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import torch

from ..io.atomic import atomic_dir, recover_dir
from ..model.modeling import TGatedCLIPSeg
from ..preprocessing.slices import SliceCodec
from .cache import CachedVolume

FORMAT = 1


def vision_fingerprint(model: TGatedCLIPSeg, codec: SliceCodec) -> str:
    """Hash of everything the cached tokens depend on: vision weights, wiring, input size, normalisation."""
    h = hashlib.sha256()
    for name, tensor in sorted(model.base_model.clip.vision_model.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    h.update(
        json.dumps(
            {"format": FORMAT, "layers": model.token_layers, "preprocessing": codec.config.to_dict()}, sort_keys=True
        ).encode()
    )
    return h.hexdigest()[:16]


def build_token_cache(
    model: TGatedCLIPSeg,
    volumes: list[CachedVolume],
    codec: SliceCodec,
    batch_size: int = 8,
    progress=None,
    cancel=None,
) -> list[Path]:
    """One ``tokens.npy`` per volume, (Z, L, T, C) float16, built where missing; their paths."""
    key = vision_fingerprint(model, codec)
    out = []
    for n, volume in enumerate(volumes):
        folder = volume.folder / f"tokens-{key}"
        recover_dir(folder)
        if not (folder / "tokens.npy").is_file():
            _write_entry(model, volume, codec, folder, batch_size, cancel)
        out.append(folder / "tokens.npy")
        if progress is not None:
            progress.update("tokens", n + 1, len(volumes), case=volume.case_id)
    return out


def _write_entry(
    model: TGatedCLIPSeg, volume: CachedVolume, codec: SliceCodec, folder: Path, batch_size: int, cancel
) -> None:
    device = model.device
    vision = model.base_model.clip.vision_model
    was_training = vision.training  # (uniform: set_train_mode sets the whole encoder)
    vision.eval()  # the frozen encoder as validation runs it: no dropout
    try:
        with atomic_dir(folder) as tmp, torch.inference_mode():
            tokens = None
            for start in range(0, volume.depth, batch_size):
                if cancel is not None:
                    cancel.check()
                z = list(range(start, min(volume.depth, start + batch_size)))
                pixels = codec.encode(volume.unit_slices(z)).to(device, model.dtype)  # (n, 3, H, W)
                features = model.vision_tokens(pixels).to("cpu", torch.float16).numpy()  # (n, L, T, C)
                if tokens is None:
                    tokens = np.lib.format.open_memmap(
                        tmp / "tokens.npy", mode="w+", dtype=np.float16, shape=(volume.depth, *features.shape[1:])
                    )
                tokens[z[0] : z[-1] + 1] = features
            tokens.flush()
            del tokens
    finally:
        vision.train(was_training)
