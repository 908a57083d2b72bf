"""Stand-in for slicer.ScriptedLoadableModule (Base/Python/slicer/ScriptedLoadableModule.py).

The logic and test base classes behave as Slicer's (module name from the class name, the singleton
parameter node of getParameterNode/createParameterNode; the test base is a unittest.TestCase with
delayDisplay). The module base does what Slicer's does for self-tests:
``__init__`` registers ``slicer.selfTests[moduleName] = self.runTest`` (creating the dict if needed)
and ``runTest(msec=100, **kwargs)`` runs ``<ModuleName>Test().runTest(**kwargs)`` from the module's
file, an AssertionError if there is no such class. The widget base only exists so that the module
file imports: widgets are not instantiated outside Slicer.
"""

import importlib
import logging
import unittest

import slicer


class ScriptedLoadableModule:
    def __init__(self, parent):
        self.parent = parent
        self.moduleName = self.__class__.__name__
        try:
            slicer.selfTests
        except AttributeError:
            slicer.selfTests = {}
        slicer.selfTests[self.moduleName] = self.runTest

    def runTest(self, msec=100, **kwargs):
        module = importlib.import_module(self.__module__)
        className = self.moduleName + "Test"
        try:
            TestCaseClass = getattr(module, className)
        except AttributeError:
            raise AssertionError(f"Test case class not found: {self.__module__}.{className} ")
        testCase = TestCaseClass()
        testCase.messageDelay = msec
        testCase.runTest(**kwargs)


class ScriptedLoadableModuleWidget:
    def __init__(self, parent=None):
        self.parent = parent
        self.moduleName = self.__class__.__name__[: -len("Widget")]


class ScriptedLoadableModuleLogic:
    def __init__(self, parent=None):
        super().__init__()
        self.moduleName = self.__class__.__name__
        if self.moduleName.endswith("Logic"):
            self.moduleName = self.moduleName[:-5]
        self.isSingletonParameterNode = True

    def getParameterNode(self):
        """The module's singleton vtkMRMLScriptedModuleNode, created when the scene has none (as Slicer's;
        the non-singleton case is not modelled)."""
        if not self.isSingletonParameterNode:
            raise NotImplementedError("the stand-in models singleton parameter nodes only")
        parameterNode = slicer.mrmlScene.GetSingletonNode(self.moduleName, "vtkMRMLScriptedModuleNode")
        if parameterNode:
            if parameterNode.GetAttribute("ModuleName") != self.moduleName:
                parameterNode.SetAttribute("ModuleName", self.moduleName)
            return parameterNode
        return slicer.mrmlScene.AddNode(self.createParameterNode())

    def createParameterNode(self):
        node = slicer.mrmlScene.CreateNodeByClass("vtkMRMLScriptedModuleNode")
        node.UnRegister(None)
        node.SetSingletonTag(self.moduleName)
        node.SetAttribute("ModuleName", self.moduleName)
        node.SetName(slicer.mrmlScene.GenerateUniqueName(self.moduleName))
        return node


class ScriptedLoadableModuleTest(unittest.TestCase):
    def delayDisplay(self, message, requestedDelay=None, msec=None):
        logging.info(message)
        slicer.util.delayDisplay(message)
