"""Uncertainty maps on the synthetic phantom: where they light up, how they track errors, what they cost.

    python -m benchmarks.uncertainty_phantom           # tiny model trained on phantoms, N = 10; rd64 timing
                                                       # (33 min on a 2-core CPU shared with other jobs:
                                                       # 25 training, 8 Monte Carlo and timing)
    python -m benchmarks.uncertainty_phantom --work DIR  # keep phantoms and runs; a rerun reuses the model
    python -m benchmarks.uncertainty_phantom --quick   # small phantoms, a few steps (what the test suite runs)

1. Train a tiny probabilistic T-Gated model (``tgated train --probabilistic`` with the learning
   rates the demo and the learning test use for random weights) on phantom volumes
   (``write_phantom_dataset``); with ``--compare-deterministic`` (always in ``--quick``) also the
   same deterministic model, whose Monte Carlo uncertainty then comes from dropout / drop-path
   alone. Defaults: 6 phantoms of 48 x 128 x 128 (one for validation), 1200 steps of 8 at
   128x128, 2 held-out phantoms. (600 steps at 64x64 left the validation Dice at 0, as did the
   first 300 at 128x128; a first version with 3 held-out phantoms of 64 slices and always both
   models was on course for well over an hour on a 2-core CPU shared with other jobs.)
2. On held-out phantoms, ``Segmenter.segment(..., uncertainty=N)`` for every organ of the phantom,
   then:
   a. mean predictive entropy (and mutual information) per region: organ boundary band (2 voxels
      in-plane on either side of the reference contour), organ interior (eroded by 2), background
      inside the body (outside the band); for the gallbladder prompt also its 1-2-slice look-alike
      distractors (never labelled) against the rest of the body;
   b. per slice, the mean entropy of an organ's prompt vs the slice's error for that organ: 1 - Dice
      (slices where the reference or the prediction has the organ) and false-positive volume (ml,
      all slices); Pearson and Spearman correlation per organ and pooled;
   c. run time of N = 10 relative to a deterministic run, for the trained tiny model and for the
      real-size architecture (``builtin:rd64-refined``, random weights, a few slices), measured
      side by side, alternating, in one process.
   Variants: the probabilistic model with its default Monte Carlo (value sampling + dropout), the
   same with sampling only (every dropout off), and (``--compare-deterministic``) the deterministic
   model with MC dropout.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import math
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

BAND = 2  # voxels in-plane on either side of a contour


# --------------------------------------------------------------------------- statistics


def ranks(x: np.ndarray) -> np.ndarray:
    """Ranks with ties averaged (for Spearman's rho)."""
    order = np.argsort(x, kind="mergesort")
    r = np.empty(len(x), dtype=np.float64)
    r[order] = np.arange(len(x), dtype=np.float64)
    sx = x[order]
    start = 0
    for i in range(1, len(x) + 1):
        if i == len(x) or sx[i] != sx[start]:
            r[order[start:i]] = (start + i - 1) / 2.0
            start = i
    return r


def pearson(x, y) -> float:
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if len(x) < 3 or x.std() == 0 or y.std() == 0:
        return math.nan
    return float(np.corrcoef(x, y)[0, 1])


def spearman(x, y) -> float:
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    return pearson(ranks(x), ranks(y)) if len(x) >= 3 else math.nan


def shift_or(mask: np.ndarray, op) -> np.ndarray:
    """One in-plane 3x3 step of dilation (op=np.logical_or) or erosion (op=np.logical_and)."""
    out = mask.copy()
    pad = np.pad(mask, ((0, 0), (1, 1), (1, 1)), constant_values=op is np.logical_and)
    h, w = mask.shape[1:]
    for dy in (0, 1, 2):
        for dx in (0, 1, 2):
            out = op(out, pad[:, dy : dy + h, dx : dx + w])
    return out


def grow(mask, n):
    for _ in range(n):
        mask = shift_or(mask, np.logical_or)
    return mask


def shrink(mask, n):
    for _ in range(n):
        mask = shift_or(mask, np.logical_and)
    return mask


def fmt(v, digits=3) -> str:
    return "n/a" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f"{v:.{digits}f}"


# --------------------------------------------------------------------------- model variants


@contextlib.contextmanager
def dropout_off(model):
    """Every dropout / drop-path / attention dropout at 0 (restored afterwards)."""
    saved = []
    for m in model.modules():
        if isinstance(m, torch.nn.Dropout) or type(m).__name__ == "DropPath":
            saved.append((m, "p", m.p))
            m.p = 0.0
        if isinstance(m, torch.nn.MultiheadAttention):
            saved.append((m, "dropout", m.dropout))
            m.dropout = 0.0
    try:
        yield
    finally:
        for m, name, value in saved:
            setattr(m, name, value)


# --------------------------------------------------------------------------- analysis


def analyse_case(ph, result, organs: list[str]) -> dict:
    """Region means (a) and per-slice rows (b) for one phantom and one MC result."""
    body = ph.image > -500.0
    voxel_ml = float(np.prod(ph.spacing)) / 1000.0
    regions = {}
    rows = []
    for k, name in enumerate(organs):
        label = next(i for i, n in ph.label_names.items() if n == name)
        ref = ph.labels == label
        if not ref.any():
            continue
        h, mi, pred = result.entropy[k], result.mutual_information[k], result.masks[k]
        outer, inner = grow(ref, BAND), shrink(ref, BAND)
        band = outer & ~inner
        parts = {"boundary": band, "interior": inner, "background": body & ~outer}
        if name == ph.target:
            distractors = ph.distractor_mask
            parts["distractor"] = distractors
            parts["background"] = parts["background"] & ~grow(distractors, BAND)
        for part, m in parts.items():
            if m.any():
                acc = regions.setdefault(name, {}).setdefault(part, {"h": 0.0, "mi": 0.0, "p": 0.0, "n": 0})
                acc["h"] += float(h[m].sum())
                acc["mi"] += float(mi[m].sum())
                acc["p"] += float(pred[m].sum())
                acc["n"] += int(m.sum())
        for z in range(ref.shape[0]):
            r, p = ref[z], pred[z]
            both = int(r.sum()) + int(p.sum())
            rows.append(
                {
                    "organ": name,
                    "z": z,
                    "h": float(h[z].mean()),
                    "mi": float(mi[z].mean()),
                    "one_minus_dice": (1.0 - 2.0 * float((r & p).sum()) / both) if both else None,
                    "fp_ml": float((p & ~r).sum()) * voxel_ml,
                }
            )
    return {"regions": regions, "rows": rows}


def merge_regions(parts: list[dict]) -> dict:
    out: dict = {}
    for regions in parts:
        for organ, d in regions.items():
            for part, acc in d.items():
                o = out.setdefault(organ, {}).setdefault(part, {"h": 0.0, "mi": 0.0, "p": 0.0, "n": 0})
                for key in o:
                    o[key] += acc[key]
    return out


def region_table(regions: dict) -> tuple[list[str], dict]:
    """Per organ mean entropy (nats) by region; pooled = voxel-weighted over organs."""
    lines = [
        "| organ | boundary H | interior H | background H | boundary / background | boundary / interior |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    pooled = {part: {"h": 0.0, "mi": 0.0, "n": 0} for part in ("boundary", "interior", "background")}
    for organ, d in regions.items():
        mean = {part: d[part]["h"] / d[part]["n"] for part in d if d[part]["n"]}
        for part in pooled:
            if part in d:
                pooled[part]["h"] += d[part]["h"]
                pooled[part]["mi"] += d[part]["mi"]
                pooled[part]["n"] += d[part]["n"]
        b, i, g = mean.get("boundary", math.nan), mean.get("interior", math.nan), mean.get("background", math.nan)
        lines.append(
            f"| {organ} | {fmt(b, 4)} | {fmt(i, 4)} | {fmt(g, 4)} | {fmt(b / g if g else math.nan, 1)} | "
            f"{fmt(b / i if i else math.nan, 1)} |"
        )
    pm = {part: (v["h"] / v["n"] if v["n"] else math.nan) for part, v in pooled.items()}
    pmi = {part: (v["mi"] / v["n"] if v["n"] else math.nan) for part, v in pooled.items()}
    lines.append(
        f"| **all organs (voxel-weighted)** | {fmt(pm['boundary'], 4)} | {fmt(pm['interior'], 4)} | "
        f"{fmt(pm['background'], 4)} | {fmt(pm['boundary'] / pm['background'], 1)} | "
        f"{fmt(pm['boundary'] / pm['interior'], 1)} |"
    )
    return lines, {"entropy": pm, "mutual_information": pmi}


def distractor_line(regions: dict, target: str) -> dict:
    d = regions.get(target, {})
    mean = {part: {k: d[part][k] / d[part]["n"] for k in ("h", "mi", "p")} for part in d if d[part]["n"]}
    return mean


def correlations(rows: list[dict], key: str = "h") -> dict:
    """Per organ and pooled: (n, Pearson, Spearman) of slice uncertainty vs 1 - Dice and vs FP ml."""
    out = {}
    organs = sorted({r["organ"] for r in rows})
    for organ in organs + ["pooled"]:
        sel = rows if organ == "pooled" else [r for r in rows if r["organ"] == organ]
        dice_rows = [r for r in sel if r["one_minus_dice"] is not None]
        u_d = [r[key] for r in dice_rows]
        e_d = [r["one_minus_dice"] for r in dice_rows]
        u_f = [r[key] for r in sel]
        e_f = [r["fp_ml"] for r in sel]
        out[organ] = {
            "dice": (len(u_d), pearson(u_d, e_d), spearman(u_d, e_d)),
            "fp": (len(u_f), pearson(u_f, e_f), spearman(u_f, e_f)),
        }
    return out


def correlation_table(corr: dict) -> list[str]:
    lines = [
        "| organ | slices (Dice defined) | r(H, 1-Dice) | rho(H, 1-Dice) | slices (all) | r(H, FP ml) | "
        "rho(H, FP ml) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for organ, c in corr.items():
        (nd, pd, sd), (nf, pf, sf) = c["dice"], c["fp"]
        name = f"**{organ}**" if organ == "pooled" else organ
        lines.append(f"| {name} | {nd} | {fmt(pd, 2)} | {fmt(sd, 2)} | {nf} | {fmt(pf, 2)} | {fmt(sf, 2)} |")
    return lines


# --------------------------------------------------------------------------- timing


def time_segmenter(seg, volume, geometry, prompts, samples: int, repeats: int) -> dict:
    """Median seconds of a deterministic and an N-sample run, alternating, same volume and prompts."""
    det, mc, stages = [], [], {}
    for _ in range(repeats):
        for n, bucket in ((0, det), (samples, mc)):
            torch.manual_seed(0)
            start = time.perf_counter()
            result = seg.segment(volume, prompts=prompts, geometry=geometry, modality="ct", uncertainty=n)
            bucket.append(time.perf_counter() - start)
            stages[n] = {k: round(v, 3) for k, v in result.stats.seconds.items()}
            stages[n]["vision encoder calls (slices)"] = result.stats.slices_encoded
            stages[n]["adapter passes"] = result.stats.windows_fused
            stages[n]["decoder items"] = result.stats.decoder_items
    d, m = statistics.median(det), statistics.median(mc)
    return {
        "deterministic_s": d,
        "mc_s": m,
        "ratio": m / d,
        "all_deterministic_s": det,
        "all_mc_s": mc,
        "stages": stages,
    }


# --------------------------------------------------------------------------- main


def finished_run(config, n_cases: int) -> Path | None:
    """``config.output`` if it holds a run that finished with these settings (``--work``), else None."""
    try:
        meta = json.loads((Path(config.output) / "last" / "config.json").read_text(encoding="utf-8"))["training"]
    except (OSError, ValueError, KeyError):
        return None
    keys = (
        "probabilistic",
        "image_size",
        "batch_size",
        "samples_per_epoch",
        "epochs",
        "seed",
        "lr_encoder",
        "lr_decoder",
        "lr_adapter",
        "val",
    )
    same = all(meta["settings"].get(k) == getattr(config, k) for k in keys)
    cases = len(meta["data"]["train_cases"]) + len(meta["data"].get("val_cases") or [])
    done = meta.get("epochs_completed") == config.epochs and (Path(config.output) / "best").is_dir()
    return Path(config.output) if same and done and cases == n_cases else None


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small phantoms, a few steps, tiny timing only")
    parser.add_argument(
        "--train-cases", type=int, default=None, help="phantom training volumes, 1 of them for validation (default 6)"
    )
    parser.add_argument("--test-cases", type=int, default=None, help="held-out phantoms (default 2)")
    parser.add_argument("--steps", type=int, default=None, help="optimiser steps per model (default 1200)")
    parser.add_argument("--samples", type=int, default=None, help="Monte Carlo samples N (default 10; quick 3)")
    parser.add_argument("--image-size", type=int, default=None, help="model input size (default 128; quick 64)")
    parser.add_argument("--depth", type=int, default=None, help="slices per phantom (default 48; quick 24)")
    parser.add_argument(
        "--compare-deterministic",
        action="store_true",
        help="also train the deterministic model and score its MC-dropout uncertainty (doubles the "
        "training time; --quick always does)",
    )
    parser.add_argument("--timing-slices", type=int, default=8, help="slices for the rd64 timing (default 8)")
    parser.add_argument(
        "--work",
        metavar="DIR",
        help="keep data and runs here (default: a temporary folder); a "
        "finished run there with the same settings is reused instead of trained again",
    )
    parser.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    args = parser.parse_args(argv)
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    logging.getLogger("TGatedSegmentLib").setLevel(logging.ERROR)

    from TGatedSegmentLib.inference.api import Segmenter
    from TGatedSegmentLib.model.checkpoint import build_model
    from TGatedSegmentLib.model.configuration import AdapterConfig, PreprocessConfig
    from TGatedSegmentLib.phantom import PhantomSpec, generate_phantom, write_phantom_dataset
    from TGatedSegmentLib.training import TrainConfig, train

    quick = args.quick
    spec = (
        PhantomSpec(shape=(args.depth or 24, 48, 48), spacing=(5.0, 6.0, 6.0), target_slices=(4, 8), n_distractors=4)
        if quick
        else PhantomSpec(shape=(args.depth or 48, 128, 128))
    )
    n_train = args.train_cases or (2 if quick else 6)
    n_test = args.test_cases or (1 if quick else 2)
    steps = args.steps or (8 if quick else 1200)
    size = args.image_size or (64 if quick else 128)
    samples = args.samples or (3 if quick else 10)
    epochs = 2 if quick else 4
    batch = 4 if quick else 8

    print(
        f"uncertainty on the phantom: tiny T-Gated (builtin:tiny, random init), {n_train} training phantoms "
        f"{spec.shape}, {steps} steps x batch {batch} at {size}x{size}, then N = {samples} Monte Carlo samples on "
        f"{n_test} held-out phantoms (every organ prompted)"
    )
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPU core(s), "
        f"torch {torch.__version__} ({torch.get_num_threads()} threads)",
        flush=True,
    )
    report: dict = {
        "settings": {
            "train_cases": n_train,
            "test_cases": n_test,
            "steps": steps,
            "batch": batch,
            "image_size": size,
            "samples": samples,
            "spec": spec.to_dict(),
        }
    }
    with tempfile.TemporaryDirectory(prefix="tgated-unc-") as tmp:
        work = Path(args.work) if args.work else Path(tmp)
        data = write_phantom_dataset(work / "phantoms", n_train, seed=1000, spec=spec)
        models = {"probabilistic": True}
        if quick or args.compare_deterministic:
            models["deterministic"] = False
        runs, train_seconds = {}, {}
        for name, probabilistic in models.items():
            start = time.perf_counter()
            config = TrainConfig(
                data=data,
                output=work / f"run-{name}",
                val="split:1",
                base="builtin:tiny",
                tokenizer="compact",
                probabilistic=probabilistic,
                image_size=size,
                epochs=epochs,
                restart_epochs=epochs,
                batch_size=batch,
                samples_per_epoch=steps * batch // epochs,
                lr_encoder=1e-3,
                lr_decoder=3e-3,
                lr_adapter=3e-3,
                device="cpu",
                num_workers=0,
                save_every_minutes=None,
                overwrite=True,
                seed=0,
            )
            reused = finished_run(config, n_train)
            runs[name] = reused or train(config)
            train_seconds[name] = time.perf_counter() - start
            best = json.loads((runs[name] / "best" / "config.json").read_text(encoding="utf-8"))["training"]["best"]
            how = f"reused {reused}" if reused else f"trained in {train_seconds[name]:.0f} s"
            print(
                f"{name}: {how}, best validation mean Dice {fmt(best['val_mean_dice'])} (epoch {best['epoch']})",
                flush=True,
            )
            report.setdefault("training", {})[name] = {
                "seconds": None if reused else train_seconds[name],
                "reused": bool(reused),
                "best": best,
            }

        tests = [generate_phantom((3000, i), spec) for i in range(n_test)]
        organs = [tests[0].label_names[i] for i in sorted(tests[0].label_names)]
        variants = [
            ("probabilistic: sampling + dropout (default MC)", "probabilistic", False),
            ("probabilistic: value sampling only (dropout off)", "probabilistic", True),
        ]
        if "deterministic" in runs:
            variants.append(("deterministic: MC dropout", "deterministic", False))
        segmenters = {name: Segmenter(run / "best", device="cpu", batch_size=8) for name, run in runs.items()}
        analysis = {}
        for label, model_name, no_dropout in variants:
            seg = segmenters[model_name]
            cases, dice = [], {}
            for ph in tests:
                image, _ = ph.to_sitk()
                torch.manual_seed(0)
                with dropout_off(seg.model) if no_dropout else contextlib.nullcontext():
                    result = seg.segment(image, prompts=organs, uncertainty=samples)
                cases.append(analyse_case(ph, result, organs))
                for k, organ in enumerate(organs):
                    ref = ph.labels == next(i for i, n in ph.label_names.items() if n == organ)
                    if ref.any():
                        pred = result.masks[k]
                        dice.setdefault(organ, []).append(2.0 * float((pred & ref).sum()) / (pred.sum() + ref.sum()))
            regions = merge_regions([c["regions"] for c in cases])
            rows = [r for c in cases for r in c["rows"]]
            analysis[label] = {
                "regions": regions,
                "rows": rows,
                "dice": {o: float(np.mean(v)) for o, v in dice.items()},
                "corr_h": correlations(rows, "h"),
                "corr_mi": correlations(rows, "mi"),
            }

        # ---- report: (a) regions, (b) correlations, per variant
        target = tests[0].target
        summary_lines = [
            "| variant | mean Dice | H boundary | H interior | H background | boundary/background | "
            f"H {target} distractors | H rest of body | p on distractors | pooled r(H,1-Dice) | "
            "pooled rho(H,1-Dice) | pooled r(H,FP) | pooled rho(H,FP) |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for label, a in analysis.items():
            print(f"\n### {label}\n")
            print("mean Dice (held-out, MC mean mask): " + ", ".join(f"{o} {v:.3f}" for o, v in a["dice"].items()))
            lines, pooled = region_table(a["regions"])
            print("\n(a) mean predictive entropy (nats) by region\n")
            print("\n".join(lines))
            dist = distractor_line(a["regions"], target)
            if dist:
                print(
                    f"\n{target} prompt: "
                    + ", ".join(
                        f"{part} H {fmt(v['h'], 4)} / MI {fmt(v['mi'], 5)} / predicted {v['p']:.1%}"
                        for part, v in dist.items()
                    )
                )
            print("\n(b) per-slice mean entropy vs per-slice error\n")
            print("\n".join(correlation_table(a["corr_h"])))
            mi_pooled = a["corr_mi"]["pooled"]
            print(
                f"\n(mutual information instead of entropy, pooled: r/rho vs 1-Dice {fmt(mi_pooled['dice'][1], 2)}/"
                f"{fmt(mi_pooled['dice'][2], 2)}, vs FP ml {fmt(mi_pooled['fp'][1], 2)}/"
                f"{fmt(mi_pooled['fp'][2], 2)})"
            )
            ph_ = pooled["entropy"]
            c = a["corr_h"]["pooled"]
            d = dist or {}
            summary_lines.append(
                f"| {label} | {np.mean(list(a['dice'].values())):.3f} | {fmt(ph_['boundary'], 4)} | "
                f"{fmt(ph_['interior'], 4)} | {fmt(ph_['background'], 4)} | "
                f"{fmt(ph_['boundary'] / ph_['background'], 1)} | {fmt(d.get('distractor', {}).get('h'), 4)} | "
                f"{fmt(d.get('background', {}).get('h'), 4)} | "
                f"{fmt(d.get('distractor', {}).get('p'), 3)} | {fmt(c['dice'][1], 2)} | {fmt(c['dice'][2], 2)} | "
                f"{fmt(c['fp'][1], 2)} | {fmt(c['fp'][2], 2)} |"
            )
            report.setdefault("analysis", {})[label] = {
                "dice": a["dice"],
                "regions": a["regions"],
                "pooled_region_means": pooled,
                "distractors": dist,
                "corr_entropy": a["corr_h"],
                "corr_mutual_information": a["corr_mi"],
            }
        print("\n### summary\n")
        print("\n".join(summary_lines))

        # ---- (c) timing
        print(f"\n(c) run time, deterministic vs N = {samples} (median of alternating runs, same process)\n")
        timing_rows = [
            "| model | slices x prompts | deterministic s | N = %d s | ratio | encoder calls (det / MC) |" % samples,
            "|---|---|---:|---:|---:|---|",
        ]
        ph = tests[0]
        tiny = time_segmenter(segmenters["probabilistic"], ph.image, ph.geometry, organs, samples, 1 if quick else 2)
        report["timing"] = {"tiny": tiny}
        timing_rows.append(
            f"| tiny probabilistic (trained), {size}x{size} | {ph.image.shape[0]} x {len(organs)} | "
            f"{tiny['deterministic_s']:.2f} | {tiny['mc_s']:.2f} | {tiny['ratio']:.2f} | "
            f"{tiny['stages'][0]['vision encoder calls (slices)']} / "
            f"{tiny['stages'][samples]['vision encoder calls (slices)']} |"
        )
        arch = "builtin:tiny" if quick else "builtin:rd64-refined"
        loaded = build_model(
            arch,
            "compact",
            temporal=True,
            seed=0,
            adapter=AdapterConfig.default_for(32 if quick else 768, probabilistic=True),
            preprocessing=PreprocessConfig(image_size=64 if quick else 352),
        )
        real = Segmenter(loaded=loaded, device="cpu", batch_size=4)
        z0 = max(0, ph.image.shape[0] // 2 - args.timing_slices // 2)
        crop = np.ascontiguousarray(ph.image[z0 : z0 + args.timing_slices])
        crop_geometry = dataclasses.replace(ph.geometry, size=crop.shape[::-1])
        big = time_segmenter(real, crop, crop_geometry, organs, samples, 1 if quick else 2)
        report["timing"]["real_size"] = {"arch": arch, **big}
        px = loaded.config.preprocessing.image_size
        timing_rows.append(
            f"| {arch} probabilistic (random), {px}x{px} | {crop.shape[0]} x {len(organs)} | "
            f"{big['deterministic_s']:.2f} | {big['mc_s']:.2f} | {big['ratio']:.2f} | "
            f"{big['stages'][0]['vision encoder calls (slices)']} / "
            f"{big['stages'][samples]['vision encoder calls (slices)']} |"
        )
        print("\n".join(timing_rows))
        for name, t in (("tiny", tiny), (arch, big)):
            print(f"stage seconds, {name}: deterministic {t['stages'][0]}; N = {samples}: {t['stages'][samples]}")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
