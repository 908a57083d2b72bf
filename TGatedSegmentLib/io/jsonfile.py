"""JSON files, one rule each way: strict JSON out (NaN -> null), written atomically; JSON in, with
one policy for a missing, unreadable or invalid file."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .atomic import atomic_write_text


def jsonable(obj: Any) -> Any:
    """``obj`` as strict JSON takes it: NaN and infinities -> None (null), numpy scalars -> Python
    numbers, tuples -> lists, dict keys -> str. Reports, metrics and JSON progress lines use it."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        return jsonable(obj.item())
    return obj


def write_json(path: str | Path, payload: Any, indent: int = 1) -> Path:
    """:func:`jsonable` ``payload`` as indented JSON, written atomically."""
    return atomic_write_text(path, json.dumps(jsonable(payload), indent=indent))


def read_json(path: str | Path, invalid: Callable[[Exception], Exception] | None = None) -> Any:
    """The JSON in ``path``, or None when there is no such file. A file that cannot be read or is not
    JSON raises ``invalid(the error)`` (an error with the fix), or gives None when ``invalid`` is None."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        if invalid is None:
            return None
        raise invalid(exc) from None
