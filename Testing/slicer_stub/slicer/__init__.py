"""A minimal stand-in for the part of 3D Slicer's Python API that the TGatedSegment logic uses.

It exists so that the logic runs for real outside Slicer: scene, volume and segmentation nodes,
segments with tags, the subject hierarchy, the Segmentations/Volumes/Terminologies module logics and
the ``slicer.util`` functions the logic calls. Signatures and behaviours follow Slicer's source
(tag v5.10.0; file names below); geometry uses the real ``vtk`` package (vtkMatrix4x4, vtkImageData,
vtkStringArray, vtk.reference). It models only what the logic needs, and refuses (raises) what it
does not model, e.g. resampling a labelmap between different parent transforms or voxel grids.

Mirrored behaviours that the tests rely on:
- vtkMRMLScene.AddNewNodeByClass(className, nodeBaseName="") / AddNode / RemoveNode (also removes the
  node's display nodes) / GenerateUniqueName / GetNumberOfNodes / GetNthNode / GetFirstNodeByClass
  (Libs/MRML/Core/vtkMRMLScene.h).
- vtkMRMLScene.Clear(removeSingletons=False) keeps singleton nodes and Resets them; GetSingletonNode;
  GetURL/SetURL (the scene file; "" for a scene never saved).
- vtkMRMLNode observers (AddObserver/RemoveObserver, ModifiedEvent from Modified, held back between
  StartModify and EndModify), node references (an empty ID removes one), singleton tags.
- vtkMRMLScriptedModuleNode string parameters (HasParameter, SetParameter, GetParameter,
  GetParameterNames) and ScriptedLoadableModuleLogic.getParameterNode (ScriptedLoadableModule.py);
  slicer.parameterNodeWrapper in its own file.
- vtkMRMLMarkupsROINode: a box from GetSize() and GetObjectToNodeMatrix() (centre and axes) in its
  parent transform's coordinates (Libs/MRML/Core/vtkMRMLMarkupsROINode.h).
- vtkSegmentation.AddEmptySegment(segmentId="", segmentName="", color=None) returns a generated ID
  that is not the name; GetSegmentIdBySegmentName is case-insensitive for ASCII letters only (C++
  ::tolower); RemoveSegment; GetNthSegmentID (Libs/vtkSegmentationCore/vtkSegmentation.cxx).
- vtkSegment tags: SetTag(tag, value), GetTag(tag, vtk.reference) -> bool; GetTerminologyEntryTagName()
  is "TerminologyEntry" (Libs/vtkSegmentationCore/vtkSegment.h).
- vtkSlicerSegmentationsModuleLogic.ImportLabelmapToSegmentationNode(labelmapNode, segmentationNode,
  vtkStringArray): label i+1 goes to segment IDs[i] (an empty ID is skipped), a missing ID becomes a
  segment named by the ID, each segment is cleared and then gets label value i+1 and the one copy of
  the labelmap that all the IDs share (a shared layer); fails unless the segmentation's source
  representation is binary labelmap (Modules/Loadable/Segmentations/Logic/vtkSlicerSegmentationsModuleLogic.cxx).
  vtkSegmentation.ClearSegment on a shared layer zeroes only that segment's label value; a segment
  added without data gets an empty image of its own (Libs/vtkSegmentationCore/vtkSegmentation.cxx).
- vtkSlicerVolumesLogic.CreateAndAddLabelVolume(volumeNode, name): same grid, zero voxels, the
  volume's parent transform (Modules/Loadable/Volumes/Logic/vtkSlicerVolumesLogic.cxx).
- qSlicerCoreApplication: temporaryPath, processEvents (fires the stand-in's QTimers), testingEnabled
  (True, as under --testing), majorVersion/minorVersion, translate (no translation loaded),
  extensionsManagerModel (a Slicer built with the Extensions Manager) whose
  extensionMetadata(extensionName, source=MetadataAll) is {} for an extension it does not know
  (Base/QTCore/qSlicerExtensionsManagerModel.cxx).
- Linear transforms: vtkMRMLLinearTransformNode.SetMatrixTransformToParent / GetMatrixTransformToParent,
  transforms under transforms, GetMatrixTransformToWorld, and the static
  vtkMRMLTransformNode.GetMatrixTransformBetweenNodes(source, target, matrix) with None for world
  (Libs/MRML/Core/vtkMRMLTransformNode.cxx).
- vtkMRMLSegmentationNode.SetReferenceImageGeometryParameterFromVolumeNode(volumeNode): the volume's
  IJK-to-RAS mapped through the transform between the volume's and the segmentation's parent
  transforms *at the time of the call*, serialized as vtkSegmentationConverter::SerializeImageGeometry
  does (16 matrix elements, row by row, then the extent, ';' after each), and the
  reference-geometry node reference (Libs/MRML/Core/vtkMRMLSegmentationNode.cxx);
  vtkSegmentationConverter.DeserializeImageGeometry reads it back
  (Libs/vtkSegmentationCore/vtkSegmentationConverter.cxx).
- vtkSlicerTerminologiesModuleLogic.FindTypeInTerminologyBy3dSlicerLabel (exact match on
  3dSlicerLabel, types then type modifiers) and SerializeTerminologyEntry (7 '~' parts,
  scheme^value^meaning), over a few real entries of the General Anatomy list
  (Modules/Loadable/Terminologies/Resources/SegmentationCategoryTypeModifier-SlicerGeneralAnatomy.json).
"""

