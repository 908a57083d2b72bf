"""Inference speed (issue 12), measured side by side in one run and printed as tables:

    python -m benchmarks.inference_speed            # real-size CLIPSeg rd64-refined (random weights)
    python -m benchmarks.inference_speed --trained demo_output/checkpoint demo_output/ct.nii.gz demo_output/reference.seg.nrrd
    python -m benchmarks.inference_speed --quick    # tiny model, seconds (what the test suite runs)

1. start-up: a whole ``tgated segment`` process (wall, CPU, peak RSS) on 1 and D slices x K
   prompts, with the float32 path and with the default fast path, plus its engine's share;
2. the compute floor, each stage timed alone on ready inputs in this run: encoder per slice,
   adapter per slice, decoder per slice-prompt, text once per prompt (``floor``: encoder + decoder,
   the issue's definition; ``full floor``: all four); process / full floor;
3. the fast path (``--precision auto``) against float32: speed-up, and on trained models
   (``--trained CKPT IMAGE REFERENCE``, REFERENCE a .seg.nrrd or a labelmap with ``--labels``
   dataset.json) the per-organ Dice of both and their voxel agreement;
4. peak RSS of a fresh process streaming D1 and D2 slices through the engine (slices made on the
   fly, so the volume itself takes no memory): flat if memory holds the window;
5. batch mode's per-volume overhead (``--output-dir``: time per case beyond the engine);
6. the warm backend (``tgated serve``): a first request, then one new prompt on the same volume.

Random weights cost the same as trained ones (same architecture, same code path).
``--naive-pairs N`` also times the authors' scheme (one full forward per slice-prompt pair, timed on
N pairs and scaled: each pair costs the same).
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

from TGatedSegmentLib.inference.precision import passive_waiting_threads  # noqa: E402

passive_waiting_threads()  # as the tgated command does, so that the floors here run like its processes

import numpy as np  # noqa: E402
import torch  # noqa: E402

ENV = {**os.environ, "HF_HUB_OFFLINE": "1"}  # subprocesses run in REPO, so `-m TGatedSegmentLib` is this checkout's


def synthetic_ct(depth: int, size: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    body = ((yy - size / 2) / (0.38 * size)) ** 2 + ((xx - size / 2) / (0.45 * size)) ** 2 < 1
    vol = np.where(body, 40.0, -1000.0)[None].repeat(depth, 0)
    return (vol + rng.normal(0, 15, vol.shape)).astype(np.float32)


def write_ct(path: Path, depth: int, size: int) -> Path:
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(synthetic_ct(depth, size).astype(np.int16))
    image.SetSpacing((0.8, 0.8, 3.0))
    sitk.WriteImage(image, str(path))
    return path


def run_process(args: list[str], folder: Path) -> dict:
    """A backend command as its own process: wall and CPU seconds, peak RSS (MB), its JSON events."""
    out = folder / f"out-{time.monotonic_ns()}.txt"
    with open(out, "w") as stdout:
        start = time.perf_counter()
        proc = subprocess.Popen(
            [sys.executable, "-m", "TGatedSegmentLib", *args],
            stdout=stdout,
            stderr=subprocess.STDOUT,
            env=ENV,
            cwd=REPO,
        )
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    lines = out.read_text(encoding="utf-8").splitlines()
    if proc.returncode != 0:
        raise RuntimeError(f"{args[0]} failed ({proc.returncode}): " + "\n".join(lines[-20:]))
    events = [json.loads(line) for line in lines if line.startswith("{")]
    return {
        "wall_s": wall,
        "cpu_s": usage.ru_utime + usage.ru_stime,
        "rss_mb": usage.ru_maxrss / 1024,
        "events": events,
    }


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def floor(checkpoint: Path, precision: str, batch: int, prompts: list[str]) -> dict:
    """Each stage alone, batched as the engine batches it, on ready inputs (seconds per unit)."""
    from TGatedSegmentLib.inference.api import Segmenter
    from TGatedSegmentLib.model.tokenizer import tokenize

    seg = Segmenter(checkpoint, device="cpu", precision=precision)
    seg.engine.prepare(10**6)  # quantise now (int8), outside the timings
    model, size = seg.model, seg.config.preprocessing.image_size
    pixels = torch.randn(batch, 3, size, size)
    ids, mask = tokenize(seg.loaded.tokenizer, prompts)
    k = len(prompts)
    with torch.inference_mode():
        feats = model.encode_images(pixels)  # warm-up
        enc = _timed(lambda: model.encode_images(pixels)) / batch
        window = torch.stack([feats[[0] * model.context_size]] * batch)
        model.fuse(window)
        fuse = (_timed(lambda: model.fuse(window)) / batch) if model.temporal else 0.0
        fused = model.fuse(window)
        text = model.encode_text(ids, mask)
        text_s = _timed(lambda: model.encode_text(ids, mask))
        items = torch.stack([torch.arange(batch).repeat_interleave(k), torch.arange(k).repeat(batch)], dim=1)
        image = model.image_features(pixels)
        model.decode(fused, text, image, items)
        dec = _timed(lambda: model.decode(fused, text, image, items)) / (batch * k)
    return {"encoder_s": enc, "adapter_s": fuse, "decoder_s": dec, "text_s": text_s}


def floor_total(unit: dict, depth: int, k: int) -> tuple[float, float]:
    issue = depth * unit["encoder_s"] + depth * k * unit["decoder_s"]
    return issue, issue + depth * unit["adapter_s"] + unit["text_s"]


def engine_rss(checkpoint: Path, depth: int, size: int) -> float:
    """Peak RSS (MB) of a fresh process streaming ``depth`` slices made on the fly through the engine."""
    code = f"""
