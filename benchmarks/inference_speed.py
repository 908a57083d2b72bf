"""Inference speed: streaming engine vs the naive scheme vs the compute floor, measured in one run.

    python -m benchmarks.inference_speed            # real-size CLIPSeg rd64-refined (random weights)
    python -m benchmarks.inference_speed --quick    # tiny model, seconds (what the test suite runs)

* engine: ``Segmenter.segment`` on a synthetic CT of D slices (512x512), end to end from the HU
  array to native-resolution masks.
* naive: the authors' scheme, one full forward (5-slice encode + adapter + text + decoder) per
  (slice, prompt) pair. It costs the same for every pair, so it is timed on ``--naive-pairs`` pairs
  and scaled to D*K pairs (the output says so).
* floor: the unavoidable model compute, each stage timed alone on ready inputs in this run:
  encoder once per slice + decoder once per slice-prompt (the issue's definition), plus the
  adapter once per slice and the text encoder once per prompt ("full floor").
* peak RSS of a fresh process running the engine at two depths: flat if memory holds the window.

Random weights have the same cost as the pretrained ones (same architecture, same code path).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

import numpy as np  # noqa: E402
import torch  # noqa: E402


def _timed(fn, repeat: int = 1) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def build_segmenter(arch: str, batch_size: int, folder: Path):
    from TGatedSegmentLib.inference.api import Segmenter
    from TGatedSegmentLib.model.checkpoint import init_checkpoint

    ckpt = folder / f"ckpt-{arch.replace(':', '_')}"
    if not ckpt.exists():
        init_checkpoint(arch, ckpt, tokenizer="compact", seed=0)
    return Segmenter(ckpt, device="cpu", batch_size=batch_size)


def synthetic_ct(depth: int, size: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    body = ((yy - size / 2) / (0.38 * size)) ** 2 + ((xx - size / 2) / (0.45 * size)) ** 2 < 1
    vol = np.where(body, 40.0, -1000.0)[None].repeat(depth, 0)
    return (vol + rng.normal(0, 15, vol.shape)).astype(np.float32)


def measure(segmenter, depth: int, size: int, prompts: list[str], naive_pairs: int) -> dict:
    from TGatedSegmentLib.inference.reference import naive_logits
    from TGatedSegmentLib.io.volume import Geometry

    model, codec, engine = segmenter.model, segmenter.codec, segmenter.engine
    volume = synthetic_ct(depth, size)
    geometry = Geometry(size=(size, size, depth), spacing=(0.8, 0.8, 3.0), origin=(0.0, 0.0, 0.0),
                        direction=(1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0))
    engine._text_cache.clear()  # the engine pays for its text encoding like the others
    engine_s = _timed(lambda: segmenter.segment(volume, prompts=prompts, geometry=geometry, modality="ct"))
    stats = engine.stats

    # compute floor: each stage alone, batched as the engine batches it, on ready inputs
    b = segmenter.engine.batch_size
    k = len(prompts)
    unit = np.clip((volume[:b] + 125) / 400, 0, 1)
    pixels = codec.encode(unit)
    with torch.inference_mode():
        feats = model.encode_images(pixels)
        t_enc = _timed(lambda: model.encode_images(pixels)) / len(pixels)
        window = torch.stack([feats[[0] * model.context_size]] * b)
        t_fuse = _timed(lambda: model.fuse(window)) / b
        fused = model.fuse(window)
        text = engine.text_embeddings(prompts)
        t_text = _timed(lambda: engine.model.encode_text(*_tok(segmenter, prompts)))
        dec_in, dec_text = fused.repeat_interleave(k, 0), text.repeat(b, 1)
        t_dec = _timed(lambda: model.decode(dec_in, dec_text)) / (b * k)
    floor_issue = depth * t_enc + depth * k * t_dec
    floor_full = floor_issue + (depth * t_fuse if model.temporal else 0.0) + t_text

    # naive: one full forward per (slice, prompt); constant cost per pair
    n = max(1, min(naive_pairs, depth * k))
    unit_volume = np.clip((volume + 125) / 400, 0, 1)
    pairs = [(z % depth, prompts[z % k]) for z in range(n)]
    start = time.perf_counter()
    for z, prompt in pairs:
        naive_logits(model, segmenter.loaded.tokenizer, codec, unit_volume, [prompt], centres=[z])
    per_pair = (time.perf_counter() - start) / n
    naive_s = per_pair * depth * k
    return {
        "depth": depth, "prompts": k, "engine_s": engine_s, "naive_s": naive_s, "naive_pairs_timed": n,
        "naive_per_pair_s": per_pair, "floor_s": floor_issue, "floor_full_s": floor_full,
        "encoder_per_slice_s": t_enc, "adapter_per_slice_s": t_fuse, "decoder_per_item_s": t_dec, "text_s": t_text,
        "engine_over_floor": engine_s / floor_issue, "engine_over_full_floor": engine_s / floor_full,
        "naive_over_engine": naive_s / engine_s, "slices_encoded": stats.slices_encoded,
        "engine_stage_s": {k2: round(v, 3) for k2, v in stats.seconds.items()},
    }


def _tok(segmenter, prompts):
    from TGatedSegmentLib.model.tokenizer import tokenize

    return tokenize(segmenter.loaded.tokenizer, prompts, segmenter.device)


def peak_rss_mb(arch: str, depth: int, size: int, batch_size: int, folder: Path, mode: str) -> float:
    """Peak RSS of a fresh process that builds the model and runs ``mode`` on a D-slice volume.

    ``engine``: the streaming engine alone (logits consumed per batch); ``segment``: the whole
    Segmenter, whose native-resolution output masks grow with depth by design.
    """
    code = f"""
