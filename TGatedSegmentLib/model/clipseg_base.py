"""The CLIPSeg base a model is built on: its architecture or its pretrained weights, from any source.

A base is a CLIPSeg config file, ``builtin:NAME``, a CLIPSeg model folder or a hub id (see
:mod:`.source`); this module turns one into a transformers ``CLIPSegConfig`` or
``CLIPSegForImageSegmentation`` with a one-line :class:`CheckpointError` when it cannot.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import CheckpointError
from .source import SourceKind, classify_source, hub_error


def load_clipseg_config(source: str | Path):
    """A CLIPSegConfig from a JSON file, a model folder or a hub id."""
    from transformers import CLIPSegConfig

    from .architectures import builtin_config

    source = str(source)
    kind = classify_source(source)
    if kind.kind is SourceKind.BUILTIN:
        return builtin_config(source)
    try:
        if kind.kind is SourceKind.CONFIG_FILE:
            return CLIPSegConfig.from_json_file(str(kind.path))
        if kind.is_folder or kind.kind is SourceKind.HUB_ID:
            return CLIPSegConfig.from_pretrained(str(kind.path or source))
    except (OSError, ValueError, json.JSONDecodeError) as exc:
        if kind.is_local:
            raise CheckpointError(
                f"cannot read a CLIPSeg config from '{source}' ({exc})",
                "Pass a CLIPSeg config.json, a CLIPSeg model folder or a hub id.",
            ) from None
        raise hub_error(source, exc, "base model") from None
    raise CheckpointError(
        f"base model '{source}' does not exist", "Pass a CLIPSeg config.json, a CLIPSeg model folder or a hub id."
    )


def load_clipseg_base(source: str | Path):
    """Pretrained ``CLIPSegForImageSegmentation`` from a folder or hub id (clear error offline)."""
    from transformers import CLIPSegForImageSegmentation

    try:
        return CLIPSegForImageSegmentation.from_pretrained(str(classify_source(source).path or source))
    except (OSError, ValueError) as exc:
        if Path(source).exists():
            raise CheckpointError(
                f"cannot load CLIPSeg weights from '{source}' ({str(exc).splitlines()[0][:200]})",
                "Pass a folder saved with save_pretrained(), or a hub id.",
            ) from None
        raise hub_error(str(source), exc, "base model") from None
