"""``tgated models import``: a model someone hands over, into the user's model folder (:mod:`.store`).

Accepted sources, told apart by :func:`source_kind`:

* a checkpoint folder (``tgated train``'s ``best/``, ``tgated init``, a downloaded Hub repository);
* a ``.zip`` as ``tgated models export`` writes it (or any zip holding one checkpoint folder);
* a single ``.safetensors`` file, with the ``config.json`` it belongs to (beside it or ``--config``)
  and a tokenizer (beside it, ``--tokenizer``, or the config's base model);
* the authors' ``.pt``/``.pth`` checkpoint, converted on the way (:mod:`.convert_reference`).

The model is assembled in a hidden folder inside the model folder and loaded there exactly as
``--checkpoint NAME`` will load it (config, every weight's name and shape, tokenizer); only a model
that loads is renamed into place (:func:`io.atomic.atomic_dir`), so a failed import leaves nothing
and a replaced model is never half-written. An existing name is refused unless ``overwrite``.
A checkpoint that stores only its trained weights on top of a base gets all its weights written
out: a model in the folder never depends on another folder or the network.
"""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path

from ..errors import CheckpointError, InputError
from ..io.atomic import atomic_dir, refuse_existing
from . import store
from .card import CONFIG_NAME, EVALUATION_NAME, WEIGHTS_NAME, read_json, safetensors_header
from .configuration import DEFAULT_BASE_MODEL, FORMAT_NAME, REFERENCE_SLICE_LAYOUT
from .source import looks_like_hub_id

TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.json",
    "merges.txt",
    "special_tokens_map.json",
    "added_tokens.json",
)
MODEL_FILES = (CONFIG_NAME, WEIGHTS_NAME, *TOKENIZER_FILES, EVALUATION_NAME)
AUTHORS_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt")
RUN_SUBFOLDERS = ("best", "last", "resume", "checkpoint")  # names that say little: the parent's name goes first
ACCEPTED = (
    "a checkpoint folder, a .zip from `tgated models export`, a .safetensors file (with --config) or the "
    "authors' .pt/.pth"
)


def source_kind(path: Path) -> str:
    """``folder``, ``zip``, ``safetensors`` or ``authors``; a clear error for anything else."""
    if path.is_dir():
        raw = read_json(path / CONFIG_NAME)
        if raw is not None and raw.get("format") == FORMAT_NAME:
            return "folder"
        if raw is not None and raw.get("model_type") == "clipseg":
            raise InputError(
                f"'{path}' is a plain CLIPSeg model (no organ training), not a TGatedSegment checkpoint",
                "Use it directly (--base or --checkpoint take the folder), or fine-tune it with "
                "`tgated train --base FOLDER` and import the run's best/.",
            )
        if (path / "best" / CONFIG_NAME).is_file():
            raise InputError(
                f"'{path}' is a training run, not a checkpoint",
                f"Import its best weights: `tgated models import {path / 'best'}`.",
            )
        raise InputError(f"'{path}' holds no TGatedSegment checkpoint (no config.json of ours)", f"Pass {ACCEPTED}.")
    if path.is_file():
        suffix = path.suffix.lower()
        kind = {".zip": "zip", ".safetensors": "safetensors"}.get(
            suffix, "authors" if suffix in AUTHORS_SUFFIXES else ""
        )
        if not kind:
            raise InputError(f"'{path}' is not a kind of model file tgated can import", f"Pass {ACCEPTED}.")
        return kind
    if looks_like_hub_id(str(path)):
        raise InputError(
            f"'{path}' is not a file or folder here",
            f"To download it from the Hugging Face Hub: `tgated models pull {path}`.",
        )
    raise InputError(f"'{path}' does not exist", f"Check the path; pass {ACCEPTED}.")


def default_name(path: Path) -> str:
    """The name a model gets without ``--name``: the file or folder name (``runs/liver/best`` -> ``liver-best``;
    an exported zip: the name it was exported under, its folder inside)."""
    if path.suffix.lower() == ".zip" and path.is_file():
        root = _zip_root(path)
        if root not in ("", "."):
            return store.name_from(Path(root).name)
    if path.name.lower() in RUN_SUBFOLDERS and path.resolve().parent.name:
        return store.name_from(f"{path.resolve().parent.name}-{path.name}")
    return store.name_from(path.name)


