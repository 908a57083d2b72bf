"""Unseen patients: 4-fold cross-validation of a training recipe on the 8 CHAOS T2 MRs.

    python -m benchmarks.chaos_folds                          # --recipe cpu, 10 minutes per fold
    python -m benchmarks.chaos_folds --folds 4 --set organ_intensity=0.3
    python -m benchmarks.chaos_folds --quick                  # seconds: one fold, a few steps (the test suite)

Each fold trains on 6 patients (``tgated train --recipe cpu --max-minutes 10``, validation on the
training volumes as the CLI does without ``--val``) and scores the other 2 with ``evaluate`` (liver,
kidneys, spleen: the organs CHAOS annotates), folds of 2 test patients in case order. ``--steps N``
fixes the steps instead of the time (a busy machine then costs time, not quality). Prints one row
per fold and the mean over folds; ``--json`` keeps the figures. Exits cleanly (status 0, a note)
without ``../shared/data/chaos-t2``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "chaos-t2"
ORGANS = ("liver", "right_kidney", "left_kidney", "spleen")


def subset(source: Path, cases: list[str], folder: Path) -> Path:
    """A dataset folder holding only ``cases`` (symbolic links, nothing copied)."""
    meta = json.loads((source / "dataset.json").read_text(encoding="utf-8"))
    ending = meta.get("file_ending", ".nii.gz")
    for sub in ("imagesTr", "labelsTr"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    for case in cases:
        (folder / "imagesTr" / f"{case}_0000{ending}").symlink_to(source / "imagesTr" / f"{case}_0000{ending}")
        (folder / "labelsTr" / f"{case}{ending}").symlink_to(source / "labelsTr" / f"{case}{ending}")
    meta["cases"] = {c: meta.get("cases", {}).get(c, {}) for c in cases}
    meta["numTraining"] = len(cases)
    (folder / "dataset.json").write_text(json.dumps(meta))
    return folder


def parse_settings(items: list[str]) -> dict:
    out = {}
    for item in items:
        key, _, value = item.partition("=")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="one fold, a few steps at 64 px")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="the chaos-t2 dataset folder")
    parser.add_argument("--folds", type=int, nargs="+", help="which folds (1-4; default all, quick: 1)")
    parser.add_argument("--minutes", type=float, default=10.0, help="training budget per fold (default 10)")
    parser.add_argument("--steps", type=int, help="train this many steps instead (no time cap)")
    parser.add_argument("--set", nargs="*", default=[], metavar="FIELD=VALUE", help="TrainConfig settings")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", type=Path, help="keep the runs here (default: a temporary folder)")
    parser.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    args = parser.parse_args(argv)
    if not (args.data / "dataset.json").is_file():
        print(f"skipped: no CHAOS T2 dataset under {args.data} (../shared/data is absent)")
        return 0
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import numpy as np
    import torch

    from TGatedSegmentLib.data.dataset import load_dataset
    from TGatedSegmentLib.evaluation.evaluate import evaluate
    from TGatedSegmentLib.training import TrainConfig, train

    cases = sorted(json.loads((args.data / "dataset.json").read_text(encoding="utf-8"))["cases"])
    folds = args.folds or ([1] if args.quick else [1, 2, 3, 4])
    settings = parse_settings(args.set)
    if args.quick:
        settings = {"image_size": 64, "batch_size": 4, "chunk_slices": 4, "warmup_steps": 2, **settings}
        args.steps = args.steps or 4
    budget = {"steps": args.steps, "max_seconds": 36000.0} if args.steps else {"max_seconds": 60.0 * args.minutes}
    print(
        f"CHAOS T2 folds {folds}: --recipe cpu {settings or ''} "
        f"{'%d steps' % args.steps if args.steps else '%g min' % args.minutes} per fold; CPU ({os.cpu_count()} cores, "
        f"{platform.machine()}, torch {torch.__version__}, {torch.get_num_threads()} threads)",
        flush=True,
    )
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        for fold in folds:
            test = cases[2 * (fold - 1) : 2 * fold]
            train_cases = [c for c in cases if c not in test]
            root = work / f"fold{fold}"
            data = subset(args.data.resolve(), train_cases, root / "train")
            held = subset(args.data.resolve(), test, root / "test")
            started = time.perf_counter()
            config = TrainConfig(
                data=data,
                output=root / "run",
                recipe="cpu",
                device="cpu",
                num_workers=0,
                seed=args.seed,
                save_every_minutes=None,
                overwrite=True,
                **budget,
                **settings,
            )
            train(config)
            seconds = time.perf_counter() - started
            step = json.loads((root / "run" / "best" / "config.json").read_text(encoding="utf-8"))["training"]["step"]
            report = evaluate([str(root / "run" / "best")], load_dataset(held), device="cpu", names=["best"])
            dice = {o: float(np.nanmean([r["dice"] for r in report.rows if r["organ"] == o])) for o in ORGANS}
            per_case = {c: {r["organ"]: r["dice"] for r in report.rows if r["case"] == c} for c in test}
            rows.append(
                {"fold": fold, "test": test, "best_step": step, "seconds": seconds, "dice": dice, "per_case": per_case}
            )
            print(
                f"fold {fold} ({', '.join(test)}): best step {step}, {seconds:.0f} s, "
                + ", ".join(f"{o} {dice[o]:.3f}" for o in ORGANS),
                flush=True,
            )
    print("\n| fold (test patients) | best step | " + " | ".join(o.replace("_", " ") for o in ORGANS) + " |")
    print("|---|---:|" + "---:|" * len(ORGANS))
    for r in rows:
        print(
            f"| {r['fold']} ({', '.join(r['test'])}) | {r['best_step']} | "
            + " | ".join(f"{r['dice'][o]:.3f}" for o in ORGANS)
            + " |"
        )
    means = {o: float(np.mean([r["dice"][o] for r in rows])) for o in ORGANS}
    print(f"| **mean of {len(rows)} folds** | | " + " | ".join(f"**{means[o]:.3f}**" for o in ORGANS) + " |")
    if args.json:
        Path(args.json).write_text(
            json.dumps({"settings": settings, "budget": budget, "folds": rows, "mean": means}, indent=1, default=float)
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
