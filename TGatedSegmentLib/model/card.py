"""What a checkpoint is, in words: the facts ``tgated models list`` shows and the model card
(``README.md``) that ``tgated models export`` and ``push`` put next to the weights.

Everything is read from the checkpoint's own files, without torch: ``config.json`` (architecture,
preprocessing, vocabulary and the trainer's metadata under ``training``: recipe, data, per-organ
validation Dice per validation), the header of ``model.safetensors`` (parameter count) and, when
one was attached at import, ``evaluation.json`` (a ``tgated evaluate`` summary on a test set). So
the Slicer module can show the same card in its own Python, and a card never claims a number the
files do not hold.
"""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path

from ..io import jsonfile

CONFIG_NAME, WEIGHTS_NAME, EVALUATION_NAME, CARD_NAME = (
    "config.json",
    "model.safetensors",
    "evaluation.json",
    "README.md",
)


# -- reading ---------------------------------------------------------------------------------------


def read_json(path: Path) -> dict | None:
    """The JSON object in ``path``; None when it is missing, unreadable or not an object."""
    raw = jsonfile.read_json(path)
    return raw if isinstance(raw, dict) else None


def safetensors_header(path: Path) -> dict:
    """The JSON header of a ``.safetensors`` file (tensor names, dtypes, shapes), read without torch."""
    with open(path, "rb") as handle:
        (size,) = struct.unpack("<Q", handle.read(8))
        if not 2 <= size <= 100_000_000:
            raise ValueError(f"header size {size} is not plausible")
        header = json.loads(handle.read(size))
    if not isinstance(header, dict):
        raise ValueError("the header is not a JSON object")
    return header


def parameter_count(path: Path) -> int | None:
    """Number of values stored in a ``.safetensors`` file (None if it cannot be read)."""
    try:
        header = safetensors_header(path)
    except (OSError, ValueError, struct.error):
        return None
    return sum(math.prod(t.get("shape", [])) for k, t in header.items() if k != "__metadata__")


def folder_size(folder: Path) -> int:
    return sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file())


# -- facts -------------------------------------------------------------------------------------------


def vision_name(clipseg: dict, short: bool = False) -> str:
    """``ViT-B/16`` for CLIPSeg's own encoder, else its sizes."""
    vision = clipseg.get("vision_config") or {}
    layers, width, patch = vision.get("num_hidden_layers"), vision.get("hidden_size"), vision.get("patch_size")
    if (layers, width, patch) == (12, 768, 16):
        return "ViT-B/16"
    return f"ViT {layers}x{width}/{patch}" if short else f"ViT {layers} layers x {width} wide, {patch}-px patches"


def _slices(n: int) -> str:
    return f"{n} slice" + ("s" if n > 1 else "")


def _mix(refine: dict) -> str:
    """How a window head's slices meet (nothing to say for a 1-slice head or a linear mix)."""
    return (
        " mixed through a hidden layer" if refine.get("window", 1) > 1 and refine.get("window_mix") == "hidden" else ""
    )


def architecture(raw: dict, short: bool = False) -> str:
    """One line: the adapter (or none) on the CLIPSeg encoder, plus the extra heads."""
    adapter = raw.get("adapter")
    clip = f"CLIPSeg {vision_name(raw.get('clipseg_config') or {}, short)}"
    if not adapter:
        head = "slice-wise CLIPSeg (no temporal adapter)" if not short else "slice-wise"
    elif short:
        head = f"T-Gated {adapter.get('mode', 'reference')}"
    else:
        head = (
            f"T-Gated temporal adapter ({adapter.get('mode', 'reference')} wiring, {adapter.get('context_size')} "
            f"slices, width {adapter.get('proj_dim')}, {adapter.get('num_layers')} layers"
            f"{', probabilistic attention' if adapter.get('probabilistic') else ''})"
        )
    extras = []
    if raw.get("refine"):
        extras.append(
            "refinement head"
            if short
            else f"full-resolution refinement head ({raw['refine'].get('channels')} channels, "
            f"{_slices(raw['refine'].get('window', 1))}{_mix(raw['refine'])})"
        )
    if raw.get("peft"):
        extras.append(f"PEFT {raw['peft'].get('variant')}")
    return (
        f"{head} + {clip}" + "".join(f" + {e}" for e in extras)
        if short
        else f"{head} on {clip}" + "".join(f"; {e}" for e in extras)
    )


