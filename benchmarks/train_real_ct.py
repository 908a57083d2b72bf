"""Train a tiny random-weight model on the real example CT for a fixed CPU budget, then score it on that CT.

    python benchmarks/train_real_ct.py               # 4 minutes of training on ts_ct (../shared/data/abdomen-sample)
    python benchmarks/train_real_ct.py --quick       # 6 s on the small ts_ct_sm (what the test suite runs)

This is an OVERFITTING / PIPELINE check, not a measure of segmentation quality: the model is the
1.7 M-parameter ``builtin:tiny`` CLIPSeg with random weights (no CLIP pretraining), it trains and
is scored on the same volume, and the learning rates are raised to 3e-3 (decoder, adapter) and
1e-3 (encoders): the paper's 1e-6..5e-5 assume a pretrained CLIPSeg. It exercises the whole real path: NIfTI ->
cache -> paper sampling and augmentation -> T-Gated training -> per-epoch validation with the
streaming engine -> best/ -> ``evaluate`` (Dice, NSD, HD95 at native resolution) on the organs
present. Exits cleanly (status 0, a note) when ../shared/data is absent.
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
sys.path.insert(0, str(REPO))
DEFAULT_DATA = REPO.parent / "shared" / "data" / "abdomen-sample"


def single_case_dataset(source: Path, case: str, folder: Path) -> Path:
    """A dataset folder holding only ``case`` (symbolic links, nothing copied)."""
    meta = json.loads((source / "dataset.json").read_text())
    ending = meta.get("file_ending", ".nii.gz")
    for sub, name in (("imagesTr", f"{case}_0000{ending}"), ("labelsTr", f"{case}{ending}")):
        (folder / sub).mkdir(parents=True, exist_ok=True)
        (folder / sub / name).symlink_to(source / sub / name)
    meta["cases"] = {case: meta.get("cases", {}).get(case, {})}
    meta["numTraining"] = 1
    (folder / "dataset.json").write_text(json.dumps(meta))
    return folder


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="6 s on ts_ct_sm at 64x64")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="the abdomen-sample dataset folder")
    parser.add_argument("--case", default=None, help="case to train and score on (default ts_ct; quick: ts_ct_sm)")
    parser.add_argument("--minutes", type=float, default=None, help="training budget (default 4; quick 0.1)")
    parser.add_argument("--image-size", type=int, default=None, help="model input size (default 128; quick 64)")
    parser.add_argument("--lr", type=float, default=3e-3, help="learning rate of decoder and adapter (random weights)")
    parser.add_argument("--lr-encoder", type=float, default=1e-3, help="learning rate of the CLIP encoders")
    parser.add_argument("--output", type=Path, help="keep the run folder here (default: a temporary folder)")
    parser.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    args = parser.parse_args(argv)
    case = args.case or ("ts_ct_sm" if args.quick else "ts_ct")
    minutes = args.minutes if args.minutes is not None else (0.1 if args.quick else 4.0)
    image_size = args.image_size or (64 if args.quick else 128)
    if not (args.data / "dataset.json").is_file() or not (args.data / "imagesTr" / f"{case}_0000.nii.gz").exists():
        print(f"skipped: the example CT '{case}' is not under {args.data} (../shared/data is absent)")
        return 0
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    import torch

    from TGatedSegmentLib.data.dataset import load_dataset
    from TGatedSegmentLib.evaluation.evaluate import evaluate
    from TGatedSegmentLib.model.checkpoint import init_checkpoint
    from TGatedSegmentLib.model.configuration import PreprocessConfig
    from TGatedSegmentLib.training import TrainConfig, train

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data = single_case_dataset(args.data.resolve(), case, tmp / "data")
        dataset = load_dataset(data)
        organs = [dataset.organs[i] for i in sorted(dataset.organs)]
        initial = init_checkpoint("builtin:tiny", tmp / "initial", tokenizer="compact", vocabulary=organs, seed=0,
                                  preprocessing=PreprocessConfig(image_size=image_size))
        run_dir = args.output or tmp / "run"
        config = TrainConfig(data=data, output=run_dir, base=str(initial), epochs=1000, max_seconds=60.0 * minutes,
                             batch_size=8, samples_per_epoch=160 if args.quick else 1600, lr_encoder=args.lr_encoder,
                             lr_decoder=args.lr, lr_adapter=args.lr, device="cpu", num_workers=0,
                             save_every_minutes=None, overwrite=True)
        print(f"training builtin:tiny (random weights, T-Gated) on {case} for {minutes:g} min, {image_size}x"
              f"{image_size}, batch 8, lr {args.lr:g} (encoders {args.lr_encoder:g}), CPU ({os.cpu_count()} cores, "
              f"{platform.machine()}, "
              f"torch {torch.__version__}, {torch.get_num_threads()} threads)", flush=True)
        epochs = []
        started = time.perf_counter()

        def progress(event):
            if event.get("kind") == "epoch":
                epochs.append(event)
                print(f"  epoch {event['epoch']}{' (partial)' if event.get('partial') else ''}: step {event['step']}, "
                      f"loss {event['train_loss']:.3f}, validation mean Dice {event['val_mean_dice']:.3f} "
                      f"({time.perf_counter() - started:.0f} s)", flush=True)

        train(config, progress=progress)
        steps = epochs[-1]["step"] if epochs else 0
        print(f"{steps} steps in {time.perf_counter() - started:.0f} s (validation included)")
        report = evaluate([str(initial), str(run_dir / "best")], dataset, device="cpu",
                          names=["step 0", "trained (best/)"])
        absent = sorted({r["organ"] for r in report.rows if r["ref_voxels"] == 0})
        report.rows = [r for r in report.rows if r["ref_voxels"] > 0]  # score the organs present only
        not_scored = f" (absent from the label, not scored: {', '.join(absent)})" if absent else ""
        print(f"\nper-organ metrics on {case} itself (an overfitting check, not a validation), organs present "
              f"only{not_scored}:\n")
        print(report.to_markdown())
        if args.json:
            Path(args.json).write_text(json.dumps({"case": case, "minutes": minutes, "steps": steps,
                                                   "summary": {n: report.summary(n) for n in report.checkpoints}},
                                                  default=float, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
