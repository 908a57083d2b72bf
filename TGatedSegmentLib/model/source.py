"""What a model argument names: the one place that tells the kinds of model source apart.

Every option that takes a model (``--base``, ``--checkpoint``, ``--base-config``, the demo's
``--base``) accepts the same texts:

* a TGatedSegment checkpoint folder (``config.json`` with ``"format": "tgated-segment"``);
* a CLIPSeg model folder (``config.json`` with ``"model_type": "clipseg"``: pretrained weights);
* a CLIPSeg config file (an architecture: random weights);
* ``builtin:NAME``, an architecture shipped in the package (random weights);
* the NAME of a model imported into the user's model folder (``tgated models import``, :mod:`.store`);
* a HuggingFace Hub id ``owner/name`` (either kind of model, downloaded once).

:func:`classify_source` answers which, reading at most one small JSON file, without torch and
without the network, so checkpoint loading, ``tgated train``'s pre-flight checks and the demo
cannot disagree about a path. Local paths win over model names, and names over the hub-id pattern
(a name has no ``/``); ``ModelSource.path`` is where a local or imported model is, so a caller
that opens files uses ``path``, never the text. Add a new kind of model source here first (see docs/architecture.md).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from ..errors import CheckpointError
from .architectures import is_builtin
from .configuration import DEFAULT_BASE_MODEL, FORMAT_NAME
from .store import find_model, is_model_name, models_dir, unknown_model_hint

CONFIG_NAME = "config.json"
OFFLINE_HINT = (
    "This machine cannot download it: pass a local folder instead (a checkpoint made by `tgated init`, "
    "`tgated train` or `tgated import`, or a CLIPSeg model folder copied from a machine with internet)."
)


class SourceKind(str, Enum):
    CHECKPOINT = "checkpoint"  # a folder holding a TGatedSegment checkpoint
    STORED = "stored"  # the NAME of a checkpoint imported into the user's model folder (model.store)
    CLIPSEG = "clipseg"  # a folder holding a CLIPSeg model (pretrained weights, zero-shot)
    FOLDER = "folder"  # any other folder: no config.json, or one of neither kind (or not readable)
    CONFIG_FILE = "config_file"  # an existing file, read as a CLIPSeg config JSON (random weights)
    BUILTIN = "builtin"  # builtin:NAME (random weights)
    HUB_ID = "hub_id"  # owner/name that is not on disk
    MISSING = "missing"  # a path that does not exist


@dataclass(frozen=True)
class ModelSource:
    """The answer of :func:`classify_source`: the text as given, its kind and, if local, its path."""

    text: str
    kind: SourceKind
    path: Path | None = None  # the expanded local file or folder, or a stored model's folder (else None)

    @property
    def is_folder(self) -> bool:
        return self.kind in (SourceKind.CHECKPOINT, SourceKind.STORED, SourceKind.CLIPSEG, SourceKind.FOLDER)

    @property
    def is_checkpoint(self) -> bool:
        """A TGatedSegment checkpoint on this machine (a folder, or an imported model's name)."""
        return self.kind in (SourceKind.CHECKPOINT, SourceKind.STORED)

    @property
    def is_local(self) -> bool:
        return self.is_folder or self.kind is SourceKind.CONFIG_FILE

    @property
    def random_weights(self) -> bool:
        """An architecture (config file or ``builtin:``), not weights."""
        return self.kind in (SourceKind.CONFIG_FILE, SourceKind.BUILTIN)


def looks_like_hub_id(source: str) -> bool:
    """``owner/name`` that is not a path (the Slicer glue uses this rule too: this module loads no torch)."""
    parts = str(source).split("/")
    return len(parts) == 2 and all(parts) and not str(source).startswith((".", "~")) and "\\" not in str(source)


def _folder_kind(folder: Path) -> SourceKind:
    try:
        raw = json.loads((folder / CONFIG_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return SourceKind.FOLDER
    if not isinstance(raw, dict):
        return SourceKind.FOLDER
    if raw.get("format") == FORMAT_NAME:
        return SourceKind.CHECKPOINT
    if raw.get("model_type") == "clipseg":
        return SourceKind.CLIPSEG
    return SourceKind.FOLDER


def classify_source(source: str | Path) -> ModelSource:
    """What kind of model source ``source`` is (local files win over the hub-id pattern)."""
    text = str(source)
    if is_builtin(text):
        return ModelSource(text, SourceKind.BUILTIN)
    path = Path(text).expanduser()
    if path.is_dir():
        return ModelSource(text, _folder_kind(path), path)
    if path.exists():
        return ModelSource(text, SourceKind.CONFIG_FILE, path)
    stored = find_model(text)
    if stored is not None:
        return ModelSource(text, SourceKind.STORED, stored)
    if looks_like_hub_id(text):
        return ModelSource(text, SourceKind.HUB_ID)
    return ModelSource(text, SourceKind.MISSING)


def missing_error(source: str, what: str = "checkpoint") -> CheckpointError:
    """The one-line error for a text that names nothing: no such path, imported model or hub id."""
    if is_model_name(source):
        return CheckpointError(
            f"{what} '{source}' is neither a folder here nor a model imported into {models_dir()}",
            unknown_model_hint(source),
        )
    return CheckpointError(
        f"{what} '{source}' does not exist",
        "Check the path, or pass an imported model's name "
        f"(`tgated models list`) or a hub id such as {DEFAULT_BASE_MODEL}.",
    )


def hub_error(source: str, exc: Exception, what: str = "checkpoint") -> CheckpointError:
    """The one-line error for a source that is neither on disk nor loadable from the hub."""
    if not looks_like_hub_id(source):
        return missing_error(source, what)
    return CheckpointError(
        f"'{source}' is not a local folder and could not be loaded from the HuggingFace Hub "
        f"({type(exc).__name__}: {str(exc).splitlines()[0][:160]})",
        OFFLINE_HINT,
    )


def download(source: str, config_only: bool = False) -> Path:
    """Fetch a hub repo's config (to tell the formats apart) or the files a checkpoint needs."""
    try:
        from huggingface_hub import hf_hub_download, snapshot_download

        if config_only:
            return Path(hf_hub_download(source, CONFIG_NAME)).parent
        return Path(snapshot_download(source, allow_patterns=["*.json", "*.safetensors", "*.txt"]))
    except Exception as exc:  # network, auth, missing repo: all mean "not available here"
        raise hub_error(source, exc) from None
