"""What a training setting is, declared once on its :class:`~.config.TrainConfig` field.

Each field of ``TrainConfig`` carries an :class:`Option` in its metadata (``setting(...)`` or
``by_recipe(...)``): its help text, the flag of ``tgated train`` and the flag's value type and
choices, whether a recipe fills it, what a resumed run may do with it, the range or choices its value
must be in. Everything else is derived from that declaration, here:

* the argparse options of ``tgated train`` (``cli/train.py`` adds one per :func:`cli_settings` entry);
* the resume rules (:func:`resume_may_change`, :func:`defining_the_run`, :func:`predating`);
* the value checks (:func:`check_value`, run by ``TrainConfig.__post_init__`` on every field);
* the options of the Slicer module's ``logic.train(**options)`` (``TGatedSegmentGlue.commands``).

Like ``config.py`` this imports no torch: the Slicer module reads it in its own process.
"""

from __future__ import annotations

import math
from dataclasses import MISSING, dataclass, field, fields
from enum import Enum
from functools import lru_cache
from typing import Any, Callable

from ..errors import InputError


class Resume(Enum):
    """What ``tgated train --resume`` (and ``resume_config``) may do with a setting."""

    DEFINES_RUN = "defines the run"  # compared with the saved run: a difference refuses the resume
    MAY_CHANGE = "may change"  # e.g. more steps, another device: the new value applies
    RUN_OWN = "the run's own"  # where and how the run lives (output, cache): the run keeps its own


_ABSENT: Any = object()  # no value: the setting is as old as the saved runs


@dataclass(frozen=True)
class Range:
    """The numbers a setting may take: ``kind`` int or float, from ``low`` up to ``high``."""

    kind: type = float
    low: float = 0
    high: float | None = None
    low_open: bool = False  # low itself is not allowed (max_seconds > 0; not checked for finiteness)
    high_open: bool = False  # high itself is not allowed


@dataclass(frozen=True)
class Option:
    """One setting's declaration (a ``TrainConfig`` field's ``metadata["option"]``)."""

    help: str | None = None  # the flag's help text; None: a Python-only setting, no flag
    type: Callable[[str], Any] | None = None  # the flag's value type; None: a switch (a bool field)
    choices: tuple[str, ...] = ()  # the values allowed (the flag's choices too)
    metavar: str | None = None
    flag: str | None = None  # default --name, or --no-name for a switch whose default is True
    aliases: tuple[str, ...] = ()
    scale: float = 1.0  # setting = the flag's value x scale (--max-minutes sets max_seconds)
    shared: bool = False  # the flag comes from cli/common.py, the same on every command
    recipe: bool = False  # None: the recipe's value (recipes.py holds one for every such field)
    recipe_note: bool = True  # a recipe setting's help ends "(default: the recipe's)"
    resume: Resume = Resume.DEFINES_RUN
    predating: Any = _ABSENT  # the value runs saved before this setting existed trained with
    range: Range | None = None
    optional: bool = False  # None is a valid value (once the recipe has filled in its own)
    path: bool = False  # a local path: a resume compares it as an absolute path
    what: str | None = None  # the noun of "unknown WHAT 'x'" (default: the name, with spaces)
    hint: str | None = None  # the fix an error shows (default: "Pass a valid --flag." or the choices)


def setting(
    default: Any = MISSING, help: str | None = None, type: Callable[[str], Any] | None = None, **option: Any
) -> Any:
    """A ``TrainConfig`` field with its :class:`Option` (no ``default``: a required field)."""
    return field(default=default, metadata={"option": Option(help, type, **option)})


def by_recipe(help: str, type: Callable[[str], Any] | None = None, **option: Any) -> Any:
    """A field the recipe fills when it is left at None."""
    return setting(None, help, type, recipe=True, **option)


@dataclass(frozen=True)
class Setting:
    """A field's :class:`Option` with the field's name and default: what the derived tables list."""

    name: str
    default: Any
    option: Option

    @property
    def cli(self) -> bool:
        """``tgated train`` has a flag for it."""
        return self.option.help is not None or self.option.shared

    @property
    def switch(self) -> bool:
        return self.option.type is None and isinstance(self.default, bool)

    @property
    def flag(self) -> str:
        if self.option.flag:
            return self.option.flag
        return ("--no-" if self.switch and self.default else "--") + self.name.replace("_", "-")

    @property
    def dest(self) -> str:
        """The flag's attribute on argparse's namespace."""
        return self.flag.lstrip("-").replace("-", "_")

    @property
    def help(self) -> str:
        text = self.option.help or ""
        if self.option.recipe and self.option.recipe_note:
            text += " (default: the recipe's)"
        return text

    def from_flag(self, value: Any) -> Any:
        """The setting's value for the flag's (a switch gives the opposite of the default)."""
        if self.switch:
            return not self.default
        return value * self.option.scale if self.option.scale != 1.0 else value