def _validation_entry(training: dict) -> dict | None:
    """The history entry of the weights this checkpoint holds (its selection: best or last)."""
    history = [h for h in training.get("history") or [] if isinstance(h, dict) and h.get("val_dice")]
    if not history:
        return None
    best = training.get("best") or {}
    if training.get("selected") == "best" and best.get("step") is not None:
        chosen = [h for h in history if h.get("step") == best["step"]]
        if chosen:
            return chosen[-1]
    return history[-1]


def measured_dice(raw: dict, evaluation: dict | None) -> dict | None:
    """Per-organ Dice with where it was measured: an attached evaluation first, else the trainer's
    validation of these weights; None when the files hold neither."""
    if evaluation and isinstance(evaluation.get("summary"), dict):
        summary = evaluation["summary"]
        organs = {
            o: {"dice": s.get("dice"), "std": s.get("dice_std"), "n": s.get("n")}
            for o, s in (summary.get("per_organ") or {}).items()
        }
        return {
            "kind": "evaluation",
            "mean": (summary.get("overall") or {}).get("dice"),
            "per_organ": organs,
            "dataset": evaluation.get("dataset"),
            "cases": evaluation.get("cases"),
        }
    training = raw.get("training") or {}
    entry = _validation_entry(training)
    if entry is None:
        return None
    data = training.get("data") or {}
    return {
        "kind": "validation",
        "mean": entry.get("val_mean_dice"),
        "per_organ": {o: {"dice": v, "std": None, "n": None} for o, v in entry["val_dice"].items()},
        "dataset": data.get("val"),
        "cases": entry.get("val_cases"),
        "step": entry.get("step"),
    }


def model_facts(folder: str | Path, name: str | None = None) -> dict:
    """Everything the list, the card and the Slicer panel show about one checkpoint folder."""
    folder = Path(folder)
    raw = read_json(folder / CONFIG_NAME) or {}
    training = raw.get("training") or {}
    evaluation = read_json(folder / EVALUATION_NAME)
    data = training.get("data") or {}
    organs = [o.get("name") for o in raw.get("vocabulary") or [] if isinstance(o, dict)]
    return {
        "name": name or folder.name,
        "path": str(folder),
        "architecture": architecture(raw),
        "architecture_short": architecture(raw, short=True),
        "parameters": parameter_count(folder / WEIGHTS_NAME),
        "size_bytes": folder_size(folder),
        "partial_weights": bool(raw.get("partial_weights")),
        "base_model": raw.get("base_model_id"),
        "started_from": training.get("base"),
        "recipe": training.get("recipe") or (training.get("source") and "imported"),
        "trained": bool(training),
        "training": {
            "producer": training.get("producer") or training.get("source"),
            "data": data.get("train"),
            "train_cases": len(data.get("train_cases") or []),
            "validation": data.get("val"),
            "steps": training.get("step"),
            "epochs": training.get("epochs_completed"),
            "seconds": training.get("seconds"),
            "imported_from": training.get("imported_from"),
        },
        "organs": organs,
        "preprocessing": raw.get("preprocessing") or {},
        "dice": measured_dice(raw, evaluation),
    }


def dice_summary(facts: dict) -> str:
    """``0.821 (validation)`` or ``-``: the one Dice figure of a model list."""
    dice = facts.get("dice")
    if not dice or not isinstance(dice.get("mean"), (int, float)) or math.isnan(dice["mean"]):
        return "-"
    return f"{dice['mean']:.3f} ({dice['kind']})"


def human_size(size: int | None) -> str:
    if size is None:
        return "?"
    value = float(size)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return "?"


# -- the card ----------------------------------------------------------------------------------------

LICENCE_CAVEAT = (
    "No licence is granted by this card. These weights derive from the CLIPSeg base model and from the "
    "training data; both come with their own terms (the base model's page on the Hugging Face Hub, and "
    "each dataset's licence, several of which allow research use only). Whoever shares the model must "
    "state the terms it is shared under. Not a medical device: for research, with a human checking every "
    "result."
)