from __future__ import annotations

import itertools
import os
import tempfile
import uuid

import numpy as np
import qt
import vtk

# --------------------------------------------------------------------------------------------------
# Application


class _Application:
    """qSlicerCoreApplication's properties and slots that the module uses (Base/QTCore/qSlicerCoreApplication.h)."""

    majorVersion = 5
    minorVersion = 10

    def __init__(self):
        self.temporaryPath = tempfile.gettempdir()

    def processEvents(self, *args):
        qt.processEvents()

    def testingEnabled(self):
        return True

    def translate(self, context, sourceText):
        """QCoreApplication::translate: no translation is loaded in the stand-in (tests may replace this)."""
        return sourceText

    def extensionsManagerModel(self):
        return _extensionsManagerModel


class _ExtensionsManagerModel:
    """qSlicerExtensionsManagerModel.extensionMetadata: the metadata (a dict: "homepage", ...) of an
    installed or server-listed extension, {} for one it does not know. ``installed`` (stand-in only):
    extension name -> metadata, as tests set it."""

    MetadataAll, MetadataLocal, MetadataServer = 0, 1, 2

    def __init__(self):
        self.installed: dict[str, dict] = {}

    def extensionMetadata(self, extensionName, source=0):
        return dict(self.installed.get(extensionName, {}))


_extensionsManagerModel = _ExtensionsManagerModel()
app = _Application()


# --------------------------------------------------------------------------------------------------
# Nodes


class vtkMRMLNode:
    def __init__(self):
        self._id = None
        self._name = ""
        self._scene = None
        self._attributes = {}
        self._references = {}
        self._modifyDepth = 0

    def GetClassName(self):
        return type(self).__name__

    def IsA(self, className):
        return any(cls.__name__ == className for cls in type(self).__mro__)

    def GetID(self):
        return self._id

    def GetName(self):
        return self._name

    def SetName(self, name):
        self._name = name

    def GetScene(self):
        return self._scene

    def SetAttribute(self, name, value):
        self._attributes[name] = value

    def GetAttribute(self, name):
        return self._attributes.get(name)

    def SetNodeReferenceID(self, role, nodeId):
        if nodeId:
            self._references[role] = nodeId
        else:  # None or "" removes the reference (vtkMRMLNode::SetNodeReferenceID)
            self._references.pop(role, None)
        self.Modified()

    def GetNodeReferenceID(self, role):
        return self._references.get(role)

    def SetSingletonTag(self, tag):
        self._singletonTag = tag

    def GetSingletonTag(self):
        return getattr(self, "_singletonTag", None)

    def Reset(self, defaultNode):
        """Back to the state after construction (attributes and references gone), keeping ID, name and singleton tag."""
        self._attributes.clear()
        self._references.clear()

    def UnRegister(self, owner):
        """VTK reference counting: nothing to do in Python."""

    def GetNodeReference(self, role):
        nodeId = self._references.get(role)
        return self._scene.GetNodeByID(nodeId) if self._scene and nodeId else None

    def StartModify(self):
        self._modifyDepth += 1
        return self._modifyDepth - 1

    def EndModify(self, previous):
        self._modifyDepth = previous
        if previous == 0 and getattr(self, "_modifiedWhileBlocked", False):
            self._modifiedWhileBlocked = False
            self.Modified()
        return previous

    def AddObserver(self, event, callback, priority=0.0):
        """vtkObject::AddObserver: ``callback(caller, event)``; returns the tag for RemoveObserver."""
        observers = self.__dict__.setdefault("_observers", {})
        tag = len(observers) + 1 + max(observers, default=0)
        observers[tag] = (event, callback)
        return tag

    def RemoveObserver(self, tag):
        self.__dict__.setdefault("_observers", {}).pop(tag, None)

    def Modified(self):
        """vtkObject::Modified: ModifiedEvent to the observers, once at EndModify when modifications are blocked."""
        if self._modifyDepth:
            self._modifiedWhileBlocked = True
            return
        for event, callback in list(self.__dict__.get("_observers", {}).values()):
            if event == vtk.vtkCommand.ModifiedEvent:
                callback(self, "ModifiedEvent")


class vtkMRMLDisplayNode(vtkMRMLNode):
    pass