@lru_cache(maxsize=None)
def _settings(config_class: type) -> tuple[Setting, ...]:
    found = []
    for f in fields(config_class):
        option = f.metadata.get("option")
        if not isinstance(option, Option):
            raise TypeError(f"{config_class.__name__}.{f.name} declares no Option: use setting(...) or by_recipe(...)")
        found.append(Setting(f.name, None if f.default is MISSING else f.default, option))
    return tuple(found)


def settings(config_class: type | None = None) -> tuple[Setting, ...]:
    """Every field of ``config_class`` (default: ``TrainConfig``) with its declaration, in field order."""
    if config_class is None:
        from . import config

        config_class = config.TrainConfig
    return _settings(config_class)


def cli_settings(config_class: type | None = None) -> tuple[Setting, ...]:
    """The settings ``tgated train`` has a flag for, in the order of its help."""
    return tuple(s for s in settings(config_class) if s.cli)


def resume_may_change(config_class: type | None = None) -> tuple[str, ...]:
    """The settings a resumed run may change (more steps, another device); the run keeps the others."""
    return tuple(s.name for s in settings(config_class) if s.option.resume is Resume.MAY_CHANGE)


def defining_the_run(config_class: type | None = None) -> tuple[str, ...]:
    """The settings that define what is trained: a resume with other values is refused."""
    return tuple(s.name for s in settings(config_class) if s.option.resume is Resume.DEFINES_RUN)


def predating(config_class: type | None = None) -> dict[str, Any]:
    """Settings newer than some saved runs, with the value those runs trained with: a resumed run
    keeps it (a recipe's newer default must not change a run half way)."""
    return {s.name: s.option.predating for s in settings(config_class) if s.option.predating is not _ABSENT}


def may_change_text(config_class: type | None = None) -> str:
    """The flags a resume may change, as "--a, --b and --c" (for the hint of a refused resume)."""
    return _and([s.flag for s in cli_settings(config_class) if s.option.resume is Resume.MAY_CHANGE])


def _and(items: list[str]) -> str:
    return ", ".join(items[:-1]) + " and " + items[-1] if len(items) > 1 else "".join(items)


def _or(items: list[str]) -> str:
    return ", ".join(items[:-1]) + " or " + items[-1] if len(items) > 1 else "".join(items)


def check_value(entry: Setting, value: Any) -> None:
    """Raise the setting's one-line InputError when ``value`` is outside its choices or range."""
    option = entry.option
    if value is None and (option.optional or (option.range is None and not option.choices)):
        return
    if option.choices:
        if value not in option.choices:
            what = option.what or entry.name.replace("_", " ")
            raise InputError(
                f"unknown {what} '{value}'", option.hint or f"Use {entry.flag} {_or(list(option.choices))}."
            )
        return
    if option.range is not None:
        problem = _out_of_range(entry.name, value, option.range, option.optional)
        if problem:
            raise InputError(problem, option.hint or f"Pass a valid {entry.flag}.")


def _out_of_range(name: str, value: Any, bounds: Range, optional: bool) -> str | None:
    """What is wrong with ``value`` (None: nothing)."""
    low, high = bounds.low, bounds.high
    if bounds.kind is int:
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            wanted = "a positive integer" if optional and low == 1 else f"an integer >= {low:g}"
            return f"{name} must be {wanted}, got {value!r}"
        return None
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if bounds.low_open:
        return None if number and value > low else f"{name} must be > {low:g}, got {value!r}"
    if high is not None and not bounds.high_open:
        return None if number and low <= value <= high else f"{name} must be in [{low:g}, {high:g}], got {value!r}"
    if not number or not math.isfinite(value) or value < low:
        return f"{name} must be a finite number >= {low:g}, got {value!r}"
    if high is not None and value >= high:
        return f"{name} must be below {high:g}, got {value!r}"
    return None
