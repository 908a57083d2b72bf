"""Stand-in for slicer.i18n (Base/Python/slicer/i18n.py of Slicer v5.10.0): ``translate(context, text)``
asks the application (``slicer.app.translate``, QCoreApplication::translate); ``tr(text)`` takes the
context from its caller's file as Slicer's does (``getContext``: "Package.file" inside a package,
else the file name) and refuses a translation whose {placeholders} differ. No translation is loaded
in the stand-in; tests replace ``slicer.app.translate`` to see what goes through it.
"""

import inspect
import os
import re

_PLACEHOLDER = re.compile(r"(?<!\{)\{([^\{\}]+)\}(?!\})")


def translate(context, text):
    from slicer import app

    return app.translate(context, text)


def getContext(sourceFile):
    if os.path.isfile(sourceFile):
        parentFolder = os.path.dirname(sourceFile)
        if os.path.isfile(os.path.join(parentFolder, "__init__.py")):
            return os.path.basename(parentFolder) + "." + os.path.basename(sourceFile).replace(".py", "")
        return os.path.basename(sourceFile).replace(".py", "")
    return os.path.basename(sourceFile)


def tr(text):
    frame = inspect.currentframe().f_back
    filename = inspect.getsourcefile(frame) or inspect.getfile(frame)
    translated = translate(getContext(filename), text)
    if set(_PLACEHOLDER.findall(text)) != set(_PLACEHOLDER.findall(translated)):
        return text
    return translated
