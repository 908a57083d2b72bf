"""User-visible text through Slicer's translation, when this runs in Slicer; unchanged outside it.

``slicer.i18n.tr`` takes its translation context from the file that calls it (package and file
name, e.g. ``TGatedSegmentGlue.errors``). Called from a helper it would see the helper's file, so
:func:`tr` does what ``slicer.i18n.tr`` does for *its* caller: Slicer's ``getContext`` of the
caller's file, Slicer's ``translate``, and the translation refused when its ``{placeholders}``
differ from the original's. Outside Slicer (the pytest suite, a plain Python) there is no
``slicer.i18n`` and the text comes back as it is. Each glue module imports it as ``_``, as Slicer
modules import ``slicer.i18n.tr``, so that Qt's lupdate finds the strings in both.
"""

from __future__ import annotations

import re
import sys

_PLACEHOLDER = re.compile(r"(?<!\{)\{([^{}]+)\}(?!\})")


def tr(text: str) -> str:
    try:
        from slicer.i18n import getContext, translate
    except ImportError:  # not in Slicer
        return text
    context = getContext(sys._getframe(1).f_code.co_filename)
    translated = translate(context, text)
    if set(_PLACEHOLDER.findall(translated)) != set(_PLACEHOLDER.findall(text)):
        return text  # a translation that lost a {placeholder} would fail in .format(): keep the original
    return translated
