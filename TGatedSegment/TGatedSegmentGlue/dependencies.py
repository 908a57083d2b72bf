"""The Python packages the backend needs, checked in Slicer's Python without importing them, and the
plan for installing what is missing.

Checking by ``importlib.util.find_spec`` and the installed version, never by importing: importing
torch in Slicer's GUI process would load CUDA there for nothing (the backend process is the one that
imports it). The plan keeps Slicer's rules: numpy and SimpleITK come with Slicer and are never
pip-installed over it; torch comes from the PyTorch extension (the build that matches the GPU
driver), the rest from pip.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from .i18n import tr as _

# Import name of each requirement whose distribution name differs from it (other than "-" for "_").
IMPORT_NAMES = {"pillow": "PIL", "simpleitk": "SimpleITK"}
# Packages that come with Slicer: if one is missing, Slicer's installation is broken.
BUNDLED_WITH_SLICER = ("numpy", "simpleitk")


def readRequirements(path: str | Path) -> list[str]:
    """Requirement lines of a requirements.txt (comments and blanks dropped)."""
    lines = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            lines.append(line)
    return lines


def requirementName(requirement: str) -> str:
    return re.split(r"[\s<>=!~;\[]", requirement.strip(), maxsplit=1)[0]


def _satisfies(version: str, requirement: str) -> bool:
    try:
        from packaging.requirements import Requirement
    except ImportError:  # no version check without 'packaging'; presence is what matters most
        return True
    try:
        return Requirement(requirement).specifier.contains(version, prereleases=True)
    except Exception:
        return True


def missingRequirements(requirements: Sequence[str]) -> list[str]:
    """The requirements not installed (or too old) in this Python, checked without importing them."""
    import importlib.metadata
    import importlib.util

    missing = []
    for requirement in requirements:
        name = requirementName(requirement)
        importName = IMPORT_NAMES.get(name.lower(), name.replace("-", "_"))
        if importlib.util.find_spec(importName) is None:
            missing.append(requirement)
            continue
        try:
            version = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue  # importable without metadata (e.g. built into Slicer): accept it
        if not _satisfies(version, requirement):
            missing.append(requirement)
    return missing


@dataclass(frozen=True)
class InstallPlan:
    """How to install ``missing``: ``bundled`` cannot be (Slicer's own), ``torch`` through the
    PyTorch extension (its requirement line, or None), ``pip`` the rest."""

    bundled: list[str]
    torch: str | None
    pip: list[str]

    @property
    def names(self) -> list[str]:
        return [requirementName(r) for r in self.bundled + ([self.torch] if self.torch else []) + self.pip]


def installPlan(missing: Sequence[str]) -> InstallPlan:
    bundled = [r for r in missing if requirementName(r).lower() in BUNDLED_WITH_SLICER]
    torch = next((r for r in missing if requirementName(r).lower() == "torch"), None)
    pip = [r for r in missing if r not in bundled and r != torch]
    return InstallPlan(bundled, torch, pip)


def torchVersionRequirement(requirement: str) -> str | None:
    """ ">=2.1" from "torch>=2.1" (what PyTorchUtils.installTorch takes), None without a version."""
    return requirement[len(requirementName(requirement)) :].strip() or None


class InstallError(Exception):
    """Installing failed or was declined; ``message`` says what, ``hint`` what to do."""

    def __init__(self, message: str, hint: str = ""):
        super().__init__(message)
        self.message, self.hint, self.details, self.kind = message, hint, "", "InstallError"

    def __str__(self) -> str:
        return f"{self.message.rstrip('.')}. {self.hint}" if self.hint else self.message


def backendReport(
    usedPackage: str | Path, usedVersion: str, installed: tuple[str, str] | None = None
) -> tuple[bool, str]:
    """Which TGatedSegmentLib the module runs, in one line, and whether another copy is being ignored.

    ``installed``: (version, package folder) of a ``tgated-segment`` pip-installed into Slicer's
    Python, if any. The module puts its bundled copy first on ``sys.path``, so such a copy never
    silently replaces the one the extension was built with; this says so instead of hiding it.
    Returns (another copy is ignored, the line).
    """
    used = Path(usedPackage).resolve()
    line = _("TGatedSegment backend: TGatedSegmentLib {version} from {folder}").format(version=usedVersion, folder=used)
    if installed is None or Path(installed[1]).resolve() == used:
        return False, line
    return True, _(
        "{line}; the tgated-segment {version} installed in Slicer's Python ({folder}) is not used "
        "(uninstall it with pip, or remove the extension, to use that one)"
    ).format(line=line, version=installed[0], folder=installed[1])
