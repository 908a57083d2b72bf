"""The demo's checks, before anything is written: the output folder and the base to fine-tune."""

from __future__ import annotations

from pathlib import Path

from ..errors import InputError, OutputError


def check_output(output: str | Path, overwrite: bool) -> Path:
    from ..io.atomic import check_writable, refuse_existing

    output = Path(output).expanduser()
    if output.exists() and not output.is_dir():
        raise OutputError(f"'{output}' is a file", "Choose a folder name for --output.")
    refuse_existing(output, overwrite)
    check_writable(output)
    return output


def check_base(base: str | None) -> None:
    """A local folder must hold config.json; a hub id must be reachable (one clear line offline)."""
    if base is None:
        return
    from ..model.source import SourceKind, classify_source, download

    source = classify_source(base)
    if source.is_folder:
        if not (source.path / "config.json").is_file():
            raise InputError(
                f"the base folder '{base}' has no config.json",
                "Pass a checkpoint folder (tgated train/init, or a demo's OUTPUT/checkpoint) or a "
                "CLIPSeg model folder.",
            )
        return
    if source.is_local:
        raise InputError(f"the base '{base}' is a file", "Pass a checkpoint or CLIPSeg model folder, or a hub id.")
    if source.kind is not SourceKind.HUB_ID:
        raise InputError(
            f"the base '{base}' does not exist", "Pass a local folder or a hub id such as CIDAS/clipseg-rd64-refined."
        )
    download(str(base), config_only=True)  # CheckpointError with the offline hint when it cannot