def import_model(
    source: str | Path,
    name: str | None = None,
    overwrite: bool = False,
    config: str | Path | None = None,
    tokenizer: str | None = None,
    base_config: str | None = None,
    evaluation: str | Path | None = None,
    slice_layout: tuple[str, ...] = REFERENCE_SLICE_LAYOUT,
) -> Path:
    """Import ``source`` as ``name`` and return the model's folder (see the module docstring).

    ``config``/``tokenizer``: for a bare ``.safetensors``; ``base_config``/``tokenizer``/``slice_layout``:
    for the authors' checkpoint (default base ``CIDAS/clipseg-rd64-refined``); ``evaluation``: a
    ``tgated evaluate`` report (``report.json`` or its folder) whose scores the model card shows.
    """
    path = Path(source).expanduser()
    kind = source_kind(path)
    name = store.check_name(name) if name else default_name(path)
    target = store.models_dir() / name
    refuse_existing(
        target,
        overwrite,
        "Pass --overwrite to replace it, or --name to import this one under another name.",
        f"a model named '{name}' is already imported ({target})",
    )
    scores = read_evaluation(evaluation, path) if evaluation else None
    if kind == "folder":
        _precheck(path)
    with atomic_dir(target) as tmp:
        if kind == "folder":
            _copy_model_files(path, tmp)
        elif kind == "zip":
            _extract_zip(path, tmp)
        elif kind == "safetensors":
            _assemble_safetensors(path, tmp, config, tokenizer)
        else:
            from .convert_reference import import_reference_checkpoint

            import_reference_checkpoint(
                path, base_config or DEFAULT_BASE_MODEL, tmp, tokenizer=tokenizer, slice_layout=slice_layout
            )
        _complete_and_check(tmp, path)
        if scores is not None:
            (tmp / EVALUATION_NAME).write_text(json.dumps(scores, indent=1), encoding="utf-8")
    return target


# -- the kinds of source -------------------------------------------------------------------------


def _precheck(folder: Path) -> None:
    """Cheap checks before anything is copied: the weights file is there and readable."""
    weights = folder / WEIGHTS_NAME
    if not weights.is_file():
        raise CheckpointError(f"'{folder}' has no {WEIGHTS_NAME}", "The checkpoint is incomplete: copy it again.")
    try:
        safetensors_header(weights)
    except (OSError, ValueError) as exc:
        raise CheckpointError(
            f"cannot read '{weights}' ({exc})", "The file is corrupt or truncated: copy it again."
        ) from None


def _copy_model_files(folder: Path, into: Path) -> None:
    for name in MODEL_FILES:
        if (folder / name).is_file():
            shutil.copyfile(folder / name, into / name)  # bytes as they are: the weights stay bit-identical


def _zip_root(archive: Path) -> str:
    """The folder inside ``archive`` that holds its one checkpoint (the shallowest config.json)."""
    try:
        with zipfile.ZipFile(archive) as zf:
            configs = [m.filename for m in zf.infolist() if not m.is_dir() and Path(m.filename).name == CONFIG_NAME]
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise InputError(f"cannot read '{archive}' as a zip ({exc})", "The file is damaged: copy it again.") from None
    depth = min((len(Path(c).parts) for c in configs), default=0)
    roots = {str(Path(c).parent) for c in configs if len(Path(c).parts) == depth}
    if len(roots) != 1:
        raise InputError(
            f"'{archive}' holds {'no' if not roots else 'more than one'} checkpoint (config.json)",
            "Pass a zip made by `tgated models export`, holding exactly one checkpoint.",
        )
    return roots.pop()


def _extract_zip(archive: Path, into: Path) -> None:
    """The checkpoint files of the one checkpoint folder in ``archive``, streamed into ``into``."""
    root = _zip_root(archive)
    try:
        with zipfile.ZipFile(archive) as zf:
            for member in zf.infolist():
                entry = Path(member.filename)
                if not member.is_dir() and str(entry.parent) == root and entry.name in MODEL_FILES:
                    with zf.open(member) as src, open(into / entry.name, "wb") as dst:  # by basename: nothing escapes
                        shutil.copyfileobj(src, dst, 1 << 20)
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise InputError(f"cannot read '{archive}' as a zip ({exc})", "The file is damaged: copy it again.") from None
    if not (into / WEIGHTS_NAME).is_file():
        raise CheckpointError(
            f"the checkpoint in '{archive}' has no {WEIGHTS_NAME}", "The zip is incomplete: export it again."
        )


