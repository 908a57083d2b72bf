"""What the panel's prompt box means: how its text splits into prompts, and the prompt presets.

One prompt is one segment, so the split is the backend's own rule (commas, semicolons or new lines;
blanks and repeats dropped), imported, not restated. A preset fills in a prompt list and may turn
on a default crop (see :mod:`.roi`): "Abdomen: 13 organs" crops to the body, which on a CT drops
the air and the table around the patient before the model runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from TGatedSegmentLib.vocabulary import ABDOMEN13, parse_prompts

from .i18n import tr as _


def parsePrompts(text: str | Sequence[str] | None) -> list[str]:
    """Prompts from the panel's text box: comma, semicolon or newline separated, blanks and repeats
    dropped (the backend's own rule, so that one prompt is one segment)."""
    return parse_prompts(text)


def promptsText(prompts: Sequence[str]) -> str:
    """Prompts as the text box shows them: one per line."""
    return "\n".join(prompts)


@dataclass(frozen=True)
class Preset:
    """A named prompt list; ``cropToBody``: the preset's default crop (used when no ROI is chosen)."""

    name: str
    prompts: tuple[str, ...]
    cropToBody: bool = False

    def title(self) -> str:
        return presetTitle(self.name)


# The 13 FLARE22 organs, one per line.
ABDOMEN13_PROMPTS = promptsText([organ.prompt for organ in ABDOMEN13])
PRESETS = {"abdomen13": Preset("abdomen13", tuple(organ.prompt for organ in ABDOMEN13), cropToBody=True)}


def presetTitle(name: str) -> str:
    """The preset's name as the panel shows it ("" is no preset)."""
    titles = {"": _("No preset"), "abdomen13": _("Abdomen: 13 organs")}
    return titles.get(name, name)


def preset(name: str) -> Preset:
    if name not in PRESETS:
        raise ValueError(_("Unknown preset '{name}'; known: {known}.").format(name=name, known=", ".join(PRESETS)))
    return PRESETS[name]
