"""Writes that never leave a half-written file or folder behind.

Files are written under a hidden temporary name in the destination folder (same file system) and
renamed into place with ``os.replace``; folders (checkpoints) are built under a temporary name and
swapped in with two renames, with :func:`recover_dir` undoing the one window a kill could leave.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Iterator

from ..errors import OutputError

_PARTIAL = ".partial-"
_OLD = ".old"


def split_suffixes(path: Path) -> tuple[str, str]:
    """``liver.seg.nrrd`` -> (``liver``, ``.seg.nrrd``); keeps readers that dispatch on suffix happy."""
    name = path.name
    for suffix in (".seg.nrrd", ".nii.gz", ".seg.nii.gz"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)], name[-len(suffix) :]
    return path.stem, path.suffix


def ensure_writable_dir(folder: str | Path) -> Path:
    """Create ``folder`` if needed and prove it is writable, or raise a clear :class:`OutputError`."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-test-"):
            pass
    except OSError as exc:
        raise OutputError(
            f"cannot write to '{folder}' ({exc.strerror or exc})",
            "Choose an output location you have write permission for.",
        ) from None
    return folder


def check_writable(path: str | Path) -> Path:
    """Fail before any long work if ``path`` could not be written later; creates nothing that stays.

    Probes the nearest existing ancestor with a real temporary file (permission bits alone say
    nothing when running as root, or on read-only mounts).
    """
    path = Path(path).expanduser().absolute()
    probe = path.parent
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    problem = None
    if not probe.is_dir():
        problem = f"'{probe}' is a file, not a folder"
    else:
        try:
            with tempfile.NamedTemporaryFile(dir=probe, prefix=".write-test-"):
                pass
        except OSError as exc:
            problem = f"'{probe}' is not writable ({exc.strerror or exc})"
    if problem:
        raise OutputError(
            f"cannot write '{path}': {problem}", "Choose an output location you have write permission for."
        )
    return path


def overwrite_hint(option: str | None = "--output", what: str = "it") -> str:
    """How to get past an output that is already there, worded alike by every command."""
    return f"Pass --overwrite to replace {what}" + (f", or choose another {option}." if option else ".")


OVERWRITE_HINT = overwrite_hint()


def refuse_existing(path: str | Path, overwrite: bool, hint: str = OVERWRITE_HINT, message: str | None = None) -> None:
    """The one "output exists, use --overwrite" refusal, raised before any work is done."""
    if not overwrite and Path(path).exists():
        raise OutputError(message or f"'{path}' already exists", hint)


def refuse_non_empty(
    folder: str | Path, overwrite: bool, what: str = "the output folder", hint: str = OVERWRITE_HINT
) -> None:
    """The same refusal for a folder, which is only in the way when it holds something."""
    folder = Path(folder)
    if not overwrite and folder.is_dir() and any(folder.iterdir()):
        raise OutputError(f"{what} '{folder}' is not empty", hint)


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yields a temporary path beside ``path`` (same suffixes); renamed onto ``path`` on success.

    On any exception (including cancellation and Ctrl-C) the temporary file is removed and
    ``path`` is left exactly as it was.
    """
    path = Path(path)
    ensure_writable_dir(path.parent)
    stem, suffix = split_suffixes(path)
    tmp = path.with_name(f".{stem}{_PARTIAL}{uuid.uuid4().hex[:8]}{suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def atomic_write_text(path: str | Path, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


@contextlib.contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yields an empty temporary folder; on success it replaces ``path`` as a whole.

    The old folder is moved aside (``NAME.old``) before the new one is renamed in, and removed
    after. A kill between those two renames leaves ``NAME.old`` complete; :func:`recover_dir`
    (called by every reader of such folders) puts it back.
    """
    path = Path(path)
    ensure_writable_dir(path.parent)
    recover_dir(path)
    tmp = path.with_name(f".{path.name}{_PARTIAL}{uuid.uuid4().hex[:8]}")
    tmp.mkdir()
    try:
        yield tmp
        old = path.with_name(path.name + _OLD)
        if path.exists():
            if old.exists():
                shutil.rmtree(old)
            os.replace(path, old)
        os.replace(tmp, path)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def recover_dir(path: str | Path) -> Path:
    """If a swap by :func:`atomic_dir` was interrupted, restore the previous complete folder."""
    path = Path(path)
    old = path.with_name(path.name + _OLD)
    if not path.exists() and old.is_dir():
        os.replace(old, path)
    return path


def remove_partials(folder: str | Path) -> None:
    """Delete temporary files a hard kill (SIGKILL) left in ``folder``."""
    for item in Path(folder).glob(f".*{_PARTIAL}*"):
        if item.is_dir():
            shutil.rmtree(item, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                item.unlink()