def render_card(facts: dict) -> str:
    """The model card (``README.md``, Hugging Face front matter) for :func:`model_facts`."""
    name = facts["name"]
    front = [
        "---",
        "library_name: tgated-segment",
        "license: other",
        "pipeline_tag: image-segmentation",
        "tags: [medical-imaging, segmentation, clipseg, t-gated, 3d-slicer]",
    ]
    if facts.get("base_model") and "/" in str(facts["base_model"]):
        front.append(f"base_model: {facts['base_model']}")
    lines = front + [
        "---",
        "",
        f"# {name}",
        "",
        "Text-prompted 3D organ segmentation of CT/MR volumes with TGatedSegment "
        "(CLIPSeg + the T-Gated temporal adapter).",
        "",
        "## Architecture",
        "",
        f"- {facts['architecture']}",
    ]
    if facts.get("parameters"):
        stored = " (stored in this checkpoint; the rest comes from its base)" if facts.get("partial_weights") else ""
        lines.append(f"- Parameters: {facts['parameters']:,}{stored}; files: {human_size(facts.get('size_bytes'))}")
    pre = facts.get("preprocessing") or {}
    if pre:
        lines.append(
            f"- Input: {pre.get('image_size')} px slices, CT window {pre.get('ct_window')} HU, MR "
            f"percentiles {pre.get('mr_percentiles')}, slice layout {pre.get('slice_layout')}"
        )
    if facts.get("organs"):
        lines.append(f"- Organ vocabulary: {', '.join(facts['organs'])}")
    lines += ["", "## Training", ""] + _training_lines(facts)
    lines += ["", "## Measured Dice", ""] + _dice_lines(facts.get("dice"))
    lines += [
        "",
        "## How to use it",
        "",
        "```sh",
        "pip install tgated-segment   # or a checkout: pip install -e .",
        f"tgated models import {name}.zip            # or: tgated models pull OWNER/REPO --name {name}",
        f'tgated segment ct.nii.gz --prompts "liver, left kidney" --checkpoint {name} -o ct.seg.nrrd',
        "```",
        "",
        f'From Python: `Segmenter("{name}").segment("ct.nii.gz", prompts="liver")`. In 3D Slicer: the '
        f"TGatedSegment module's model field takes the name `{name}`.",
        "",
        "## Licence",
        "",
        LICENCE_CAVEAT,
        "",
    ]
    return "\n".join(lines)


def _training_lines(facts: dict) -> list[str]:
    t = facts.get("training") or {}
    if not facts.get("trained"):
        return ["- Untrained: random adapter weights (made by `tgated init`); for tests and as a starting point."]
    if t.get("imported_from"):
        return [f"- Imported from `{t['imported_from']}` ({t.get('producer')}); its training is not recorded here."]
    lines = [
        f"- Recipe: `{facts.get('recipe')}`; started from `{facts.get('started_from')}`",
        f"- Training data: `{t.get('data')}` ({t.get('train_cases')} case(s))",
        f"- Validation: {t.get('validation')}",
    ]
    if t.get("steps") is not None:
        seconds = t.get("seconds")
        when = f", {seconds / 60:.1f} min" if isinstance(seconds, (int, float)) else ""
        lines.append(f"- {t['steps']} steps, {t.get('epochs')} epoch(s) completed{when}")
    return lines


def _dice_lines(dice: dict | None) -> list[str]:
    if not dice:
        return [
            "Not measured: these files hold no validation or evaluation result. Measure it with "
            "`tgated evaluate --checkpoint NAME --data TEST_DATASET --output report`."
        ]
    if dice["kind"] == "evaluation":
        head = f"`tgated evaluate` on `{dice.get('dataset')}` (mean ± std over the cases):"
    else:
        head = (
            f"The trainer's validation of these weights (step {dice.get('step')}, {dice.get('cases')} volume(s) of "
            f"{dice.get('dataset')}); validation selected the weights, so a separate test set scores lower:"
        )
    lines = [head, "", "| organ | Dice | cases |", "|---|---:|---:|"]
    for organ, stats in dice["per_organ"].items():
        value = stats.get("dice")
        cell = "–" if not isinstance(value, (int, float)) or math.isnan(value) else f"{value:.3f}"
        if cell != "–" and isinstance(stats.get("std"), (int, float)) and not math.isnan(stats["std"]):
            cell += f" ± {stats['std']:.3f}"
        lines.append(f"| {organ} | {cell} | {stats.get('n') if stats.get('n') is not None else ''} |")
    mean = dice.get("mean")
    if isinstance(mean, (int, float)) and not math.isnan(mean):
        lines.append(f"| **mean** | **{mean:.3f}** | |")
    return lines
