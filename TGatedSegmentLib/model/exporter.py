"""``tgated models export``: one model as a zip that carries everything needed to use it elsewhere.

The zip holds one folder named after the model: ``config.json``, ``model.safetensors`` (the bytes of
the model's own file, so an import on another machine gives bit-identical weights), the tokenizer's
files, ``evaluation.json`` when one was attached, and ``README.md``, the model card generated from
those files (:func:`card.render_card`). Entries carry a fixed date, so exporting the same model twice
writes the same bytes. A checkpoint that stores only its trained weights is exported with all of
them (its base may not exist where the zip goes).
"""

from __future__ import annotations

import shutil
import tempfile
import zipfile
from pathlib import Path

from ..errors import InputError
from ..io.atomic import atomic_path, overwrite_hint, refuse_existing
from .card import CARD_NAME, CONFIG_NAME, EVALUATION_NAME, WEIGHTS_NAME, model_facts, read_json, render_card
from .importer import MODEL_FILES, default_name
from .source import SourceKind, classify_source, missing_error
from .store import normalize_name

_DATE = (1980, 1, 1, 0, 0, 0)  # the earliest a zip can hold: reproducible archives


def resolve_checkpoint(source: str) -> tuple[Path, str]:
    """(folder, name) of an imported model's NAME or a checkpoint folder; a clear error otherwise."""
    resolved = classify_source(source)
    if resolved.kind is SourceKind.MISSING:
        raise missing_error(str(source), "model")
    if not resolved.is_checkpoint or resolved.path is None:
        raise InputError(
            f"'{source}' is not a TGatedSegment checkpoint ({resolved.kind.value})",
            "Pass an imported model's name (`tgated models list`) or a checkpoint folder.",
        )
    name = normalize_name(source) if resolved.kind is SourceKind.STORED else default_name(resolved.path)
    return resolved.path, name


def export_model(source: str, output: str | Path, overwrite: bool = False) -> Path:
    """Write ``output`` (``.zip``) for the model ``source`` (a name or a checkpoint folder)."""
    folder, name = resolve_checkpoint(source)
    output = Path(output).expanduser()
    if output.suffix.lower() != ".zip":
        raise InputError(f"'{output}' does not end in .zip", f"Name the export file e.g. {name}.zip.")
    refuse_existing(output, overwrite, overwrite_hint("-o"))
    if not (read_json(folder / CONFIG_NAME) or {}).get("partial_weights"):
        return _write_zip(folder, name, output)
    from .checkpoint import load_model, save_checkpoint

    loaded = load_model(folder)
    with tempfile.TemporaryDirectory(prefix="tgated-export-") as tmp:
        full = Path(tmp) / name
        evaluation = folder / EVALUATION_NAME
        save_checkpoint(
            loaded.model,
            loaded.tokenizer,
            full,
            loaded.config,
            extra_files={EVALUATION_NAME: evaluation.read_bytes()} if evaluation.is_file() else None,
        )
        return _write_zip(full, name, output)


def _write_zip(folder: Path, name: str, output: Path) -> Path:
    card = render_card(model_facts(folder, name))
    with atomic_path(output) as tmp:
        with zipfile.ZipFile(tmp, "w") as zf:
            for file in MODEL_FILES:
                path = folder / file
                if not path.is_file():
                    continue
                info = zipfile.ZipInfo(f"{name}/{file}", date_time=_DATE)
                info.compress_type = zipfile.ZIP_STORED if file == WEIGHTS_NAME else zipfile.ZIP_DEFLATED
                info.external_attr = 0o644 << 16
                info.file_size = path.stat().st_size
                with open(path, "rb") as src, zf.open(info, "w") as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)
            info = zipfile.ZipInfo(f"{name}/{CARD_NAME}", date_time=_DATE)
            info.compress_type, info.external_attr = zipfile.ZIP_DEFLATED, 0o644 << 16
            zf.writestr(info, card)
    return output
