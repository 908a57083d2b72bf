"""Checks that run before any training: bad data or a bad output folder fail in seconds, writing nothing.

Imports neither torch nor transformers, so ``tgated train`` answers a typo before the model
libraries have even loaded. The trainer calls the same :func:`preflight` from Python.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, replace
from pathlib import Path

from ..data.checks import validate_label_values
from ..data.dataset import Dataset, load_dataset
from ..errors import InputError, OutputError
from ..io.atomic import check_writable, recover_dir
from ..io.jsonfile import read_json
from .config import TrainConfig, structural_differences
from .dataset import split_dataset
from .options import may_change_text, predating

log = logging.getLogger(__name__)

RESUME_DIR, BEST_DIR, LAST_DIR = "resume", "best", "last"
RUN_FILE = "run.json"  # in resume/: the settings and counters, readable without torch
RUN_ITEMS = (RESUME_DIR, BEST_DIR, LAST_DIR, "cache", "logs")  # logs: training/run_log.py


@dataclass
class Plan:
    """What preflight found: the datasets to train and validate on, and the run folder's state."""

    config: TrainConfig
    train: Dataset
    val: Dataset
    val_label: str  # how the validation set was chosen, for the metadata
    labels_present: dict[str, tuple[int, ...]]  # case id -> label ids in its label file
    resume_state: dict | None  # resume/run.json of the run being continued


def parse_val(spec: str | None) -> tuple[str, int | None]:
    """``None`` -> ("train", None); ``"split:N"`` -> ("split", N); anything else is a dataset path."""
    if spec is None or str(spec).strip() == "":
        return "train", None
    match = re.fullmatch(r"\s*split\s*:\s*(\S+)\s*", str(spec))
    if match:
        try:
            return "split", int(match.group(1))
        except ValueError:
            raise InputError(
                f"--val '{spec}' does not give a number of cases",
                "Write it as split:N, e.g. split:2 to hold out two cases.",
            ) from None
    return "path", None


def read_run_state(run_dir: str | Path) -> dict | None:
    """The saved settings and counters of a run folder, or None when it has no resume state."""
    folder = recover_dir(Path(run_dir).expanduser() / RESUME_DIR)
    file = folder / RUN_FILE
    return read_json(
        file,
        lambda exc: InputError(
            f"cannot read the resume state {file} ({exc})",
            "The run folder is damaged: start a new run with --overwrite.",
        ),
    )


def resume_config(run_dir: str | Path, **overrides) -> TrainConfig:
    """The settings a run folder was started with, with ``overrides`` (e.g. more epochs) applied."""
    state = read_run_state(run_dir)
    if state is None:
        raise InputError(
            f"'{run_dir}' has no resume state ({RESUME_DIR}/{RUN_FILE})",
            "Pass the run folder of a run started by `tgated train` (its --output).",
        )
    values = {**predating(), **state["config"]}
    values.update({k: v for k, v in overrides.items() if v is not None})
    values.update(output=str(run_dir), resume=True, overwrite=False)
    return TrainConfig.from_dict(values)


def _check_run_dir(config: TrainConfig) -> dict | None:
    run = config.run_dir
    if run.exists() and not run.is_dir():
        raise OutputError(f"'{run}' is a file, not a run folder", "Choose another --output.")
    check_writable(run / "probe")
    state = read_run_state(run) if run.is_dir() else None
    if config.resume:
        if state is None:
            raise InputError(
                f"cannot resume: '{run}' has no resume state ({RESUME_DIR}/{RUN_FILE})",
                "Start a new run without --resume, or pass the folder of an earlier run.",
            )
        changed = structural_differences(state.get("config", {}), config)
        if changed:
            raise InputError(
                f"cannot resume '{run}' with different settings ({'; '.join(changed)})",
                f"Resume with the run's own settings (only {may_change_text()} may change), or start a new run.",
            )
        return state
    if run.is_dir() and any(run.iterdir()) and not config.overwrite:
        existing = [name for name in RUN_ITEMS if (run / name).exists()]
        what = f"holds an earlier run ({', '.join(existing)})" if existing else "is not empty"
        raise OutputError(
            f"the run folder '{run}' {what}",
            f"Continue it with --resume {run}, replace it with --overwrite, or choose another --output.",
        )
    return None


def _check_labels(dataset: Dataset) -> dict[str, tuple[int, ...]]:
    present = validate_label_values(dataset)
    if not any(present.values()):
        raise InputError(
            f"no case of {dataset.root} labels any organ (every label file is all background)",
            "Check that the label files belong to the images and use the ids of dataset.json.",
        )
    return present


def _check_base(config: TrainConfig) -> None:
    """What can be told about --base without loading it (a hub id is only tried later, offline-safe)."""
    from ..model.architectures import ARCHITECTURES, PREFIX
    from ..model.source import SourceKind, classify_source

    if config.resume:
        return  # the model comes from RUN_DIR/resume
    base = str(config.base)
    source = classify_source(base)
    if source.kind is SourceKind.BUILTIN and base[len(PREFIX) :] not in ARCHITECTURES:
        raise InputError(
            f"unknown built-in architecture '{base}'", f"Use one of: {', '.join(PREFIX + k for k in ARCHITECTURES)}."
        )
    if source.random_weights and not config.tokenizer:
        raise InputError(
            f"the base '{base}' is an architecture with random weights and no tokenizer",
            "Pass --tokenizer with a CLIP tokenizer folder or hub id, or --tokenizer compact.",
        )
    if source.is_folder and not (source.path / "config.json").is_file():
        raise InputError(
            f"the base folder '{base}' has no config.json",
            "Pass a checkpoint folder (tgated init/train/import), a CLIPSeg model folder or config.",
        )
    if base.startswith((".", "/", "~")) and source.kind is SourceKind.MISSING:
        raise InputError(f"the base '{base}' does not exist", "Check the path given as --base.")