def _assemble_safetensors(weights: Path, into: Path, config: str | Path | None, tokenizer: str | None) -> None:
    """A bare weights file plus its config (``--config`` or beside it) and a tokenizer."""
    beside = weights.parent / CONFIG_NAME
    config_file = Path(config).expanduser() if config else (beside if beside.is_file() else None)
    raw = read_json(config_file) if config_file else None
    if config_file is None:
        raise InputError(
            f"'{weights}' is a bare weights file: the model it belongs to is not described",
            "Pass --config with the config.json of the checkpoint it came from.",
        )
    if not config_file.is_file():
        raise InputError(f"the config '{config_file}' does not exist", "Check the path given as --config.")
    if raw is None or raw.get("format") != FORMAT_NAME:
        raise InputError(
            f"'{config_file}' is not a TGatedSegment config.json",
            "Pass the config.json of the checkpoint the weights came from.",
        )
    shutil.copyfile(weights, into / WEIGHTS_NAME)
    shutil.copyfile(config_file, into / CONFIG_NAME)
    found = [n for n in TOKENIZER_FILES if (weights.parent / n).is_file()]
    if tokenizer is None and found:
        for n in found:
            shutil.copyfile(weights.parent / n, into / n)
        return
    from .checkpoint import resolve_tokenizer
    from .configuration import TGatedConfig

    vocabulary = TGatedConfig.from_dict(raw).vocabulary
    source = tokenizer or raw.get("base_model_id")
    if not source:
        raise InputError(
            f"no tokenizer for '{weights}': none beside it and its config names no base model",
            "Pass --tokenizer (a CLIP tokenizer folder or hub id, or 'compact' for models trained with "
            "the compact tokenizer).",
        )
    resolve_tokenizer(source, vocabulary).save_pretrained(str(into))


def _complete_and_check(folder: Path, source: Path) -> None:
    """Load ``folder`` as ``--checkpoint`` will; a partial checkpoint is written out with all its weights."""
    from .checkpoint import load_model, save_checkpoint

    raw = read_json(folder / CONFIG_NAME) or {}
    try:
        loaded = load_model(folder)
    except CheckpointError as exc:  # it names what does not fit; say it of the source, not of the hidden copy
        raise CheckpointError(
            f"'{source}' cannot be imported: {exc.message.replace(str(folder), str(source))}", exc.hint
        ) from None
    if raw.get("partial_weights"):
        extra = folder / EVALUATION_NAME
        keep = extra.read_bytes() if extra.is_file() else None
        save_checkpoint(
            loaded.model, loaded.tokenizer, folder, loaded.config, extra_files={EVALUATION_NAME: keep} if keep else None
        )


# -- an attached evaluation -----------------------------------------------------------------------


def read_evaluation(report: str | Path, source: Path) -> dict:
    """The scores of ``source`` in a ``tgated evaluate`` report (``report.json`` or its folder)."""
    path = Path(report).expanduser()
    path = path / "report.json" if path.is_dir() else path
    raw = read_json(path)
    if raw is None or not isinstance(raw.get("summary"), dict) or not raw["summary"]:
        raise InputError(
            f"'{path}' is not a `tgated evaluate` report.json",
            "Pass the --output folder of `tgated evaluate` (or its report.json).",
        )
    names = list(raw["summary"])
    if len(names) > 1:  # the checkpoint whose path is the one imported
        sources = raw.get("checkpoints") or {}
        names = [n for n in names if _same_path(sources.get(n), source)]
        if len(names) != 1:
            raise InputError(
                f"'{path}' scores several checkpoints ({', '.join(raw['summary'])}) and none of them is '{source}'",
                "Evaluate this checkpoint alone, or import the checkpoint the report names.",
            )
    rows = [r for r in raw.get("rows") or [] if r.get("checkpoint") == names[0]]
    return {
        "dataset": raw.get("dataset"),
        "tolerance_mm": raw.get("tolerance_mm"),
        "checkpoint": names[0],
        "cases": len({r.get("case") for r in rows}) or None,
        "summary": raw["summary"][names[0]],
    }


def _same_path(text, path: Path) -> bool:
    try:
        return text is not None and Path(text).expanduser().resolve() == path.resolve()
    except OSError:
        return False
