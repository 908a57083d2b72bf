"""Old import paths of names that moved to another module keep working, with a DeprecationWarning.

A module whose public names moved ends with::

    __getattr__ = moved_names(__name__, {"load_dataset": "TGatedSegmentLib.data.dataset"})

so that ``from <old module> import load_dataset`` still returns the same object (scripts and
notebooks written against the old layout keep running) while telling where the name lives now.
Python calls a module's ``__getattr__`` only for names it does not define, so nothing the module
itself still uses is affected. A name that no longer exists as such (a table now derived from
something else) ends the same way with :func:`deprecated_names`.
"""

from __future__ import annotations

import importlib
import warnings
from typing import Any, Callable


def moved_names(old_module: str, new_homes: dict[str, str]):
    """A module ``__getattr__`` resolving ``new_homes`` (``name -> "new.module"`` or
    ``name -> "new.module:new_name"``) lazily, with a DeprecationWarning naming the new place."""

    def __getattr__(name: str):
        target = new_homes.get(name)
        if target is None:
            raise AttributeError(f"module '{old_module}' has no attribute '{name}'")
        module, _, new_name = target.partition(":")
        new_name = new_name or name
        warnings.warn(
            f"{old_module}.{name} moved to {module}.{new_name}; import it from there", DeprecationWarning, stacklevel=2
        )
        return getattr(importlib.import_module(module), new_name)

    return __getattr__


def deprecated_names(old_module: str, replacements: dict[str, tuple[Callable[[], Any], str]]):
    """A module ``__getattr__`` for names replaced by something else: ``name -> (make, instead)``
    returns ``make()`` (the old value, derived from its replacement) with a DeprecationWarning that
    names ``instead``."""

    def __getattr__(name: str):
        if name not in replacements:
            raise AttributeError(f"module '{old_module}' has no attribute '{name}'")
        make, instead = replacements[name]
        warnings.warn(
            f"{old_module}.{name} is deprecated and goes in the next release; use {instead}",
            DeprecationWarning,
            stacklevel=2,
        )
        return make()

    return __getattr__
