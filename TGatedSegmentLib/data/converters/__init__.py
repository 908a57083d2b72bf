"""``tgated prepare``: public datasets -> the nnU-Net v2 layout the trainer reads.

One module per source layout (:mod:`.totalsegmentator`, :mod:`.amos22`, :mod:`.flare22`,
:mod:`.btcv`, :mod:`.chaos`) finds the cases and says what each label means; :mod:`.writer`
writes them. :func:`prepare` builds the whole output under a temporary name and renames it into
place at the end, so an interrupted conversion leaves nothing (and an existing output is only
replaced with ``overwrite``). Nothing here downloads anything: the user fetches the data
(docs/datasets.md lists where and under which licence).
"""

from __future__ import annotations

import importlib
from pathlib import Path

from ...errors import InputError, OutputError
from ...io.atomic import refuse_non_empty
from ...progress import CancelToken, Progress

#: `tgated prepare` names -> converter modules.
DATASETS = {
    "totalsegmentator": "totalsegmentator",
    "amos22": "amos22",
    "flare22": "flare22",
    "btcv": "btcv",
    "chaos": "chaos",
}


def converter(name: str):
    """The converter module for a dataset name (case-insensitive), or an InputError listing the names."""
    key = name.strip().lower()
    if key not in DATASETS:
        raise InputError(f"unknown dataset '{name}'", f"Use one of: {', '.join(DATASETS)}.")
    return importlib.import_module(f"{__name__}.{DATASETS[key]}")


def _check_output(source_root: Path, output: Path, overwrite: bool) -> None:
    if output.exists() and not output.is_dir():
        raise OutputError(f"'{output}' is a file, not a folder", "Pass a folder as --output.")
    refuse_non_empty(output, overwrite)
    src, out = source_root.resolve(), output.resolve()
    if src == out or out in src.parents:
        raise OutputError(
            f"the output folder '{output}' holds the input data", "Choose an --output outside the downloaded dataset."
        )


def prepare(
    dataset: str,
    input_dir: str | Path,
    output_dir: str | Path,
    modality: str | None = None,
    split: str = "all",
    limit: int | None = None,
    overwrite: bool = False,
    progress: Progress | None = None,
    cancel: CancelToken | None = None,
) -> dict:
    """Convert one dataset; returns a summary (output, cases, labels, skipped). Nothing is left on failure."""
    from ... import __version__
    from ...io.atomic import atomic_dir, check_writable
    from .writer import NnUNetWriter

    module = converter(dataset)
    modality = (modality or module.MODALITIES[0]).lower()
    if modality not in module.MODALITIES:
        raise InputError(
            f"{module.TITLE} has no modality '{modality}'", f"Use --modality {', '.join(module.MODALITIES)}."
        )
    if split not in module.SPLITS:
        raise InputError(f"{module.TITLE} has no split '{split}'", f"Use --split {', '.join(module.SPLITS)}.")
    if limit is not None and limit < 1:
        raise InputError(f"--limit must be at least 1, got {limit}", "Pass e.g. --limit 5, or leave it out.")
    root, output = Path(input_dir).expanduser(), Path(output_dir).expanduser()
    _check_output(root, output, overwrite)
    check_writable(output / "dataset.json")
    source = module.find(root, modality=modality, split=split)
    if not source.cases:
        raise InputError(
            f"no {source.title} cases to convert in {root}"
            + (f" ({'; '.join(source.skipped)})" if source.skipped else ""),
            "Check --input, --modality and --split.",
        )
    cases = source.cases[:limit] if limit else source.cases
    progress = progress or Progress()
    stage = f"prepare {module.NAME}"
    with atomic_dir(output) as tmp:
        writer = NnUNetWriter(tmp, source)
        progress.update(stage, 0, len(cases))
        for done, case in enumerate(cases, 1):
            if cancel is not None:
                cancel.check()
            writer.write_case(case)
            progress.update(stage, done, len(cases), case=case.case_id)
        command = f"tgated prepare {module.NAME} --modality {modality}" + (
            f" --split {split}" if split != "all" else ""
        )
        writer.finish(command, __version__)
    skipped = list(source.skipped)
    if len(cases) < len(source.cases):
        skipped.append(f"{len(source.cases) - len(cases)} case(s) beyond --limit {limit}")
    return {
        "output": str(output),
        "dataset": module.NAME,
        "cases": len(cases),
        "labels": {spec.name: spec.value for spec in source.labels},
        "skipped": skipped,
    }