class vtkMRMLScalarVolumeDisplayNode(vtkMRMLDisplayNode):
    """Colour table, window/level and display threshold (vtkMRMLScalarVolumeDisplayNode.h)."""

    def __init__(self):
        super().__init__()
        self._colorNodeId = "vtkMRMLColorTableNodeGrey"
        self._autoWindowLevel = 1
        self._windowLevelMinMax = (0.0, 0.0)
        self._lowerThreshold, self._upperThreshold, self._applyThreshold = 0.0, 0.0, 0

    def SetAndObserveColorNodeID(self, colorNodeId):
        self._colorNodeId = colorNodeId

    def GetColorNodeID(self):
        return self._colorNodeId

    def AutoWindowLevelOff(self):
        self._autoWindowLevel = 0

    def GetAutoWindowLevel(self):
        return self._autoWindowLevel

    def SetWindowLevelMinMax(self, minimum, maximum):
        self._windowLevelMinMax = (float(minimum), float(maximum))

    def GetWindowLevelMin(self):
        return self._windowLevelMinMax[0]

    def GetWindowLevelMax(self):
        return self._windowLevelMinMax[1]

    def SetLowerThreshold(self, value):
        self._lowerThreshold = float(value)

    def GetLowerThreshold(self):
        return self._lowerThreshold

    def SetApplyThreshold(self, apply):
        self._applyThreshold = int(apply)

    def GetApplyThreshold(self):
        return self._applyThreshold


class vtkMRMLLabelMapVolumeDisplayNode(vtkMRMLDisplayNode):
    pass


class vtkMRMLSegmentationDisplayNode(vtkMRMLDisplayNode):
    pass


class vtkMRMLTransformableNode(vtkMRMLNode):
    def __init__(self):
        super().__init__()
        self._transformNodeId = None
        self._displayNodeIds = []

    def SetAndObserveTransformNodeID(self, transformNodeId):
        self._transformNodeId = transformNodeId or None

    def GetTransformNodeID(self):
        return self._transformNodeId

    def GetParentTransformNode(self):
        return self._scene.GetNodeByID(self._transformNodeId) if self._scene and self._transformNodeId else None

    def GetDisplayNode(self):
        return self._scene.GetNodeByID(self._displayNodeIds[0]) if self._scene and self._displayNodeIds else None

    def _addDisplayNode(self, className):
        if not self._displayNodeIds and self._scene is not None:
            display = self._scene.AddNewNodeByClass(className)
            self._displayNodeIds = [display.GetID()]


class vtkMRMLTransformNode(vtkMRMLTransformableNode):
    """Only linear transforms are modelled (the stand-in has no grid or B-spline transform)."""

    def __init__(self):
        super().__init__()
        self._toParent = np.eye(4)

    def GetMatrixTransformToParent(self, matrix):
        matrix.DeepCopy(self._toParent.ravel())
        return 1

    def SetMatrixTransformToParent(self, matrix):
        self._toParent = _arrayFromMatrix(matrix)
        return 1

    def _toWorld(self):
        """This transform's matrix to world: its own, then its parents' (each one's parent applied last)."""
        matrix, node, seen = np.eye(4), self, set()
        while node is not None:
            if id(node) in seen:
                raise RuntimeError("transform loop")
            seen.add(id(node))
            matrix = node._toParent @ matrix
            node = node.GetParentTransformNode()
        return matrix

    def GetMatrixTransformToWorld(self, matrix):
        matrix.DeepCopy(self._toWorld().ravel())
        return 1

    @staticmethod
    def GetMatrixTransformBetweenNodes(sourceNode, targetNode, transformSourceToTarget):
        """Source to target; None is the world. Linear transforms only, so via the world is exact."""
        sourceToWorld = sourceNode._toWorld() if sourceNode is not None else np.eye(4)
        targetToWorld = targetNode._toWorld() if targetNode is not None else np.eye(4)
        transformSourceToTarget.DeepCopy((np.linalg.inv(targetToWorld) @ sourceToWorld).ravel())
        return 1


class vtkMRMLLinearTransformNode(vtkMRMLTransformNode):
    pass


class vtkMRMLVolumeNode(vtkMRMLTransformableNode):
    def __init__(self):
        super().__init__()
        self._imageData = None
        self._ijkToRAS = np.eye(4)

    def SetIJKToRASMatrix(self, matrix):
        self._ijkToRAS = _arrayFromMatrix(matrix)

    def GetIJKToRASMatrix(self, matrix):
        matrix.DeepCopy(self._ijkToRAS.ravel())

    def SetAndObserveImageData(self, imageData):
        self._imageData = imageData

    def GetImageData(self):
        return self._imageData

    def StorableModified(self):
        pass


class vtkMRMLScalarVolumeNode(vtkMRMLVolumeNode):
    def CreateDefaultDisplayNodes(self):
        self._addDisplayNode("vtkMRMLScalarVolumeDisplayNode")


class vtkMRMLLabelMapVolumeNode(vtkMRMLScalarVolumeNode):
    def CreateDefaultDisplayNodes(self):
        self._addDisplayNode("vtkMRMLLabelMapVolumeDisplayNode")


