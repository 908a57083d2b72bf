"""A stand-in for ``python -m TGatedSegmentLib`` with the same command line and JSON progress protocol,
for tests of the Slicer logic that need a known answer, a given failure or a long run.

``segment``: reads the input with the real reader and writes the output with the real writer on
the input's grid; the "model" is a rule per prompt, defined in physical space so that a test can
check where the segments land:
- "patient left": every voxel whose centre lies on the patient's left of the volume's centre
  (LPS x greater than the centre's), whatever the voxel order and direction of the file;
- "bright": voxels above 500;
- anything else: nothing.
``train``: progress events, then ``OUTPUT/best/config.json`` and a done event.
``devices``: the device report of FAKE_BACKEND_DEVICES (JSON), by default a CPU-only one.

Environment switches (set by the tests): FAKE_BACKEND_ARGV (file to record argv in JSON),
FAKE_BACKEND_INPUT (file to record the input's array shape and IJK-to-RAS in JSON),
FAKE_BACKEND_SLEEP (seconds to sleep after the first progress event, SIGTERM stops it cleanly with
exit 130 like the real CLI), FAKE_BACKEND_ANY ("bright": every prompt gets the "bright" rule, for
name tests), FAKE_BACKEND_FAIL ("crash": traceback and exit 1, no JSON;
"missing-torch": ModuleNotFoundError as a real missing torch prints it; "error": a JSON error event
and exit 2).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path


def emit(event: dict) -> None:
    sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()


def pause() -> None:
    seconds = float(os.environ.get("FAKE_BACKEND_SLEEP", "0") or 0)
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        time.sleep(0.02)


def fail_if_asked() -> None:
    mode = os.environ.get("FAKE_BACKEND_FAIL")
    if mode == "crash":
        print(
            'Traceback (most recent call last):\n  File "fake", line 1\nRuntimeError: boom in the backend',
            file=sys.stderr,
            flush=True,
        )
        sys.exit(1)
    if mode == "missing-torch":
        print("ModuleNotFoundError: No module named 'torch'", file=sys.stderr, flush=True)
        sys.exit(1)
    if mode == "error":
        emit({"event": "error", "kind": "InputError", "message": "the volume is constant", "hint": "Pick another."})
        sys.exit(2)


def segment(args) -> int:
    import numpy as np
    import SimpleITK as sitk

    from TGatedSegmentLib.io.volume import Geometry, read_image
    from TGatedSegmentLib.io.writers import write_segmentation
    from TGatedSegmentLib.vocabulary import resolve_prompts

    emit({"event": "progress", "stage": "load", "done": 0, "total": 1})
    fail_if_asked()
    image = read_image(args.input)
    geometry = Geometry.from_image(image)
    voxels = sitk.GetArrayFromImage(image)
    if os.environ.get("FAKE_BACKEND_INPUT"):  # what the module handed over: its grid in RAS
        Path(os.environ["FAKE_BACKEND_INPUT"]).write_text(
            json.dumps({"shape": list(voxels.shape), "ijk_to_ras": geometry.ijk_to_ras().tolist()})
        )
    organs = resolve_prompts(args.prompts)
    emit({"event": "progress", "stage": "load", "done": 1, "total": 1})
    emit(
        {
            "event": "info",
            "device": "cpu",
            "modality": args.modality,
            "orientation": "fake",
            "slices": int(voxels.shape[0]),
            "prompts": [o.prompt for o in organs],
        }
    )
    emit({"event": "progress", "stage": "segment", "done": 0, "total": int(voxels.shape[0])})
    pause()
    k, j, i = np.indices(voxels.shape)
    ijk = np.stack([i.ravel(), j.ravel(), k.ravel(), np.ones(i.size)])
    lps = (geometry.ijk_to_lps() @ ijk)[:3].reshape((3,) + voxels.shape)
    centre = geometry.ijk_to_lps() @ np.array([(n - 1) / 2 for n in geometry.size] + [1.0])
    masks = []
    for organ in organs:
        if organ.prompt == "patient left":
            masks.append(lps[0] > centre[0])
        elif organ.prompt == "bright" or os.environ.get("FAKE_BACKEND_ANY") == "bright":
            masks.append(voxels > 500)
        else:
            masks.append(np.zeros(voxels.shape, bool))
    masks = np.stack(masks)
    emit({"event": "progress", "stage": "segment", "done": int(voxels.shape[0]), "total": int(voxels.shape[0])})
    emit({"event": "progress", "stage": "write", "done": 0, "total": 1})
    outputs = write_segmentation(args.output, masks, organs, geometry, overwrite=args.overwrite)
    emit({"event": "progress", "stage": "write", "done": 1, "total": 1})
    voxel_ml = float(np.prod(geometry.spacing)) / 1000.0
    emit(
        {
            "event": "done",
            "outputs": [str(p) for p in outputs],
            "device": "cpu",
            "modality": args.modality,
            "seconds": 0.1,
            "segments": [
                {
                    "name": o.name,
                    "prompt": o.prompt,
                    "label": n + 1,
                    "voxels": int(m.sum()),
                    "volume_ml": round(float(m.sum()) * voxel_ml, 3),
                    "threshold": 0.5,
                }
                for n, (o, m) in enumerate(zip(organs, masks))
            ],
        }
    )
    return 0


def train(args) -> int:
    emit({"event": "info", "device": args.device or "cpu", "message": "fake training"})
    fail_if_asked()
    epochs = args.epochs or 2
    for epoch in range(1, epochs + 1):
        emit({"event": "progress", "stage": "epoch", "done": epoch - 1, "total": epochs})
        pause()
        emit({"event": "progress", "stage": "epoch", "done": epoch, "total": epochs, "loss": 1.0 / epoch})
    best = Path(args.output) / "best"
    best.mkdir(parents=True, exist_ok=True)
    (best / "config.json").write_text(json.dumps({"format": "tgated-segment", "training": {"epochs": epochs}}))
    emit({"event": "done", "outputs": [str(best)], "device": args.device or "cpu"})
    return 0


def devices(args) -> int:
    """``tgated devices --progress json``: the report in FAKE_BACKEND_DEVICES (JSON), else a CPU-only one."""
    fail_if_asked()
    report = json.loads(os.environ.get("FAKE_BACKEND_DEVICES") or "{}") or {
        "python": "3.12.10",
        "torch": "2.5.1+cpu",
        "cuda_build": None,
        "devices": [{"id": "cpu", "kind": "cpu", "name": "CPU"}],
    }
    emit({"event": "done", **report})
    return 0


def main() -> int:
    if os.environ.get("FAKE_BACKEND_ARGV"):
        Path(os.environ["FAKE_BACKEND_ARGV"]).write_text(json.dumps(sys.argv[1:]))

    def stop(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    parser = argparse.ArgumentParser(prog="fake-tgated")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("segment")
    p.add_argument("input")
    for flag in (
        "--prompts",
        "--output",
        "--checkpoint",
        "--device",
        "--threshold",
        "--batch-size",
        "--modality",
        "--progress",
    ):
        p.add_argument(flag)
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=segment)
    p = sub.add_parser("train")
    for flag in (
        "--data",
        "--val",
        "--output",
        "--base",
        "--tokenizer",
        "--steps",
        "--device",
        "--seed",
        "--resume",
        "--progress",
    ):
        p.add_argument(flag)
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--no-temporal", action="store_true")
    p.add_argument("--freeze-encoders", action="store_true")
    p.set_defaults(func=train)
    p = sub.add_parser("devices")
    p.add_argument("--progress")
    p.set_defaults(func=devices)
    args = parser.parse_args()
    try:
        return args.func(args)
    except KeyboardInterrupt:
        emit({"event": "cancelled"})
        return 130


if __name__ == "__main__":
    sys.exit(main())
