"""The backend's command lines (``python -m TGatedSegmentLib segment|train|devices ...``) and the
environment it runs in.

The module runs exactly the commands a user can run in a shell, with ``--progress json`` so that
the panel reads progress, results and errors as JSON lines (:mod:`.events`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

from TGatedSegmentLib.compat import deprecated_names

from .i18n import tr as _
from .options import checkedBatchSize, checkedDevice, checkedModality, checkedThreshold, checkedUncertainty

BACKEND_PACKAGE = "TGatedSegmentLib"


def backendEnvironment(libraryParent: str | Path, pythonPath: str | None = None) -> dict[str, str]:
    """Variables for the backend process: the folder holding TGatedSegmentLib first on PYTHONPATH,
    unbuffered output so that log lines arrive as they are written, and UTF-8 output whatever the
    locale (a prompt such as "肝臓" in a log line must not break the reader)."""
    paths = [str(libraryParent)] + [p for p in (pythonPath or "").split(os.pathsep) if p]
    return {"PYTHONPATH": os.pathsep.join(dict.fromkeys(paths)), "PYTHONUNBUFFERED": "1", "PYTHONIOENCODING": "utf-8"}


def segmentArguments(
    inputPath: str | Path,
    outputPath: str | Path,
    prompts: Sequence[str],
    checkpoint: str | Path | None = None,
    device: str = "auto",
    modality: str = "auto",
    threshold: float | None = None,
    batchSize: int | None = None,
    uncertainty: int = 0,
    uncertaintyOutput: str | Path | None = None,
) -> list[str]:
    """Arguments after ``python -m TGatedSegmentLib``: the same ``segment`` command users run in a shell."""
    prompts = list(prompts)
    if not prompts:
        raise ValueError(_("Type at least one organ name, for example: liver, left kidney."))
    args = [
        "segment",
        str(inputPath),
        "--prompts",
        ", ".join(prompts),
        "--output",
        str(outputPath),
        "--device",
        checkedDevice(device),
        "--modality",
        checkedModality(modality),
        "--progress",
        "json",
        "--overwrite",
    ]
    if checkpoint:
        args += ["--checkpoint", str(checkpoint)]
    if threshold is not None:
        args += ["--threshold", repr(checkedThreshold(threshold))]
    if batchSize is not None:
        args += ["--batch-size", str(checkedBatchSize(batchSize))]
    samples = checkedUncertainty(uncertainty)
    if samples:
        if uncertaintyOutput is None:
            raise ValueError(_("An uncertainty map needs a folder to be written to."))
        args += ["--uncertainty", str(samples), "--uncertainty-output", str(uncertaintyOutput)]
    return args


def devicesArguments() -> list[str]:
    """``tgated devices`` as JSON: the devices the backend's PyTorch can use."""
    return ["devices", "--progress", "json"]


def trainOptions() -> dict[str, tuple[str, str]]:
    """The options ``train(...)`` accepts, as Python keyword -> (flag, kind): every flag of ``tgated
    train`` but --data, --output and --progress, named after the flag in camelCase (``--max-minutes``:
    ``maxMinutes``), read from TrainConfig's fields (torch-free). kind: ``flag`` (a switch), ``int``,
    ``float``, ``resume`` (True: the run in the output folder, or a run folder) or ``value``."""
    from TGatedSegmentLib.training.options import cli_settings

    options = {}
    for entry in cli_settings():
        if entry.name in ("data", "output"):
            continue  # trainArguments' datasetFolder and outputFolder
        kind = (
            "flag"
            if entry.switch
            else "resume"
            if entry.name == "resume"
            else {int: "int", float: "float"}.get(entry.option.type, "value")
        )
        options[_camel(entry.dest)] = (entry.flag, kind)
    return options


def _camel(key: str) -> str:
    """``batch_size`` -> ``batchSize`` so that both spellings work from the console."""
    head, *rest = key.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def trainArguments(datasetFolder: str | Path, outputFolder: str | Path, **options) -> list[str]:
    """Arguments after ``python -m TGatedSegmentLib`` for ``train``; ``resume=True`` continues the run
    in ``outputFolder``. Unknown options are refused with the list of known ones (:func:`trainOptions`)."""
    known = trainOptions()
    args = ["train", "--data", str(datasetFolder), "--output", str(outputFolder), "--progress", "json"]
    for key, value in options.items():
        name = _camel(key)
        if name not in known:
            raise TypeError(
                _("Unknown training option '{option}'; known: {known}.").format(option=key, known=", ".join(known))
            )
        flag, kind = known[name]
        if value is None or value is False:
            continue
        if kind == "flag":
            args.append(flag)
        elif kind == "resume":
            args += [flag, str(outputFolder) if value is True else str(value)]
        elif kind == "int":
            args += [flag, str(int(value))]
        elif kind == "float":
            args += [flag, repr(float(value))]
        elif name == "device":
            args += [flag, checkedDevice(value)]
        else:
            args += [flag, str(value)]
    return args


# TRAIN_OPTIONS was the table of these options; they now follow from TrainConfig's fields.
__getattr__ = deprecated_names(__name__, {"TRAIN_OPTIONS": (trainOptions, "trainOptions()")})