class vtkMRMLSegmentationNode(vtkMRMLTransformableNode):
    def __init__(self):
        super().__init__()
        self._segmentation = vtkSegmentation()

    @staticmethod
    def GetReferenceImageGeometryReferenceRole():
        return "referenceImageGeometryRef"

    def GetSegmentation(self):
        return self._segmentation

    def CreateDefaultDisplayNodes(self):
        self._addDisplayNode("vtkMRMLSegmentationDisplayNode")

    def SetReferenceImageGeometryParameterFromVolumeNode(self, volumeNode):
        """As Slicer's: the volume's IJK-to-RAS, mapped into this segmentation's coordinates through
        the transform between the two nodes' parent transforms as they are *now* (a segmentation that
        gets the volume's transform only afterwards keeps a geometry moved by that transform)."""
        if volumeNode is None or volumeNode.GetImageData() is None:
            return
        ijkToRAS = volumeNode._ijkToRAS.copy()
        if volumeNode.GetParentTransformNode() is not self.GetParentTransformNode():
            volumeToSegmentation = vtk.vtkMatrix4x4()
            vtkMRMLTransformNode.GetMatrixTransformBetweenNodes(
                volumeNode.GetParentTransformNode(), self.GetParentTransformNode(), volumeToSegmentation
            )
            ijkToRAS = _arrayFromMatrix(volumeToSegmentation) @ ijkToRAS
        matrix = vtk.vtkMatrix4x4()
        matrix.DeepCopy(ijkToRAS.ravel())
        self._segmentation.SetConversionParameter(
            vtkSegmentationConverter.GetReferenceImageGeometryParameterName(),
            vtkSegmentationConverter.SerializeImageGeometry(matrix, volumeNode.GetImageData()),
        )
        self.SetNodeReferenceID(self.GetReferenceImageGeometryReferenceRole(), volumeNode.GetID())

    def CreateClosedSurfaceRepresentation(self):
        self._segmentation._representations.add(vtkSegmentationConverter.GetClosedSurfaceRepresentationName())
        return True


class vtkMRMLScriptedModuleNode(vtkMRMLNode):
    """A module's parameter node: string parameters (Libs/MRML/Core/vtkMRMLScriptedModuleNode.h);
    node references come from vtkMRMLNode."""

    def __init__(self):
        super().__init__()
        self._parameters = {}

    def HasParameter(self, name):
        return name in self._parameters

    def SetParameter(self, name, value):
        if self._parameters.get(name) != value or name not in self._parameters:
            self._parameters[name] = str(value)
            self.Modified()

    def GetParameter(self, name):
        return self._parameters.get(name, "")

    def GetParameterNames(self):
        return sorted(self._parameters)  # std::map order

    def Reset(self, defaultNode):
        super().Reset(defaultNode)
        self._parameters.clear()


class vtkMRMLDisplayableNode(vtkMRMLTransformableNode):
    pass


class vtkMRMLMarkupsNode(vtkMRMLDisplayableNode):
    pass


class vtkMRMLMarkupsROINode(vtkMRMLMarkupsNode):
    """A box ROI: side lengths and an object-to-node matrix (centre and axes), in the coordinates of
    its parent transform (Libs/MRML/Core/vtkMRMLMarkupsROINode.h). Only the box type is modelled."""

    def __init__(self):
        super().__init__()
        self._size = (0.0, 0.0, 0.0)
        self._objectToNode = vtk.vtkMatrix4x4()

    def GetSize(self):
        return self._size

    def SetSize(self, x, y, z):
        self._size = (float(x), float(y), float(z))
        self.Modified()

    def GetObjectToNodeMatrix(self):
        return self._objectToNode

    def SetAndObserveObjectToNodeMatrix(self, objectToNodeMatrix):
        self._objectToNode.DeepCopy(objectToNodeMatrix)
        self.Modified()


_NODE_CLASSES = {
    cls.__name__: cls
    for cls in (
        vtkMRMLScalarVolumeNode,
        vtkMRMLLabelMapVolumeNode,
        vtkMRMLSegmentationNode,
        vtkMRMLLinearTransformNode,
        vtkMRMLScalarVolumeDisplayNode,
        vtkMRMLLabelMapVolumeDisplayNode,
        vtkMRMLSegmentationDisplayNode,
        vtkMRMLScriptedModuleNode,
        vtkMRMLMarkupsROINode,
    )
}


def _arrayFromMatrix(matrix):
    array = np.eye(4)
    matrix.DeepCopy(array.ravel(), matrix)
    return array


# --------------------------------------------------------------------------------------------------
# Segmentation core