@dataclass
class BaseInfo:
    """What the fine-tuning checks need to know about the starting model (read without torch)."""

    text_width: int
    projection_dim: int
    peft: dict | None = None  # the base's own PEFT adapters (PeftConfig fields), if it has some


def read_base_info(base: str) -> BaseInfo | None:
    """From a ``builtin:`` name, a CLIPSeg config file or folder, or a checkpoint folder; None for a
    hub id (known only once loaded: the trainer repeats the checks on the loaded model)."""
    from ..model.architectures import ARCHITECTURES, PREFIX
    from ..model.source import SourceKind, classify_source

    base = str(base)
    source = classify_source(base)
    raw = None
    if source.kind is SourceKind.BUILTIN:
        raw = ARCHITECTURES.get(base[len(PREFIX) :])
    elif source.kind is SourceKind.CONFIG_FILE:
        raw = read_json(source.path)
    elif source.is_folder:
        raw = read_json(source.path / "config.json")
    if not isinstance(raw, dict):
        return None
    clipseg = raw.get("clipseg_config", raw) if raw.get("format") == "tgated-segment" else raw
    peft = raw.get("peft") if raw.get("format") == "tgated-segment" else None
    text = clipseg.get("text_config") or {}
    return BaseInfo(int(text.get("hidden_size", 512)), int(clipseg.get("projection_dim", 512)), peft or None)


def _peft_summary(settings: dict) -> str:
    parts = ",".join(p for p in ("vision", "text", "conditional") if settings.get(p))
    return f"{settings.get('variant')} (dim {settings.get('dim')}, parts {parts or 'none'})"


def check_finetune(config: TrainConfig, info: BaseInfo | None) -> None:
    """Reject fine-tuning settings that cannot work with this base, in one line each."""
    wanted = config.peft_settings()
    if wanted is not None and wanted["dim"] is None:
        wanted["dim"] = 64 if wanted["variant"] == "dense" else 512  # PeftConfig's defaults
    own = info.peft if info is not None else None
    if own and wanted:
        keys = ("variant", "dim", "vision", "text", "conditional")
        if any(own.get(k) != wanted[k] for k in keys):
            raise InputError(
                f"the base already has PEFT adapters {_peft_summary(own)}, not the {_peft_summary(wanted)} asked for",
                "Omit --peft (and --peft-dim/--peft-parts) to keep training the base's adapters, or start "
                "from a base without them.",
            )
    effective = wanted or own
    if (
        info is not None
        and effective
        and effective.get("variant") == "shallow"
        and effective.get("text")
        and info.text_width != info.projection_dim
    ):
        raise InputError(
            f"--peft shallow with text adapters needs the base's text width ({info.text_width}) to equal "
            f"its projection dim ({info.projection_dim}): they add EOT states to the prompt embedding",
            "Use --peft-parts vision,conditional, or --peft dense.",
        )
    if effective is None and config.lr_peft is not None and info is not None:
        raise InputError("--lr-peft without PEFT adapters", "Add --peft dense|shallow, or drop --lr-peft.")
    if config.finetune == "adapters" and not config.temporal and effective is None and info is not None:
        raise InputError(
            "--finetune adapters has nothing to train: no temporal adapter (--no-temporal) and no PEFT adapters",
            "Add --peft dense|shallow, drop --no-temporal, or use --finetune decoder.",
        )


def preflight(config: TrainConfig) -> Plan:
    """Load and check the datasets and the run folder; raise a one-line error before anything is written."""
    state = _check_run_dir(config)
    _check_base(config)
    if not config.resume:
        check_finetune(config, read_base_info(config.base))
    train = load_dataset(config.data)
    kind, n_val = parse_val(config.val)
    if kind == "split":
        train, val = split_dataset(train, n_val, seed=config.seed)
        if not val.cases:
            raise InputError("split:0 holds out no validation case", "Use split:N with N >= 1, or omit --val.")
        val_label = f"split:{n_val} of {config.data} (seed {config.seed})"
    elif kind == "path":
        val = load_dataset(config.val)
        if val.label_names != train.label_names:
            missing = {i: n for i, n in val.label_names.items() if train.label_names.get(i) != n}
            raise InputError(
                f"the validation labels differ from the training labels ({missing})",
                "Use the same label ids and names in both dataset.json files.",
            )
        val_label = str(config.val)
    else:
        val = replace(train)
        val_label = "training cases (no held-out set: an overfitting check, not a validation)"
    present = _check_labels(train)
    if kind != "train":
        present.update(validate_label_values(val))
    if kind == "train":
        log.warning("no --val given: best/ is chosen on the training volumes themselves")
    return Plan(config, train, val, val_label, present, state)
