"""Stand-in for slicer.parameterNodeWrapper (Base/Python/slicer/parameterNodeWrapper/, Slicer v5.10.0):
the ``@parameterNodeWrapper`` class decorator with the serializers and validators the module uses.

Modelled as in Slicer: the annotated class members become properties that read and write the
wrapped vtkMRMLScriptedModuleNode (``wrapper.py``); a member's default is its class value, else its
``Default`` annotation, else the serializer's default, and is written into the node by ``__init__``
when the node has no value yet. Serialization as ``serializers.py`` does it: str as is, int/float as
``str(value)`` read back with the type, bool as "True"/"False", an MRML node as an empty parameter
plus a node reference of the same name (None allowed). Writing runs the validators first
(``validators.py``: the built-in NotNone + IsInstance, then WithinRange, Minimum, Maximum, Choice).
Not modelled (raises when met): other member types (lists, enums, paths, parameter packs, unions),
caching, and the GUI binding (``connectGui``): the panel is not instantiated outside Slicer.
"""

from __future__ import annotations

import typing
from typing import Annotated

import slicer

__all__ = ["Choice", "Default", "Maximum", "Minimum", "WithinRange", "parameterNodeWrapper"]


class Validator:
    def validate(self, value) -> None:
        raise NotImplementedError


class _NotNone(Validator):
    def validate(self, value):
        if value is None:
            raise ValueError("Value must not be None")


class _IsInstance(Validator):
    def __init__(self, classtype):
        self.classtype = classtype

    def validate(self, value):
        if value is not None and not isinstance(value, self.classtype):
            raise TypeError(f"Value must be of type '{self.classtype}', is type '{type(value)}' value '{value}'")


class WithinRange(Validator):
    def __init__(self, minimum, maximum):
        self.minimum, self.maximum = minimum, maximum

    def validate(self, value):
        if not self.minimum <= value <= self.maximum:
            raise ValueError(f"Value must be within range [{self.minimum}, {self.maximum}], is {value}")


class Minimum(Validator):
    def __init__(self, minimum):
        self.minimum = minimum

    def validate(self, value):
        if value < self.minimum:
            raise ValueError(f"Value must be greater than {self.minimum}, is {value}")


class Maximum(Validator):
    def __init__(self, maximum):
        self.maximum = maximum

    def validate(self, value):
        if value > self.maximum:
            raise ValueError(f"Value must be greater than {self.maximum}, is {value}")


class Choice(Validator):
    def __init__(self, choices):
        self.choices = choices

    def validate(self, value):
        if value not in self.choices:
            raise ValueError(f"Value is {value}, but must be in one of the following: {self.choices}")


class Default:
    def __init__(self, value=None, *, generator=None):
        self._value, self._generator = value, generator

    @property
    def value(self):
        return self._generator() if self._generator else self._value


class _Serializer:
    """str, int, float and bool parameters (``serializers.py``: String/Number/BoolSerializer)."""

    def __init__(self, type_):
        self.type = type_
        self.validators = [_NotNone(), _IsInstance((int, float) if type_ is float else type_)]

    def default(self):
        return {str: "", int: 0, float: 0, bool: False}[self.type]

    def isIn(self, parameterNode, name):
        return parameterNode.HasParameter(name)

    def write(self, parameterNode, name, value):
        parameterNode.SetParameter(name, ("True" if value else "False") if self.type is bool else str(value))

    def read(self, parameterNode, name):
        text = parameterNode.GetParameter(name)
        return text == "True" if self.type is bool else self.type(text) if self.type is not str else text


class _NodeSerializer:
    """MRML nodes (``serializers.py``: NodeSerializer): None is a valid value."""

    def __init__(self, type_):
        self.validators = [_IsInstance(type_)]

    def default(self):
        return None

    def isIn(self, parameterNode, name):
        return parameterNode.HasParameter(name)

    def write(self, parameterNode, name, value):
        parameterNode.SetParameter(name, "")
        parameterNode.SetNodeReferenceID(name, value.GetID() if value is not None else None)

    def read(self, parameterNode, name):
        return parameterNode.GetNodeReference(name)


def _serializer(type_):
    if type_ in (str, int, float, bool):
        return _Serializer(type_)
    if isinstance(type_, type) and issubclass(type_, slicer.vtkMRMLNode):
        return _NodeSerializer(type_)
    raise Exception(f"Unable to create serializer for type: {type_} (not modelled by the stand-in)")


class _Parameter:
    def __init__(self, name, serializer, validators, default):
        self.name, self.serializer, self.validators, self.default = name, serializer, validators, default

    def write(self, parameterNode, value):
        for validator in self.serializer.validators + self.validators:
            validator.validate(value)
        self.serializer.write(parameterNode, self.name, value)

    def read(self, parameterNode):
        if not self.serializer.isIn(parameterNode, self.name):
            self.write(parameterNode, self.default.value)
        return self.serializer.read(parameterNode, self.name)


def _property(name):
    return property(
        lambda self: self.allParameters[name].read(self.parameterNode),
        lambda self, value: self.allParameters[name].write(self.parameterNode, value),
    )


def _init(self, parameterNode, prefix=None):
    if prefix:
        raise NotImplementedError("the stand-in models no parameter name prefix")
    self.parameterNode = parameterNode
    for parameter in self.allParameters.values():
        if not parameter.serializer.isIn(parameterNode, parameter.name):
            parameter.write(parameterNode, parameter.default.value)


def _processClass(classtype):
    allParameters = {}
    for name, nametype in typing.get_type_hints(classtype, include_extras=True).items():
        args = typing.get_args(Annotated[nametype, "stub annotation"])  # as util.splitAnnotations
        membertype, annotations = args[0], list(args[1:-1])
        serializer = _serializer(membertype)
        validators = [a for a in annotations if isinstance(a, Validator)]
        defaults = [a for a in annotations if isinstance(a, Default)]
        if hasattr(classtype, name):
            default = Default(getattr(classtype, name))
        else:
            default = defaults[0] if defaults else Default(serializer.default())
        allParameters[name] = _Parameter(name, serializer, validators, default)
        setattr(classtype, name, _property(name))
    classtype.allParameters = allParameters
    classtype.__init__ = _init
    classtype.default = lambda self, name: self.allParameters[name].default
    classtype.getValue = lambda self, name: getattr(self, name)
    classtype.setValue = lambda self, name, value: setattr(self, name, value)
    classtype.StartModify = lambda self: self.parameterNode.StartModify()
    classtype.EndModify = lambda self, wasModified: self.parameterNode.EndModify(wasModified)
    classtype.AddObserver = lambda self, event, callback, priority=0.0: self.parameterNode.AddObserver(
        event, callback, priority
    )
    classtype.RemoveObserver = lambda self, tag: self.parameterNode.RemoveObserver(tag)
    classtype.Modified = lambda self: self.parameterNode.Modified()
    return classtype


def parameterNodeWrapper(classtype=None):
    """Class decorator: typed properties over a vtkMRMLScriptedModuleNode (``@parameterNodeWrapper``
    or ``@parameterNodeWrapper()``)."""
    if classtype is None:
        return _processClass
    return _processClass(classtype)
