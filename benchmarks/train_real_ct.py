"""Train on the one labelled real CT with the ``cpu`` recipe, then score it on that CT and on another CT scan.

    python -m benchmarks.train_real_ct               # 10 minutes of --recipe cpu on ts_ct (../shared/data)
    python -m benchmarks.train_real_ct --quick       # seconds on the small ts_ct_sm (what the test suite runs)

What a user gets from ``tgated train --recipe cpu`` on the only labelled CT there is here (``ts_ct``,
TotalSegmentator's own output as pseudo labels): the product's recipe and architecture
(``builtin:cpu``, random weights, no CLIP pretraining), the whole real path (NIfTI -> cache ->
multi-prompt slice batches -> validation with the streaming engine -> best/ -> ``evaluate``).

Two scores, and they mean different things:

* on ``ts_ct`` itself: an OVERFITTING check (the model was trained on that volume);
* on the DICOM series ``dicom-series/ts_ct_dicom`` (a different scan: another field of view,
  0.98 x 0.98 x 2 mm against 3 mm, other frame of reference) with its pseudo labels, on the organs
  labelled there: what one training patient generalises to. One patient cannot teach what varies
  between patients (body size, contrast phase, field of view: each slice is resized to the model's
  input, so a 500 mm field of view shows the organs at 0.7x the size of ts_ct's 366 mm).

Exits cleanly (status 0, a note) when ../shared/data is absent.
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
DEFAULT_DATA = REPO.parent / "shared" / "data" / "abdomen-sample"
DICOM_SERIES = REPO.parent / "shared" / "data" / "dicom-series"


def single_case_dataset(source: Path, case: str, folder: Path) -> Path:
    """A dataset folder holding only ``case`` (symbolic links, nothing copied)."""
    meta = json.loads((source / "dataset.json").read_text(encoding="utf-8"))
    ending = meta.get("file_ending", ".nii.gz")
    for sub, name in (("imagesTr", f"{case}_0000{ending}"), ("labelsTr", f"{case}{ending}")):
        (folder / sub).mkdir(parents=True, exist_ok=True)
        (folder / sub / name).symlink_to(source / sub / name)
    meta["cases"] = {case: meta.get("cases", {}).get(case, {})}
    meta["numTraining"] = 1
    (folder / "dataset.json").write_text(json.dumps(meta))
    return folder


def dicom_dataset(series: Path, label: Path, labels: dict, folder: Path) -> Path | None:
    """The DICOM series (read with SimpleITK, written as NIfTI) and its label as a one-case dataset."""
    import numpy as np
    import SimpleITK as sitk

    if not series.is_dir() or not label.is_file():
        return None
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(series)))
    for sub in ("imagesTr", "labelsTr"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(reader.Execute(), str(folder / "imagesTr" / "ts_ct_dicom_0000.nii.gz"))
    (folder / "labelsTr" / "ts_ct_dicom.nii.gz").symlink_to(label)
    present = sorted(int(v) for v in np.unique(sitk.GetArrayFromImage(sitk.ReadImage(str(label)))) if v)
    meta = {
        "labels": labels,
        "file_ending": ".nii.gz",
        "numTraining": 1,
        "channel_names": {"0": "CT"},
        "cases": {"ts_ct_dicom": {"modality": "CT", "annotated": present}},
    }
    (folder / "dataset.json").write_text(json.dumps(meta))
    return folder


def scored_report(report):
    """Only the organs present in the reference (pseudo labels: absent organs are not scored)."""
    absent = sorted({r["organ"] for r in report.rows if r["ref_voxels"] == 0})
    report.rows = [r for r in report.rows if r["ref_voxels"] > 0]
    return report, (f" (absent from the label, not scored: {', '.join(absent)})" if absent else "")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="seconds on ts_ct_sm at 64x64")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="the abdomen-sample dataset folder")
    parser.add_argument("--case", default=None, help="case to train on (default ts_ct; quick: ts_ct_sm)")
    parser.add_argument("--minutes", type=float, default=None, help="training budget (default 10; quick 0.1)")
    parser.add_argument("--output", type=Path, help="keep the run folder here (default: a temporary folder)")
    parser.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    args = parser.parse_args(argv)
    case = args.case or ("ts_ct_sm" if args.quick else "ts_ct")
    minutes = args.minutes if args.minutes is not None else (0.1 if args.quick else 10.0)
    if not (args.data / "dataset.json").is_file() or not (args.data / "imagesTr" / f"{case}_0000.nii.gz").exists():
        print(f"skipped: the example CT '{case}' is not under {args.data} (../shared/data is absent)")
        return 0
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    import torch

    from TGatedSegmentLib.data.dataset import load_dataset
    from TGatedSegmentLib.evaluation.evaluate import evaluate
    from TGatedSegmentLib.training import TrainConfig, train

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data = single_case_dataset(args.data.resolve(), case, tmp / "data")
        dataset = load_dataset(data)
        run_dir = args.output or tmp / "run"
        quick = (
            {"image_size": 64, "batch_size": 4, "chunk_slices": 4, "warmup_steps": 2, "steps": 6} if args.quick else {}
        )
        config = TrainConfig(
            data=data,
            output=run_dir,
            recipe="cpu",
            max_seconds=60.0 * minutes,
            device="cpu",
            num_workers=0,
            save_every_minutes=None,
            overwrite=True,
            **quick,
        )
        print(
            f"training with --recipe cpu ({config.base}, random weights, {config.image_size} px, T-Gated) on {case} "
            f"for {minutes:g} min, CPU ({os.cpu_count()} cores, {platform.machine()}, torch {torch.__version__}, "
            f"{torch.get_num_threads()} threads)",
            flush=True,
        )
        epochs = []
        started = time.perf_counter()

        def progress(event):
            if event.get("kind") == "epoch":
                epochs.append(event)
                print(
                    f"  epoch {event['epoch']}{' (partial)' if event.get('partial') else ''}: step {event['step']}, "
                    f"loss {event['train_loss']:.3f}, validation mean Dice {event['val_mean_dice']:.3f} "
                    f"({time.perf_counter() - started:.0f} s)",
                    flush=True,
                )

        train(config, progress=progress)
        steps = epochs[-1]["step"] if epochs else 0
        print(f"{steps} steps in {time.perf_counter() - started:.0f} s (validation included)")
        best = str(run_dir / "best")
        figures = {"case": case, "minutes": minutes, "steps": steps}
        report, note = scored_report(evaluate([best], dataset, device="cpu", names=["trained (best/)"]))
        print(
            f"\nper-organ metrics on {case} itself (an overfitting check, not a validation), organs present "
            f"only{note}:\n"
        )
        print(report.to_markdown())
        figures["training_volume"] = report.summary("trained (best/)")
        labels = json.loads((args.data / "dataset.json").read_text(encoding="utf-8"))["labels"]
        other = dicom_dataset(
            DICOM_SERIES / "ts_ct_dicom", DICOM_SERIES / "ts_ct_dicom_label.nii.gz", labels, tmp / "dicom"
        )
        if other is not None and not args.quick:
            report, note = scored_report(evaluate([best], load_dataset(other), device="cpu", names=["trained (best/)"]))
            print(
                f"\nper-organ metrics on another CT scan (the DICOM series ts_ct_dicom, pseudo labels), organs "
                f"present only{note}:\n"
            )
            print(report.to_markdown())
            figures["other_scan"] = report.summary("trained (best/)")
        if args.json:
            Path(args.json).write_text(json.dumps(figures, default=float, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
