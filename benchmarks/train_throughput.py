"""Training throughput (samples/s) of the real-size model: T-Gated vs baseline, full vs frozen encoders.

    python -m benchmarks.train_throughput            # builtin:rd64-refined (ViT-B/16, random weights), 352x352
    python -m benchmarks.train_throughput --quick    # builtin:tiny, seconds (what the test suite runs)

Each configuration runs the trainer's own optimisation step (``StepRunner``: forward through the
model, BCE + Dice + gate penalty, backward, clipping, AdamW) on ready batches of the given size,
so data loading is not part of the figure; a warm-up step comes first, then ``--steps`` timed
steps. All four configurations run in this one process, one after the other, and are printed
side by side with their ratios. Random weights cost exactly what the pretrained ones cost.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from .step_timing import add_arguments, machine_line, random_batch, resolve

CONFIGS = [
    ("T-Gated", True, False),
    ("baseline", False, False),
    ("T-Gated frozen enc.", True, True),
    ("baseline frozen enc.", False, True),
]


def measure(arch: str, temporal: bool, frozen: bool, batch: int, steps: int, image_size: int | None) -> dict:
    from TGatedSegmentLib.model.checkpoint import build_model
    from TGatedSegmentLib.model.configuration import PreprocessConfig
    from TGatedSegmentLib.model.tokenizer import tokenize
    from TGatedSegmentLib.training.config import TrainConfig
    from TGatedSegmentLib.training.optim import freeze_encoders, make_optimizer, set_train_mode
    from TGatedSegmentLib.training.step import StepRunner

    preprocessing = PreprocessConfig(image_size=image_size) if image_size else PreprocessConfig()
    loaded = build_model(arch, "compact", temporal=temporal, preprocessing=preprocessing, seed=0)
    model = loaded.model
    config = TrainConfig(data="-", output="-", freeze_encoders=frozen, batch_size=batch)
    if frozen:
        freeze_encoders(model)
    set_train_mode(model, frozen)
    ids, mask = tokenize(loaded.tokenizer, ["liver", "left kidney", "pancreas"])
    step = StepRunner(model, make_optimizer(model, config), config, ids, mask)
    batch_data = random_batch(batch, model.context_size, preprocessing.image_size, prompts=3)
    step(batch_data)  # warm-up
    start = time.perf_counter()
    for _ in range(steps):
        step(batch_data)
    seconds = (time.perf_counter() - start) / steps
    trainable = sum(p.numel() for p in step.trainable)
    return {
        "seconds_per_step": seconds,
        "samples_per_s": batch / seconds,
        "trainable_params": trainable,
        "images_per_sample": model.context_size,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser, per="configuration")
    args = parser.parse_args(argv)
    arch, batch, steps = resolve(args)
    image_size = 64 if args.quick else None

    print(
        f"training throughput: {arch}, random weights, batch {batch}, "
        f"{image_size or 352}x{image_size or 352}, float32, {steps} timed step(s) after 1 warm-up"
    )
    print(machine_line())
    results = {}
    for name, temporal, frozen in CONFIGS:
        results[name] = measure(arch, temporal, frozen, batch, steps, image_size)
        r = results[name]
        print(
            f"  {name:<22} {r['samples_per_s']:8.3f} samples/s  {r['seconds_per_step']:8.2f} s/step  "
            f"({r['images_per_sample']} encoder image(s) per sample, {r['trainable_params'] / 1e6:.2f} M trainable)",
            flush=True,
        )
    t, b = results["T-Gated"], results["baseline"]
    tf, bf = results["T-Gated frozen enc."], results["baseline frozen enc."]
    print("ratios (samples/s):")
    print(f"  T-Gated / baseline, full fine-tuning   : {t['samples_per_s'] / b['samples_per_s']:.3f}")
    print(f"  T-Gated / baseline, frozen encoders    : {tf['samples_per_s'] / bf['samples_per_s']:.3f}")
    print(f"  frozen / full, T-Gated                 : {tf['samples_per_s'] / t['samples_per_s']:.3f}")
    print(f"  frozen / full, baseline                : {bf['samples_per_s'] / b['samples_per_s']:.3f}")
    if args.json:
        Path(args.json).write_text(
            json.dumps({"arch": arch, "batch": batch, "steps": steps, "results": results}, indent=1)
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