import sys, resource, numpy as np
sys.path.insert(0, {str(REPO)!r}); sys.path.insert(0, {str(Path(__file__).parent)!r})
from inference_speed import build_segmenter, synthetic_ct
from TGatedSegmentLib.io.volume import Geometry
seg = build_segmenter({arch!r}, {batch_size}, __import__('pathlib').Path({str(folder)!r}))
vol = synthetic_ct({depth}, {size})
if {mode!r} == "engine":
    unit = np.clip((vol + 125) / 400, 0, 1).astype(np.float32)
    text = seg.engine.text_embeddings(["liver", "spleen"])
    for _ in seg.engine.run(lambda idx: unit[idx], {depth}, text):
        pass
else:
    geo = Geometry(size=({size}, {size}, {depth}), spacing=(1.0, 1.0, 3.0), origin=(0.0, 0.0, 0.0),
                   direction=(1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0))
    seg.segment(vol, prompts=["liver", "spleen"], geometry=geo, modality="ct")
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "HF_HUB_OFFLINE": "1"})
    return int(out.stdout.strip().splitlines()[-1]) / 1024.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny model, small volume (seconds)")
    parser.add_argument("--arch", help="base architecture (default builtin:rd64-refined, or builtin:tiny with --quick)")
    parser.add_argument("--depth", type=int, help="slices (default 24; 6 with --quick)")
    parser.add_argument("--size", type=int, help="in-plane size (default 512; 96 with --quick)")
    parser.add_argument("--prompts", type=int, nargs="+", default=[1, 13], help="prompt counts K (default 1 13)")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--naive-pairs", type=int, help="(slice, prompt) pairs timed for the naive scheme (default 3)")
    parser.add_argument("--rss-depths", type=int, nargs=2, help="two depths for the peak-RSS runs (default 24 96)")
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    args = parser.parse_args(argv)

    quick = args.quick
    arch = args.arch or ("builtin:tiny" if quick else "builtin:rd64-refined")
    depth = args.depth or (6 if quick else 24)
    size = args.size or (96 if quick else 512)
    naive_pairs = args.naive_pairs or (2 if quick else 3)
    rss_depths = args.rss_depths or ((6, 24) if quick else (24, 96))
    torch.manual_seed(0)
    from TGatedSegmentLib.vocabulary import ABDOMEN13

    print(f"# inference speed: {arch}, D={depth} slices of {size}x{size}, batch {args.batch_size}, CPU "
          f"({torch.get_num_threads()} threads, {platform.processor() or platform.machine()}), torch {torch.__version__}")
    results = {"arch": arch, "depth": depth, "size": size, "runs": [], "rss": []}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        segmenter = build_segmenter(arch, args.batch_size, folder)
        segmenter.segment(synthetic_ct(2, 32), prompts=["liver"], modality="ct",
                          geometry=_identity(32, 2))  # warm-up: first-call allocations and lazy imports
        print("\n| K | engine s | naive s (scaled) | floor s | full floor s | engine/floor | engine/full floor | naive/engine |")
        print("|---|---|---|---|---|---|---|---|")
        for k in args.prompts:
            prompts = [o.prompt for o in ABDOMEN13][:k] if k <= 13 else [f"organ {i}" for i in range(k)]
            r = measure(segmenter, depth, size, prompts, naive_pairs)
            results["runs"].append(r)
            print(f"| {k} | {r['engine_s']:.2f} | {r['naive_s']:.1f} ({r['naive_pairs_timed']} pairs x "
                  f"{r['naive_per_pair_s']:.2f} s) | {r['floor_s']:.2f} | {r['floor_full_s']:.2f} | "
                  f"{r['engine_over_floor']:.2f} | {r['engine_over_full_floor']:.2f} | {r['naive_over_engine']:.1f} |")
        r = results["runs"][-1]
        print(f"\nper unit: encoder {r['encoder_per_slice_s'] * 1e3:.1f} ms/slice, adapter {r['adapter_per_slice_s'] * 1e3:.1f}"
              f" ms/slice, decoder {r['decoder_per_item_s'] * 1e3:.2f} ms/slice-prompt, text {r['text_s'] * 1e3:.1f} ms "
              f"for {r['prompts']} prompts; engine stages (K={r['prompts']}): {r['engine_stage_s']}")
        print("\n| mode | depth | peak RSS MB |\n|---|---|---|")
        for mode in ("engine",) if quick else ("engine", "segment"):
            for d in rss_depths:
                mb = peak_rss_mb(arch, d, size, args.batch_size, folder, mode)
                results["rss"].append({"mode": mode, "depth": d, "peak_rss_mb": mb})
                print(f"| {mode} | {d} | {mb:.0f} |")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


def _identity(size: int, depth: int):
    from TGatedSegmentLib.io.volume import Geometry

    return Geometry(size=(size, size, depth), spacing=(1.0, 1.0, 1.0), origin=(0.0, 0.0, 0.0),
                    direction=(1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0))


if __name__ == "__main__":
    sys.exit(main())