class vtkSegmentationConverter:
    @staticmethod
    def GetBinaryLabelmapRepresentationName():
        return "Binary labelmap"

    @staticmethod
    def GetClosedSurfaceRepresentationName():
        return "Closed surface"

    @staticmethod
    def GetReferenceImageGeometryParameterName():
        return "Reference image geometry"

    @staticmethod
    def SerializeImageGeometry(geometryMatrix, imageData):
        """16 matrix elements row by row, then the image extent, each followed by ';'."""
        if imageData is None:
            return ""
        values = [repr(float(geometryMatrix.GetElement(i, j))) for i in range(4) for j in range(4)]
        return "".join(f"{v};" for v in values + [str(e) for e in imageData.GetExtent()])

    @staticmethod
    def DeserializeImageGeometry(geometryString, geometryMatrix, extent):
        """Fills ``geometryMatrix`` and the 6-element list ``extent`` (in place, as VTK's Python
        wrapping does); False for an empty or unreadable string."""
        parts = geometryString.split(";") if geometryString else []
        if len(parts) < 22:
            return False
        try:
            values = [float(p) for p in parts[:16]]
            extent[:] = [int(p) for p in parts[16:22]]
        except ValueError:
            return False
        for index, value in enumerate(values):
            geometryMatrix.SetElement(index // 4, index % 4, value)
        return True


class vtkOrientedImageData:
    """A segment's binary labelmap: voxels (k, j, i) and the image-to-world (IJK-to-RAS) matrix."""

    def __init__(self, voxels, imageToWorld):
        self._voxels = np.array(voxels, dtype=np.uint8)
        self._imageToWorld = np.array(imageToWorld, dtype=float)

    def GetImageToWorldMatrix(self, matrix):
        matrix.DeepCopy(self._imageToWorld.ravel())


class vtkSegment:
    SEGMENT_COLOR_INVALID = (0.5, 0.5, 0.5)

    def __init__(self):
        self._name = ""
        self._color = self.SEGMENT_COLOR_INVALID
        self._tags = {}
        self._nameAutoGenerated = True
        self._colorAutoGenerated = True
        self._labelValue = 1
        self._representations = {}

    @staticmethod
    def GetTerminologyEntryTagName():
        return "TerminologyEntry"

    def GetName(self):
        return self._name

    def SetName(self, name):
        self._name = name

    def GetColor(self):
        return tuple(self._color)

    def SetColor(self, *color):
        if len(color) == 1:
            color = tuple(color[0])
        if len(color) != 3:
            raise TypeError("SetColor takes (r, g, b) or a 3-sequence")
        self._color = tuple(float(c) for c in color)

    def SetTag(self, tag, value):
        self._tags[tag] = str(value)

    def GetTag(self, tag, value):
        if tag not in self._tags:
            return False
        value.set(self._tags[tag])
        return True

    def RemoveTag(self, tag):
        self._tags.pop(tag, None)

    def GetNameAutoGenerated(self):
        return self._nameAutoGenerated

    def SetNameAutoGenerated(self, value):
        self._nameAutoGenerated = bool(value)

    def GetColorAutoGenerated(self):
        return self._colorAutoGenerated

    def SetColorAutoGenerated(self, value):
        self._colorAutoGenerated = bool(value)

    def GetLabelValue(self):
        return self._labelValue

    def SetLabelValue(self, value):
        self._labelValue = int(value)

    def AddRepresentation(self, name, data):
        self._representations[name] = data

    def GetRepresentation(self, name):
        return self._representations.get(name)


def _asciiLower(text):
    return "".join(chr(ord(c) + 32) if "A" <= c <= "Z" else c for c in text)


class vtkSegmentation:
    def __init__(self):
        self._segments = {}  # id -> vtkSegment, in order
        self._sourceRepresentationName = vtkSegmentationConverter.GetBinaryLabelmapRepresentationName()
        self._representations = {self._sourceRepresentationName}
        self._conversionParameters = {}

    def GetSourceRepresentationName(self):
        return self._sourceRepresentationName

    def SetSourceRepresentationName(self, name):
        self._sourceRepresentationName = name
        self._representations.add(name)

    def ContainsRepresentation(self, name):
        return name in self._representations

    def SetConversionParameter(self, name, value):
        self._conversionParameters[name] = value

    def GetConversionParameter(self, name):
        return self._conversionParameters.get(name, "")

    def GenerateUniqueSegmentID(self, segmentId=""):
        if segmentId and segmentId not in self._segments:
            return segmentId
        if not segmentId:
            while True:  # Slicer 5.10: random IDs, never the segment name
                candidate = "Segment_" + uuid.uuid4().hex[:8]
                if candidate not in self._segments:
                    return candidate
        for n in itertools.count(1):
            candidate = f"{segmentId}_{n}"
            if candidate not in self._segments:
                return candidate

    def AddSegment(self, segment, segmentId="", insertBeforeSegmentId=""):
        if insertBeforeSegmentId:
            raise NotImplementedError("the stand-in appends segments only")
        segmentId = self.GenerateUniqueSegmentID(segmentId)
        self._segments[segmentId] = segment
        return True

    def AddEmptySegment(self, segmentId="", segmentName="", color=None):
        segment = vtkSegment()
        if color is not None:
            segment.SetColor(*color)
        names = {s.GetName() for s in self._segments.values()}
        segment.SetName(segmentName or next(f"Segment_{n}" for n in itertools.count(1) if f"Segment_{n}" not in names))
        # AddSegment gives a segment without data an empty source representation of its own
        segment.AddRepresentation(self._sourceRepresentationName, vtkOrientedImageData(np.zeros((0, 0, 0)), np.eye(4)))
        segmentId = self.GenerateUniqueSegmentID(segmentId)
        self._segments[segmentId] = segment
        return segmentId

    def GetSegment(self, segmentId):
        return self._segments.get(segmentId)

    def GetNumberOfSegments(self):
        return len(self._segments)

    def GetNthSegmentID(self, index):
        return list(self._segments)[index] if 0 <= index < len(self._segments) else ""

    def GetSegmentIdBySegmentName(self, name):
        """Case-insensitive for ASCII letters only, as Slicer's (std::transform with ::tolower)."""
        for segmentId, segment in self._segments.items():
            if _asciiLower(segment.GetName()) == _asciiLower(name):
                return segmentId
        return ""

    def RemoveSegment(self, segment):
        segmentId = (
            segment if isinstance(segment, str) else next((i for i, s in self._segments.items() if s is segment), None)
        )
        self._segments.pop(segmentId, None)

    def ClearSegment(self, segmentId):
        segment = self._segments.get(segmentId)
        if segment is not None:
            data = segment.GetRepresentation(self._sourceRepresentationName)
            sharing = [
                s
                for i, s in self._segments.items()
                if i != segmentId and s.GetRepresentation(self._sourceRepresentationName) is data
            ]
            if data is not None and sharing:  # a shared layer: only this segment's label goes
                data._voxels[data._voxels == segment.GetLabelValue()] = 0
            elif data is not None:
                segment.AddRepresentation(
                    self._sourceRepresentationName,
                    vtkOrientedImageData(np.zeros_like(data._voxels), data._imageToWorld),
                )


# --------------------------------------------------------------------------------------------------
# Scene and subject hierarchy


class vtkMRMLScene:
    StartCloseEvent = 66030  # vtkMRMLScene::StartCloseEvent
    EndCloseEvent = 66031

    def __init__(self):
        self._nodes = {}
        self._counters = {}
        self._subjectHierarchy = vtkMRMLSubjectHierarchyNode(self)
        self._url = ""

    def GetURL(self):
        """The scene file (.mrml) last saved or loaded; "" for a scene never saved."""
        return self._url

    def SetURL(self, url):
        self._url = url

    def CreateNodeByClass(self, className):
        if className not in _NODE_CLASSES:
            raise ValueError(f"the stand-in scene cannot create a {className}")
        return _NODE_CLASSES[className]()

    def AddNewNodeByClass(self, className, nodeBaseName=""):
        node = self.CreateNodeByClass(className)
        if nodeBaseName:
            node.SetName(nodeBaseName)
        return self.AddNode(node)

    def AddNode(self, node):
        className = node.GetClassName()
        self._counters[className] = self._counters.get(className, 0) + 1
        node._id = f"{className}{self._counters[className]}"
        if not node.GetName():
            node.SetName(self.GenerateUniqueName(className.replace("vtkMRML", "").replace("Node", "")))
        node._scene = self
        self._nodes[node._id] = node
        if not isinstance(node, (vtkMRMLDisplayNode, vtkMRMLScriptedModuleNode)):  # no subject hierarchy item
            self._subjectHierarchy._addDataNode(node)
        return node

    def RemoveNode(self, node):
        if node is None or node.GetID() not in self._nodes:
            return
        del self._nodes[node.GetID()]
        self._subjectHierarchy._removeDataNode(node)
        for displayId in getattr(node, "_displayNodeIds", []):
            display = self._nodes.pop(displayId, None)
            if display is not None:
                display._scene = None
        node._scene = None

    def GetNodeByID(self, nodeId):
        return self._nodes.get(nodeId)

    def GetNumberOfNodes(self):
        return len(self._nodes)

    def GetNthNode(self, index):
        return list(self._nodes.values())[index]

    def GetFirstNodeByClass(self, className):
        return next((n for n in self._nodes.values() if n.IsA(className)), None)

    def GetSingletonNode(self, singletonTag, className):
        return next((n for n in self._nodes.values() if n.IsA(className) and n.GetSingletonTag() == singletonTag), None)

    def GenerateUniqueName(self, baseName):
        names = {n.GetName() for n in self._nodes.values()}
        if baseName not in names:
            return baseName
        return next(f"{baseName}_{n}" for n in itertools.count(1) if f"{baseName}_{n}" not in names)

    def Clear(self, removeSingletons=False):
        """Removes every node, except singletons (a module's parameter node) unless ``removeSingletons``:
        those are kept and Reset, as Slicer's closing a scene does (vtkMRMLScene::Clear, ResetNodes)."""
        for node in list(self._nodes.values()):
            if removeSingletons or not node.GetSingletonTag():
                self.RemoveNode(node)
        for node in self._nodes.values():
            node.Reset(None)
        self._subjectHierarchy = vtkMRMLSubjectHierarchyNode(self)
        self._url = ""


class vtkMRMLSubjectHierarchyNode:
    INVALID_ITEM_ID = 0

    def __init__(self, scene):
        self._scene = scene
        self._sceneItem = 1
        self._next = itertools.count(2)
        self._parents = {}  # item -> parent item
        self._dataNodes = {}  # item -> node ID
        self._names = {self._sceneItem: "Scene"}
        self._attributes = {}

    @staticmethod
    def GetSubjectHierarchyNode(scene):
        return scene._subjectHierarchy

    def GetSceneItemID(self):
        return self._sceneItem

    def _addDataNode(self, node):
        item = next(self._next)
        self._parents[item] = self._sceneItem
        self._dataNodes[item] = node.GetID()
        self._names[item] = node.GetName()

    def _removeDataNode(self, node):
        item = self.GetItemByDataNode(node)
        if item:
            for child in [c for c, p in self._parents.items() if p == item]:
                self._parents[child] = self._parents[item]
            for table in (self._parents, self._dataNodes, self._names, self._attributes):
                table.pop(item, None)

    def GetItemByDataNode(self, node):
        if node is None:
            return self.INVALID_ITEM_ID
        return next((item for item, nodeId in self._dataNodes.items() if nodeId == node.GetID()), self.INVALID_ITEM_ID)

    def GetItemParent(self, item):
        return self._parents.get(item, self.INVALID_ITEM_ID)

    def SetItemParent(self, item, parent, enableCircularCheck=True):
        if item in self._parents and (parent == self._sceneItem or parent in self._parents):
            self._parents[item] = parent

    def CreateFolderItem(self, parent, name):
        item = next(self._next)
        self._parents[item] = parent
        self._names[item] = name
        return item

    def SetItemAttribute(self, item, name, value):
        self._attributes.setdefault(item, {})[name] = value

    def GetItemAttribute(self, item, name):
        return self._attributes.get(item, {}).get(name, "")


mrmlScene = vtkMRMLScene()


# --------------------------------------------------------------------------------------------------
# Module logics


class vtkSlicerVolumesLogic:
    def CreateAndAddLabelVolume(self, volumeNode, name):
        labelNode = vtkMRMLLabelMapVolumeNode()
        labelNode.SetName(mrmlScene.GenerateUniqueName(name))
        mrmlScene.AddNode(labelNode)
        imageData = vtk.vtkImageData()
        imageData.DeepCopy(volumeNode.GetImageData())
        labelNode.SetAndObserveImageData(imageData)
        labelNode._ijkToRAS = volumeNode._ijkToRAS.copy()
        labelNode.SetAndObserveTransformNodeID(volumeNode.GetTransformNodeID())
        labelNode.CreateDefaultDisplayNodes()
        from . import util

        util.arrayFromVolume(labelNode)[:] = 0
        return labelNode


class vtkSlicerSegmentationsModuleLogic:
    @staticmethod
    def ImportLabelmapToSegmentationNode(labelmapNode, segmentationNode, updatedSegmentIDs, userMessages=None):
        if not isinstance(updatedSegmentIDs, vtk.vtkStringArray):
            raise TypeError(
                "the stand-in models only ImportLabelmapToSegmentationNode(labelmapNode, "
                "segmentationNode, vtkStringArray)"
            )
        segmentation = segmentationNode.GetSegmentation()
        binary = vtkSegmentationConverter.GetBinaryLabelmapRepresentationName()
        if segmentation.GetSourceRepresentationName() != binary:
            return False
        if labelmapNode.GetTransformNodeID() != segmentationNode.GetTransformNodeID():
            raise NotImplementedError("the stand-in does not resample between different parent transforms")
        if segmentationNode.GetDisplayNode() is None:
            segmentationNode.CreateDefaultDisplayNodes()
        from . import util

        labels = util.arrayFromVolume(labelmapNode)
        shared = vtkOrientedImageData(labels, labelmapNode._ijkToRAS)  # one image for all the IDs: a shared layer
        for index in range(updatedSegmentIDs.GetNumberOfValues()):
            segmentId = updatedSegmentIDs.GetValue(index)
            if not segmentId:
                continue
            segment = segmentation.GetSegment(segmentId)
            if segment is None:
                segment = vtkSegment()
                segment.SetName(segmentId)
                segmentation.AddSegment(segment, segmentId)
            segmentation.ClearSegment(segmentId)
            segment.SetLabelValue(index + 1)
            segment.AddRepresentation(binary, shared)
        return True

    @staticmethod
    def ExportSegmentsToLabelmapNode(
        segmentationNode, segmentIDs, labelmapNode, referenceVolumeNode=None, extentComputationMode=None
    ):
        from . import util

        reference = referenceVolumeNode or labelmapNode
        labels = np.zeros(util.arrayFromVolume(reference).shape, np.uint8)
        binary = vtkSegmentationConverter.GetBinaryLabelmapRepresentationName()
        for index in range(segmentIDs.GetNumberOfValues()):
            segment = segmentationNode.GetSegmentation().GetSegment(segmentIDs.GetValue(index))
            data = segment.GetRepresentation(binary) if segment else None
            if data is None or data._voxels.size == 0:  # no data or an empty image: nothing to export
                continue
            if data._voxels.shape != labels.shape or not np.allclose(data._imageToWorld, reference._ijkToRAS):
                raise NotImplementedError("the stand-in exports segments only on their own voxel grid")
            labels[data._voxels == segment.GetLabelValue()] = index + 1
        util.updateVolumeFromArray(labelmapNode, labels)
        labelmapNode._ijkToRAS = reference._ijkToRAS.copy()
        return True


class _CodedEntry:
    def __init__(self, scheme="", value="", meaning="", rgb=(127, 127, 127), label=""):
        self._scheme, self._value, self._meaning, self._rgb, self._label = scheme, value, meaning, tuple(rgb), label

    def GetCodingSchemeDesignator(self):
        return self._scheme

    def GetCodeValue(self):
        return self._value

    def GetCodeMeaning(self):
        return self._meaning

    def GetRecommendedDisplayRGBValue(self):
        return self._rgb


class vtkSlicerTerminologyEntry:
    def __init__(self):
        self._context = None
        self._category = _CodedEntry()
        self._type = _CodedEntry()
        self._typeModifier = _CodedEntry()
        self._regionContext = None

    def GetTerminologyContextName(self):
        return self._context

    def GetCategoryObject(self):
        return self._category

    def GetTypeObject(self):
        return self._type

    def GetTypeModifierObject(self):
        return self._typeModifier

    def GetRegionContextName(self):
        return self._regionContext


# A few entries of Slicer's General Anatomy list, in its JSON structure (v5.10.0).
_GENERAL_ANATOMY = {
    "SegmentationCategoryTypeContextName": "Segmentation category and type - 3D Slicer General Anatomy list",
    "Category": [
        {
            "CodingSchemeDesignator": "SCT",
            "CodeValue": "123037004",
            "CodeMeaning": "Anatomical Structure",
            "Type": [
                {
                    "CodingSchemeDesignator": "SCT",
                    "CodeValue": "80891009",
                    "CodeMeaning": "Heart",
                    "3dSlicerLabel": "heart",
                    "recommendedDisplayRGBValue": [206, 110, 84],
                },
                {
                    "CodingSchemeDesignator": "SCT",
                    "CodeValue": "89837001",
                    "CodeMeaning": "Bladder",
                    "3dSlicerLabel": "urinary bladder",
                    "recommendedDisplayRGBValue": [222, 154, 132],
                },
                {
                    "CodingSchemeDesignator": "SCT",
                    "CodeValue": "10200004",
                    "CodeMeaning": "Liver",
                    "3dSlicerLabel": "liver",
                    "recommendedDisplayRGBValue": [221, 130, 101],
                },
                {
                    "CodingSchemeDesignator": "SCT",
                    "CodeValue": "39607008",
                    "CodeMeaning": "Lung",
                    "Modifier": [
                        {
                            "CodingSchemeDesignator": "SCT",
                            "CodeValue": "24028007",
                            "CodeMeaning": "Right",
                            "3dSlicerLabel": "right lung",
                            "recommendedDisplayRGBValue": [197, 165, 145],
                        },
                        {
                            "CodingSchemeDesignator": "SCT",
                            "CodeValue": "7771000",
                            "CodeMeaning": "Left",
                            "3dSlicerLabel": "left lung",
                            "recommendedDisplayRGBValue": [197, 165, 145],
                        },
                    ],
                },
            ],
        }
    ],
}


class vtkSlicerTerminologiesModuleLogic:
    def FindTypeInTerminologyBy3dSlicerLabel(self, terminologyName, slicerLabel, entry):
        if terminologyName != _GENERAL_ANATOMY["SegmentationCategoryTypeContextName"] or not slicerLabel:
            return False
        for category in _GENERAL_ANATOMY["Category"]:
            for type_ in category["Type"]:
                modifiers = [None] + type_.get("Modifier", [])
                for modifier in modifiers:
                    holder = modifier or type_
                    if holder.get("3dSlicerLabel") != slicerLabel:
                        continue
                    entry._context = terminologyName
                    entry._category = _coded(category)
                    entry._type = _coded(type_)
                    entry._typeModifier = _coded(modifier) if modifier else _CodedEntry()
                    return True
        return False

    @staticmethod
    def SerializeTerminologyEntry(entry):
        def code(c):
            return f"{c.GetCodingSchemeDesignator()}^{c.GetCodeValue()}^{c.GetCodeMeaning()}"

        return "~".join(
            [
                entry.GetTerminologyContextName() or "",
                code(entry.GetCategoryObject()),
                code(entry.GetTypeObject()),
                code(entry.GetTypeModifierObject()),
                entry.GetRegionContextName() or "",
                "^^",
                "^^",
            ]
        )


def _coded(d):
    return _CodedEntry(
        d["CodingSchemeDesignator"],
        d["CodeValue"],
        d["CodeMeaning"],
        d.get("recommendedDisplayRGBValue", (127, 127, 127)),
        d.get("3dSlicerLabel", ""),
    )


class _Module:
    def __init__(self, logic):
        self._logic = logic

    def logic(self):
        return self._logic


class _Modules:
    pass


modules = _Modules()
modules.volumes = _Module(vtkSlicerVolumesLogic())
modules.segmentations = _Module(vtkSlicerSegmentationsModuleLogic())
modules.terminologies = _Module(vtkSlicerTerminologiesModuleLogic())


def resetStandIn(temporaryPath=None):
    """For tests: a fresh scene, no running timers, ``app.temporaryPath`` set."""
    mrmlScene.Clear()
    _extensionsManagerModel.installed.clear()
    for timer in list(qt._activeTimers):
        timer.stop()
    if temporaryPath is not None:
        app.temporaryPath = str(temporaryPath)
    os.makedirs(app.temporaryPath, exist_ok=True)


from . import util  # noqa: E402,F401  (slicer.util is an attribute of the slicer package in Slicer too)
