"""The user's model folder: where ``tgated models import`` puts models, so that a NAME works wherever
a checkpoint is accepted (``--checkpoint``, ``--base``, ``Segmenter(NAME)``, the Slicer panel).

Each model is one checkpoint folder named after the model (``config.json``, ``model.safetensors``,
the tokenizer's files and, when one was attached, ``evaluation.json``). The folder is:

* ``$TGATED_HOME/models`` when the environment variable ``TGATED_HOME`` is set (point a lab's
  machines, or Slicer and a shell, at one shared folder);
* otherwise ``tgated-segment/models`` in the platform's user cache folder: ``$XDG_CACHE_HOME`` or
  ``~/.cache`` on Linux, ``~/Library/Caches`` on macOS, ``%LOCALAPPDATA%`` on Windows.

Names are lower-case (a name is looked up case-insensitively, so ``Liver-V1`` and ``liver-v1`` are
one model on every file system), 1-64 characters of letters, digits, ``.``, ``_`` and ``-``,
starting with a letter or digit; they never contain ``/``, so a name cannot be mistaken for a hub
id or a path. Whether a text names a model here is :func:`model.source.classify_source`'s
question, which asks :func:`find_model` after the file system.

This module imports neither torch nor transformers: the Slicer module lists models in its own Python.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

from ..errors import InputError
from ..io.atomic import recover_dir

ENV_HOME = "TGATED_HOME"
APP_FOLDER = "tgated-segment"
MODELS_FOLDER = "models"
CONFIG_NAME = "config.json"
NAME_RULE = "1-64 characters: letters, digits, '.', '_' and '-', starting with a letter or a digit"

_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
_RESERVED_SUFFIXES = (".old",)  # io.atomic's name for the previous copy while a folder is replaced


def tgated_home() -> Path:
    """``$TGATED_HOME``, else ``tgated-segment`` in the platform's user cache folder."""
    override = os.environ.get(ENV_HOME, "").strip()
    if override:
        return Path(override).expanduser()
    if sys.platform == "win32":
        base = os.environ.get("LOCALAPPDATA") or str(Path.home() / "AppData" / "Local")
    elif sys.platform == "darwin":
        base = str(Path.home() / "Library" / "Caches")
    else:
        base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / APP_FOLDER


def models_dir() -> Path:
    """The folder holding one subfolder per imported model (it may not exist yet)."""
    return tgated_home() / MODELS_FOLDER


def normalize_name(text: str) -> str:
    return str(text).strip().lower()


def is_model_name(text: str) -> bool:
    """Whether ``text`` (case-insensitively) follows the name rule."""
    name = normalize_name(text)
    return bool(_NAME.fullmatch(name)) and not name.endswith(_RESERVED_SUFFIXES)


def check_name(text: str) -> str:
    """The normalised name, or an :class:`InputError` that states the rule."""
    if not is_model_name(text):
        raise InputError(f"'{text}' cannot be a model name", f"Use {NAME_RULE} (e.g. --name liver-ct-v1).")
    return normalize_name(text)


def name_from(text: str) -> str:
    """A valid name made from a file or folder name (``Liver CT (v2).zip`` -> ``liver-ct-v2``)."""
    stem = Path(str(text).rstrip("/\\")).name
    for suffix in (".zip", ".safetensors", ".pth", ".pt", ".bin", ".ckpt"):
        if stem.lower().endswith(suffix):
            stem = stem[: -len(suffix)]
    name = re.sub(r"[^a-z0-9._-]+", "-", stem.lower()).strip("-._")[:64].rstrip("-._")
    return name if is_model_name(name) else "model"


def model_path(name: str) -> Path:
    """Where the model ``name`` lives (or would live)."""
    return models_dir() / check_name(name)


def find_model(text: str) -> Path | None:
    """The folder of the imported model named ``text``, or None (not a name, or not imported)."""
    if not is_model_name(text):
        return None
    folder = recover_dir(models_dir() / normalize_name(text))  # a replacement a kill interrupted
    return folder if (folder / CONFIG_NAME).is_file() else None


def model_names() -> list[str]:
    """The names of the imported models, sorted."""
    root = models_dir()
    if not root.is_dir():
        return []
    return sorted(
        p.name for p in root.iterdir() if p.is_dir() and is_model_name(p.name) and (p / CONFIG_NAME).is_file()
    )


def unknown_model_hint(text: str) -> str:
    """The fix for a name that is not in the model folder: what is there, and how to import."""
    names = model_names()
    known = f"Imported models: {', '.join(names)}." if names else f"No model is imported yet (in {models_dir()})."
    return f"{known} Import one with `tgated models import SRC --name {normalize_name(text)}`, or pass a folder."