import resource, numpy as np
from TGatedSegmentLib.inference.api import Segmenter
seg = Segmenter({str(checkpoint)!r}, device="cpu")
text = seg.engine.text_embeddings(["liver", "spleen"])
rng = np.random.default_rng(0)
read = lambda idx: rng.random((len(idx), {size}, {size}), dtype=np.float32)
for _ in seg.engine.run(read, {depth}, text):
    pass
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=ENV, cwd=REPO)
    return int(out.stdout.strip().splitlines()[-1]) / 1024.0


def naive_per_pair(checkpoint: Path, depth: int, size: int, prompts: list[str], pairs: int) -> float:
    from TGatedSegmentLib.inference.api import Segmenter
    from TGatedSegmentLib.inference.reference import naive_logits

    seg = Segmenter(checkpoint, device="cpu", precision="fp32")
    unit = np.clip((synthetic_ct(depth, size) + 125) / 400, 0, 1)
    start = time.perf_counter()
    for n in range(pairs):
        naive_logits(seg.model, seg.loaded.tokenizer, seg.codec, unit, [prompts[n % len(prompts)]], centres=[n % depth])
    return (time.perf_counter() - start) / pairs


def reference_masks(path: Path, labels_json: Path | None) -> dict[str, np.ndarray]:
    from TGatedSegmentLib.io.writers import read_segmentation

    if str(path).endswith(".seg.nrrd") or labels_json is None:
        masks, names, _ = read_segmentation(path)
        return {n: m for n, m in zip(names, masks) if m.any()}
    import SimpleITK as sitk

    labels = sitk.GetArrayFromImage(sitk.ReadImage(str(path)))
    table = json.loads(labels_json.read_text(encoding="utf-8"))["labels"]
    return {name: labels == value for name, value in table.items() if value and (labels == value).any()}


def agreement(checkpoint: Path, image_path: Path, reference: dict[str, np.ndarray]) -> dict:
    """fp32 and the fast path on one trained model: per-organ Dice of each, voxel agreement."""
    from TGatedSegmentLib.inference.api import Segmenter
    from TGatedSegmentLib.io.volume import read_image

    image = read_image(image_path)
    names = list(reference)
    results = {}
    for precision in ("fp32", "auto"):
        seg = Segmenter(checkpoint, device="cpu", precision=precision)
        results[seg.precision] = seg.segment(image, prompts=names)
    (exact_name, exact), (fast_name, fast) = results.items()
    dice = lambda a, b: 2.0 * np.logical_and(a, b).sum() / max(a.sum() + b.sum(), 1)  # noqa: E731
    organs = {n: (dice(exact.masks[i], reference[n]), dice(fast.masks[i], reference[n])) for i, n in enumerate(names)}
    foreground = (exact.labelmap > 0) | (fast.labelmap > 0)
    return {
        "checkpoint": str(checkpoint),
        "fast": fast_name,
        "organs": organs,
        "max_abs_dice_change": max(abs(a - b) for a, b in organs.values()),
        "voxel_agreement": float((exact.labelmap == fast.labelmap).mean()),
        "foreground_agreement": float((exact.labelmap == fast.labelmap)[foreground].mean())
        if foreground.any()
        else 1.0,
    }


