"""Fine-tuning step time with the vision encoder frozen: encoding every step vs cached tokens.

    python -m benchmarks.token_cache_speed            # builtin:rd64-refined (ViT-B/16), 352 x 352
    python -m benchmarks.token_cache_speed --quick    # builtin:tiny, seconds (what the test suite runs)

Three arms run the trainer's own optimisation step (``StepRunner``) on the same multi-prompt slice
batch (one chunk: ``--batch-size`` centre slices, their windows, every prompt decoded for every
centre), one after the other in this process:

* full fine-tuning (the paper; everything trains, the encoder runs forward and backward);
* ``--finetune decoder`` (encoder frozen and run under ``no_grad`` every step);
* ``--finetune decoder --token-cache`` (the encoder's output read from the batch, as the cached
  tokens arrive from disk; reading them is part of data loading, a memory map, and not timed).

Printed side by side with the ratios. Random weights cost exactly what pretrained ones cost.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from .step_timing import add_arguments, machine_line, resolve

ARMS = [
    ("full fine-tuning", "full", False),
    ("frozen encoder", "decoder", False),
    ("frozen encoder + token cache", "decoder", True),
]
PROMPTS = ["liver", "spleen", "right kidney", "left kidney", "aorta", "pancreas", "gallbladder", "stomach"]


def chunk_batch(model, centres: int, size: int, prompts: int) -> dict:
    """One chunk as ``chunks.collate_chunks`` yields it (fixed seed): U = centres + 4 slices."""
    g = torch.Generator().manual_seed(0)
    half = model.context_size // 2
    unique = centres + 2 * half
    windows = torch.stack([torch.arange(c, c + model.context_size) for c in range(centres)])  # (B, S)
    items = torch.stack([torch.arange(centres).repeat_interleave(prompts), torch.arange(prompts).repeat(centres)], 1)
    return {
        "pixels": torch.randn(unique, 3, size, size, generator=g),
        "windows": windows,
        "items": items,
        "targets": (torch.rand(len(items), size, size, generator=g) > 0.8).float(),
    }


def measure(arch: str, finetune: str, cached: bool, centres: int, steps: int, image_size: int | None) -> dict:
    from TGatedSegmentLib.model.checkpoint import build_model
    from TGatedSegmentLib.model.configuration import PreprocessConfig
    from TGatedSegmentLib.model.tokenizer import tokenize
    from TGatedSegmentLib.training.config import TrainConfig
    from TGatedSegmentLib.training.optim import make_optimizer, set_train_mode_for
    from TGatedSegmentLib.training.step import StepRunner

    preprocessing = PreprocessConfig(image_size=image_size) if image_size else PreprocessConfig()
    loaded = build_model(arch, "compact", temporal=True, preprocessing=preprocessing, seed=0)
    model = loaded.model
    config = TrainConfig(
        data="-",
        output="-",
        recipe="paper",
        finetune=finetune,
        batching="slices",
        batch_size=centres,
        chunk_slices=centres,
        max_rotation=0.0,
        token_cache=cached,
    )
    model.set_finetune(finetune)
    set_train_mode_for(model, finetune)
    ids, mask = tokenize(loaded.tokenizer, PROMPTS)
    step = StepRunner(model, make_optimizer(model, config), config, ids, mask)
    batch = chunk_batch(model, centres, preprocessing.image_size, len(PROMPTS))
    if cached:
        with torch.inference_mode():
            batch["tokens"] = model.vision_tokens(batch["pixels"]).half().float()  # as stored, float16
    step(batch)  # warm-up
    start = time.perf_counter()
    for _ in range(steps):
        step(batch)
    seconds = (time.perf_counter() - start) / steps
    return {
        "seconds_per_step": seconds,
        "masks_per_s": len(batch["items"]) / seconds,
        "slices_encoded_per_step": 0 if cached else len(batch["pixels"]),
        "trainable_params": sum(p.numel() for p in step.trainable),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser, per="arm")
    args = parser.parse_args(argv)
    arch, centres, steps = resolve(args)
    image_size = 64 if args.quick else None
    print(
        f"frozen-encoder fine-tuning: {arch}, random weights, 1 chunk of {centres} centre slices x "
        f"{len(PROMPTS)} prompts, {image_size or 352}x{image_size or 352}, float32, {steps} timed step(s) after 1 warm-up"
    )
    print(machine_line())
    results = {}
    for name, finetune, cached in ARMS:
        r = results[name] = measure(arch, finetune, cached, centres, steps, image_size)
        print(
            f"  {name:<30} {r['seconds_per_step']:8.2f} s/step  {r['masks_per_s']:8.1f} masks/s  "
            f"({r['slices_encoded_per_step']} slices encoded, {r['trainable_params'] / 1e6:.2f} M trainable)",
            flush=True,
        )
    full, frozen, cached = (results[name]["seconds_per_step"] for name, _, _ in ARMS)
    print("ratios (step time):")
    print(f"  full / token cache       : {full / cached:.2f}x")
    print(f"  frozen / token cache     : {frozen / cached:.2f}x")
    print(f"  full / frozen            : {full / frozen:.2f}x")
    if args.json:
        Path(args.json).write_text(
            json.dumps({"arch": arch, "centres": centres, "steps": steps, "results": results}, indent=1)
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
