"""Fine-tuning modes of the real-size T-Gated model: trainable parameters, checkpoint size, throughput.

    python -m benchmarks.finetune_modes           # builtin:rd64-refined (ViT-B/16, random weights), 352x352
    python -m benchmarks.finetune_modes --quick   # builtin:tiny, seconds (what the test suite runs)

Modes (all T-Gated): ``full`` (the paper), ``decoder`` (CLIP frozen; the old --freeze-encoders),
``adapters`` with dense PEFT (VLSM DA-VLC, dim 64) and ``adapters`` with shallow PEFT (SA-VLC,
dim 512); plus, to isolate what running the frozen ViT under ``no_grad`` buys, shallow adapters
with that switched off (autograd then still records nothing through the frozen ViT, because
neither its weights nor its input require gradients).

Every model is built the way ``tgated train`` builds it (``build_training_model`` on a CLIPSeg
base folder, ``set_finetune``, ``make_optimizer``) from one random base saved with
``save_pretrained``, which is also the identity its partial checkpoints load on top of. The
throughput is the trainer's own step (``StepRunner``: forward, BCE + Dice + gate loss, backward,
clipping, AdamW) on ready batches; after one warm-up step per mode, the timed steps go round-robin
over the modes (mode 1 step 1, mode 2 step 1, ...) so that a change in machine load hits every
mode alike; the median per mode is reported. Checkpoint sizes are the ``model.safetensors`` of
a full and of a partial (trained weights only) checkpoint of each mode, and each partial one is
reloaded with ``load_model`` and compared with the in-memory model.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from .step_timing import add_arguments, random_batch, resolve

MODES = [  # name, finetune, peft, vision encoder under no_grad when allowed
    ("full", "full", None, True),
    ("decoder", "decoder", None, True),
    ("adapters + dense PEFT", "adapters", "dense", True),
    ("adapters + shallow PEFT", "adapters", "shallow", True),
    ("  same, ViT not under no_grad", "adapters", "shallow", False),
]
PROMPTS = ["liver", "left kidney", "pancreas"]


def make_base(arch: str, folder: Path):
    """A random CLIPSeg saved like a pretrained one (weights + tokenizer): the base identity."""
    from TGatedSegmentLib.model.checkpoint import build_model

    loaded = build_model(arch, "compact", temporal=False, seed=0)
    loaded.model.base_model.save_pretrained(folder)
    loaded.tokenizer.save_pretrained(folder)


def build(base: Path, finetune: str, peft: str | None, image_size: int, batch: int):
    from TGatedSegmentLib.model.tokenizer import tokenize
    from TGatedSegmentLib.training.config import TrainConfig
    from TGatedSegmentLib.training.optim import make_optimizer, set_train_mode_for
    from TGatedSegmentLib.training.starting_model import build_training_model
    from TGatedSegmentLib.training.step import StepRunner
    from TGatedSegmentLib.vocabulary import lookup

    config = TrainConfig(
        data="-",
        output="-",
        base=str(base),
        finetune=finetune,
        peft=peft,
        batch_size=batch,
        image_size=image_size,
        seed=0,
    )
    loaded = build_training_model(config, [lookup(p) for p in PROMPTS])
    model = loaded.model
    trained = set(model.set_finetune(finetune))
    set_train_mode_for(model, finetune)
    ids, mask = tokenize(loaded.tokenizer, PROMPTS)
    step = StepRunner(model, make_optimizer(model, config), config, ids, mask)
    return loaded, trained, step


def sizes(loaded, trained: set[str], base: Path, folder: Path, check: bool) -> dict:
    """Bytes of model.safetensors, full and partial; the partial one reloaded and compared."""
    from TGatedSegmentLib.model.checkpoint import WEIGHTS_NAME, base_fingerprint, load_model, save_checkpoint

    model = loaded.model
    save_checkpoint(model, loaded.tokenizer, folder / "full", loaded.config)
    state = model.state_dict()
    partial = {k: v for k, v in state.items() if not k.startswith("base_model.") or k in trained}
    config = loaded.config
    config.base_model_id = str(base)
    save_checkpoint(
        model,
        loaded.tokenizer,
        folder / "partial",
        config,
        state_dict=partial,
        partial_weights=True,
        base_fingerprint=base_fingerprint(model, partial),
    )
    out = {
        "full_bytes": (folder / "full" / WEIGHTS_NAME).stat().st_size,
        "partial_bytes": (folder / "partial" / WEIGHTS_NAME).stat().st_size,
    }
    if check:
        reloaded = load_model(folder / "partial").model.state_dict()
        out["reload_identical"] = reloaded.keys() == state.keys() and all(
            torch.equal(reloaded[k], state[k]) for k in state
        )
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser, per="mode")
    parser.add_argument("--image-size", type=int, default=None, help="model input size (default 352)")
    args = parser.parse_args(argv)
    arch, batch, steps = resolve(args)
    size = args.image_size or (64 if args.quick else 352)
    import logging

    logging.getLogger("TGatedSegmentLib").setLevel(logging.ERROR)  # "new adapter on a plain CLIPSeg" x 5

    print(
        f"fine-tuning modes: {arch} T-Gated, random weights, batch {batch} (5-slice windows), {size}x{size}, "
        f"float32, CPU; {steps} timed step(s) per mode, round-robin, after 1 warm-up each"
    )
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPU core(s), "
        f"torch {torch.__version__} ({torch.get_num_threads()} threads)",
        flush=True,
    )
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="tgated-ft-") as tmp:
        base = Path(tmp) / "base"
        make_base(arch, base)
        runners = {}
        data = random_batch(batch, 5, size, prompts=len(PROMPTS))
        for name, finetune, peft, no_grad in MODES:
            loaded, trained, step = build(base, finetune, peft, size, batch)
            loaded.model.vision_without_grad = loaded.model.vision_without_grad and no_grad
            r = {
                "finetune": finetune,
                "peft": peft,
                "vision_no_grad": loaded.model.vision_without_grad,
                "trainable_params": sum(p.numel() for p in step.trainable),
                "params": sum(p.numel() for p in loaded.model.parameters()),
                "step_seconds": [],
            }
            if no_grad:  # (the no_grad switch does not change what is saved)
                r.update(sizes(loaded, trained, base, Path(tmp) / name.strip().replace(" ", "_"), check=True))
            step(data)  # warm-up
            runners[name] = step
            results[name] = r
            print(f"  built {name.strip()}: {r['trainable_params']:,} trainable", flush=True)
        for _ in range(steps):
            for name, step in runners.items():
                start = time.perf_counter()
                step(data)
                results[name]["step_seconds"].append(time.perf_counter() - start)
    for r in results.values():
        r["seconds_per_step"] = statistics.median(r["step_seconds"])
        r["samples_per_s"] = batch / r["seconds_per_step"]

    full = results["full"]
    mb = 1024 * 1024
    print()
    print(
        "| mode | trainable params | share | full ckpt MiB | partial ckpt MiB | partial/full | reloads identical | "
        "ViT no_grad | samples/s | vs full |"
    )
    print("|---|---:|---:|---:|---:|---:|---|---|---:|---:|")
    for name, r in results.items():
        ckpt = (
            (
                f"{r['full_bytes'] / mb:.1f} | {r['partial_bytes'] / mb:.1f} | "
                f"{r['partial_bytes'] / r['full_bytes']:.4f}"
                f" | {'yes' if r['reload_identical'] else 'NO'}"
            )
            if "full_bytes" in r
            else "(as above) | | |"
        )
        print(
            f"| {name.strip()} | {r['trainable_params']:,} | {r['trainable_params'] / r['params']:.2%} | {ckpt} | "
            f"{'yes' if r['vision_no_grad'] else 'no'} | {r['samples_per_s']:.3f} | "
            f"{r['samples_per_s'] / full['samples_per_s']:.2f}x |"
        )
    print()
    print(
        "step seconds (each timed step, in order): "
        + "; ".join(
            f"{name.strip()}: {', '.join(f'{s:.2f}' for s in r['step_seconds'])}" for name, r in results.items()
        )
    )
    shallow, plain = results["adapters + shallow PEFT"], results["  same, ViT not under no_grad"]
    print(
        f"no_grad ViT / recorded-but-frozen ViT (shallow adapters), samples/s: "
        f"{shallow['samples_per_s'] / plain['samples_per_s']:.3f}"
    )
    if args.json:
        Path(args.json).write_text(
            json.dumps({"arch": arch, "batch": batch, "steps": steps, "image_size": size, "results": results}, indent=1)
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