def warm_requests(checkpoint: Path, volume: Path, folder: Path, first: str, second: str) -> dict:
    """Wall seconds of a first request and of a second one with a new prompt, on one warm process."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "TGatedSegmentLib", "serve", "--checkpoint", str(checkpoint), "--device", "cpu"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=ENV,
        cwd=REPO,
    )

    def until(kind):
        for line in proc.stdout:
            event = json.loads(line)
            if event["event"] in (kind, "error"):
                if event["event"] == "error":
                    raise RuntimeError(event)
                return event

    try:
        until("ready")
        seconds = []
        for n, prompt in enumerate((first, second)):
            request = {
                "op": "segment",
                "id": n,
                "input": str(volume),
                "output": str(folder / f"warm{n}.seg.nrrd"),
                "prompts": prompt,
                "overwrite": True,
            }
            start = time.perf_counter()
            proc.stdin.write(json.dumps(request) + "\n")
            proc.stdin.flush()
            done = until("done")
            seconds.append((time.perf_counter() - start, done["slices_encoded"], done["cached"]))
        proc.stdin.write('{"op": "shutdown"}\n')
        proc.stdin.flush()
    finally:
        proc.wait(timeout=60)
    return {
        "first_s": seconds[0][0],
        "second_s": seconds[1][0],
        "second_slices_encoded": seconds[1][1],
        "ratio": seconds[0][0] / seconds[1][0],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny model, small volumes (seconds)")
    parser.add_argument("--arch", help="base architecture (default builtin:rd64-refined; builtin:tiny with --quick)")
    parser.add_argument("--depth", type=int, help="slices of the deep run (default 24; 6 with --quick)")
    parser.add_argument("--size", type=int, help="in-plane size (default 352; 48 with --quick)")
    parser.add_argument("--prompts", type=int, default=13, help="prompts K (default 13, the abdomen13 preset)")
    parser.add_argument("--rss-depths", type=int, nargs=2, help="depths of the peak-RSS runs (default 50 400)")
    parser.add_argument(
        "--trained",
        nargs=3,
        action="append",
        default=[],
        metavar=("CKPT", "IMAGE", "REFERENCE"),
        help="a trained model, a volume and its reference (.seg.nrrd, or a labelmap with --labels)",
    )
    parser.add_argument("--labels", type=Path, help="dataset.json whose 'labels' name the labelmap references' values")
    parser.add_argument(
        "--warm-volume",
        type=Path,
        help="volume for the warm-backend run (default: ts_ct of ../shared/data, else a synthetic 100-slice CT)",
    )
    parser.add_argument(
        "--warm-image-size",
        type=int,
        default=224,
        help="model input size of the warm run "
        "(default 224: the real-size model on smaller slices, so that 100 slices fit the run)",
    )
    parser.add_argument("--naive-pairs", type=int, default=0, help="time the naive scheme on N pairs (default 0: not)")
    parser.add_argument("--skip", nargs="*", default=[], choices=["rss", "warm", "batch", "trained"])
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    args = parser.parse_args(argv)
    quick = args.quick
    arch = args.arch or ("builtin:tiny" if quick else "builtin:rd64-refined")
    depth, size = args.depth or (6 if quick else 24), args.size or (48 if quick else 352)
    rss_depths = args.rss_depths or ((6, 24) if quick else (50, 400))
    from TGatedSegmentLib.model.checkpoint import init_checkpoint
    from TGatedSegmentLib.model.configuration import PreprocessConfig
    from TGatedSegmentLib.vocabulary import ABDOMEN13

    prompts = [o.prompt for o in ABDOMEN13][: args.prompts]
    preset = ", ".join(prompts)
    print(
        f"# inference speed: {arch}, {size}x{size} slices, K={len(prompts)} prompts, CPU {platform.processor() or platform.machine()}"
        f" ({os.cpu_count()} cores, torch {torch.__version__}, {torch.backends.cpu.get_cpu_capability()}), load "
        f"{os.getloadavg()[0]:.1f} at start"
    )
    results: dict = {
        "arch": arch,
        "size": size,
        "depth": depth,
        "prompts": len(prompts),
        "cpu": platform.processor(),
        "cores": os.cpu_count(),
        "load_at_start": os.getloadavg()[0],
    }
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        ckpt = init_checkpoint(arch, folder / "ckpt", tokenizer="compact", seed=0)
        weights_mb = (ckpt / "model.safetensors").stat().st_size / 2**20
        volumes = {d: write_ct(folder / f"ct{d}.nii.gz", d, size) for d in (1, depth)}

        # 1-3: whole processes, fp32 and the fast path, 1 and D slices
        runs = {}
        for precision in ("fp32", "auto"):
            # (quick mode: the fast path at depth only; its 1-slice run is the same code as fp32's)
            for d in (depth,) if quick and precision != "fp32" else (1, depth):
                r = run_process(
                    [
                        "segment",
                        str(volumes[d]),
                        "--prompts",
                        preset,
                        "--checkpoint",
                        str(ckpt),
                        "-o",
                        str(folder / f"o{d}{precision}.seg.nrrd"),
                        "--overwrite",
                        "--device",
                        "cpu",
                        "--progress",
                        "json",
                        "--precision",
                        precision,
                    ],
                    folder,
                )
                done = next(e for e in r["events"] if e["event"] == "done")
                info = next(e for e in r["events"] if e["event"] == "info")
                runs[(precision, d)] = {
                    **{k: v for k, v in r.items() if k != "events"},
                    "engine_s": done["seconds"],
                    "ran": info["precision"],
                }
        units = {p: floor(ckpt, p, 4, prompts) for p in ("fp32", "auto")}
        print(f"\nweights {weights_mb:.0f} MB. Whole `tgated segment` processes (wall / CPU seconds, peak RSS):\n")
        print(
            "| precision (ran) | slices | process wall s | process CPU s | engine s | peak RSS MB | RSS - weights "
            "| floor s | full floor s | process / full floor |"
        )
        print("|---|---|---|---|---|---|---|---|---|---|")
        results["process"] = []
        for (precision, d), r in runs.items():
            issue, full = floor_total(units[precision], d, len(prompts))
            row = {
                "precision": precision,
                "ran": r["ran"],
                "slices": d,
                **r,
                "floor_s": issue,
                "full_floor_s": full,
                "process_over_full_floor": r["wall_s"] / full,
                "process_over_floor": r["wall_s"] / issue,
            }
            results["process"].append(row)
            print(
                f"| {precision} ({r['ran']}) | {d} | {r['wall_s']:.2f} | {r['cpu_s']:.1f} | {r['engine_s']:.2f} | "
                f"{r['rss_mb']:.0f} | {r['rss_mb'] - weights_mb:.0f} | {issue:.2f} | {full:.2f} | "
                f"{r['wall_s'] / full:.2f} |"
            )
        results["units"] = units
        for p, u in units.items():
            print(
                f"\nper unit ({p}): encoder {u['encoder_s'] * 1e3:.0f} ms/slice, adapter {u['adapter_s'] * 1e3:.0f} "
                f"ms/slice, decoder {u['decoder_s'] * 1e3:.2f} ms/slice-prompt, text {u['text_s'] * 1e3:.0f} ms "
                f"for {len(prompts)} prompts"
            )
        speedup = runs[("fp32", depth)]["wall_s"] / runs[("auto", depth)]["wall_s"]
        engine_speedup = runs[("fp32", depth)]["engine_s"] / runs[("auto", depth)]["engine_s"]
        results["fast_path"] = {"process_speedup": speedup, "engine_speedup": engine_speedup}
        print(
            f"\nfast path ({runs[('auto', depth)]['ran']}) vs fp32 at {depth} slices: process {speedup:.2f}x, "
            f"engine {engine_speedup:.2f}x"
        )

        if args.naive_pairs:
            per_pair = naive_per_pair(ckpt, depth, size, prompts, args.naive_pairs)
            naive_s = per_pair * depth * len(prompts)
            results["naive"] = {"per_pair_s": per_pair, "scaled_s": naive_s}
            print(
                f"\nnaive scheme (fp32): {per_pair:.2f} s per slice-prompt pair, {naive_s:.0f} s for {depth} x "
                f"{len(prompts)} pairs: {naive_s / runs[('fp32', depth)]['engine_s']:.0f}x the fp32 engine"
            )

        if "trained" not in args.skip:
            trained = list(args.trained)
            if quick and not trained:  # the suite's check that the table works: the random tiny model
                trained = [(str(ckpt), str(volumes[depth]), None)]
            results["agreement"] = []
            for ck, image, reference in trained:
                masks = (
                    reference_masks(Path(reference), args.labels)
                    if reference
                    else {p: np.ones((depth, size, size), bool) for p in prompts[:2]}
                )
                a = agreement(Path(ck), Path(image), masks)
                results["agreement"].append(a)
                print(
                    f"\nfast path ({a['fast']}) on {ck}: voxel agreement {a['voxel_agreement']:.4%} (foreground "
                    f"{a['foreground_agreement']:.2%}), largest |Dice change| {a['max_abs_dice_change']:.4f}\n"
                )
                print("| organ | Dice fp32 | Dice fast | change |\n|---|---|---|---|")
                for organ, (e, f) in a["organs"].items():
                    print(f"| {organ} | {e:.3f} | {f:.3f} | {f - e:+.4f} |")

        if "rss" not in args.skip:
            results["rss"] = [{"depth": d, "peak_rss_mb": engine_rss(ckpt, d, size)} for d in rss_depths]
            a, b = results["rss"]
            print(
                f"\nengine peak RSS (fresh process, default precision, slices made on the fly): {a['peak_rss_mb']:.0f} MB "
                f"at {a['depth']} slices, {b['peak_rss_mb']:.0f} MB at {b['depth']} "
                f"({b['peak_rss_mb'] - a['peak_rss_mb']:+.0f} MB)"
            )

        if "batch" not in args.skip:
            cases = [write_ct(folder / f"case{i}.nii.gz", 4, size) for i in range(3)]
            r = run_process(
                [
                    "segment",
                    *map(str, cases),
                    "--prompts",
                    preset,
                    "--checkpoint",
                    str(ckpt),
                    "--output-dir",
                    str(folder / "batch"),
                    "--device",
                    "cpu",
                    "--progress",
                    "none",
                ],
                folder,
            )
            rows = json.loads((folder / "batch" / "summary.json").read_text(encoding="utf-8"))["cases"]
            overhead = [row["seconds"] - row["engine_seconds"] for row in rows]
            results["batch"] = {"wall_s": r["wall_s"], "per_case_overhead_s": overhead}
            print(
                f"\nbatch mode, 3 volumes of 4 slices: {r['wall_s']:.1f} s in all; per volume beyond the engine "
                f"(read, checks, write): {', '.join(f'{o:.2f}' for o in overhead)} s"
            )

        if "warm" not in args.skip:
            shared = REPO.parent / "shared" / "data" / "abdomen-sample" / "imagesTr" / "ts_ct_0000.nii.gz"
            volume = args.warm_volume or (
                shared if shared.exists() and not quick else write_ct(folder / "warm.nii.gz", 12 if quick else 100, 128)
            )
            image_size = 64 if quick else args.warm_image_size
            warm_ckpt = init_checkpoint(
                arch,
                folder / "warm-ckpt",
                tokenizer="compact",
                seed=0,
                preprocessing=PreprocessConfig(image_size=image_size),
            )
            w = warm_requests(warm_ckpt, volume, folder, "liver", "spleen")
            results["warm"] = {**w, "volume": str(volume), "image_size": image_size}
            print(
                f"\nwarm backend on {volume.name} ({arch} at {image_size}x{image_size} model input): first request "
                f"{w['first_s']:.1f} s, second (one new prompt) {w['second_s']:.2f} s "
                f"({w['second_slices_encoded']} slices encoded): {w['ratio']:.1f}x"
            )
    results["load_at_end"] = os.getloadavg()[0]
    print(f"\nload average at the end: {results['load_at_end']:.1f}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
