"""The panel's remembered lists (recent prompts, recent models), kept in Slicer's settings as JSON text.

They belong to the user, not to a scene, hence settings rather than the parameter node.
"""

from __future__ import annotations

import json
from typing import Callable, Sequence

from TGatedSegmentLib.vocabulary import normalize

SETTINGS_GROUP = "TGatedSegment"
HISTORY_LIMIT = 10
PROMPT_HISTORY_LIMIT = HISTORY_LIMIT


def settingsKey(name: str) -> str:
    return f"{SETTINGS_GROUP}/{name}"


def rememberEntry(
    history: Sequence[str], entry: str, limit: int = HISTORY_LIMIT, key: Callable[[str], str] = str
) -> list[str]:
    """``history`` with ``entry`` moved to the front, no two entries with the same ``key``."""
    if not entry:
        return list(history)[:limit]
    return ([entry] + [h for h in history if key(h) != key(entry)])[:limit]


def rememberPrompts(history: Sequence[str], prompts: Sequence[str], limit: int = PROMPT_HISTORY_LIMIT) -> list[str]:
    """The recent-prompts list with ``prompts`` (joined by ", ") at the front; the same prompts in
    another case or spacing count as a repeat."""
    return rememberEntry(history, ", ".join(prompts), limit, normalize)


def rememberCheckpoint(history: Sequence[str], checkpoint: str, limit: int = HISTORY_LIMIT) -> list[str]:
    """The recent-models list with ``checkpoint`` (a folder or hub id, as typed) at the front."""
    return rememberEntry(history, (checkpoint or "").strip(), limit)


def decodeHistory(value) -> list[str]:
    """A list stored in the settings as JSON text (anything unreadable: empty)."""
    try:
        items = json.loads(value) if isinstance(value, str) and value else []
    except ValueError:
        return []
    return [str(item) for item in items if isinstance(item, str) and item.strip()] if isinstance(items, list) else []


def encodeHistory(history: Sequence[str]) -> str:
    return json.dumps(list(history))
