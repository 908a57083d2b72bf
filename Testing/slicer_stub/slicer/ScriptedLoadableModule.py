"""Stand-in for slicer.ScriptedLoadableModule (Base/Python/slicer/ScriptedLoadableModule.py).

The logic and test base classes behave as Slicer's (module name from the class name; the test base
is a unittest.TestCase with delayDisplay). The module and widget bases only exist so that the module
file imports: modules and widgets are not instantiated outside Slicer.
"""

import logging
import unittest

import slicer


class ScriptedLoadableModule:
    def __init__(self, parent):
        self.parent = parent
        self.moduleName = self.__class__.__name__


class ScriptedLoadableModuleWidget:
    def __init__(self, parent=None):
        self.parent = parent
        self.moduleName = self.__class__.__name__[:-len("Widget")]


class ScriptedLoadableModuleLogic:
    def __init__(self, parent=None):
        super().__init__()
        self.moduleName = self.__class__.__name__
        if self.moduleName.endswith("Logic"):
            self.moduleName = self.moduleName[:-5]
        self.isSingletonParameterNode = True


class ScriptedLoadableModuleTest(unittest.TestCase):
    def delayDisplay(self, message, requestedDelay=None, msec=None):
        logging.info(message)
        slicer.util.delayDisplay(message)
