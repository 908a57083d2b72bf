"""Stand-in for slicer.i18n: no translation outside Slicer."""


def tr(text):
    return text


def translate(context, text):
    return text
