"""Stand-in for the ``slicer.util`` functions the TGatedSegment logic and its self-test call (the
widget's, such as loadUI or errorDisplay, are absent: the panel is not instantiated outside Slicer).

Each follows Base/Python/slicer/util.py of Slicer v5.10.0 (same signature, same behaviour for the
cases modelled; docstrings name what differs).
"""

from __future__ import annotations

import logging
import os

import numpy as np
import vtk
import vtk.util.numpy_support

import slicer


def arrayFromVolume(volumeNode):
    """A view (not a copy) of the voxels, shape (K, J, I); scalar and labelmap volumes only."""
    if volumeNode.GetClassName() not in ("vtkMRMLScalarVolumeNode", "vtkMRMLLabelMapVolumeNode"):
        raise RuntimeError("Unsupported volume type: " + volumeNode.GetClassName())
    image = volumeNode.GetImageData()
    shape = tuple(reversed(image.GetDimensions()))
    return vtk.util.numpy_support.vtk_to_numpy(image.GetPointData().GetScalars()).reshape(shape)


def updateVolumeFromArray(volumeNode, narray):
    """Deep-copies a 3D (K, J, I) array into the volume (the stand-in models scalar 3D arrays only)."""
    if narray.ndim != 3:
        raise RuntimeError("the stand-in models only 3D scalar arrays, got shape " + str(narray.shape))
    vtype = vtk.util.numpy_support.get_vtk_array_type(narray.dtype)
    if vtype == vtk.VTK_LONG_LONG:
        raise RuntimeError("Unsupported numpy array type: long long")
    image = volumeNode.GetImageData()
    if image is None:
        image = vtk.vtkImageData()
        volumeNode.SetAndObserveImageData(image)
    image.SetDimensions(tuple(reversed(narray.shape)))
    image.AllocateScalars(vtype, 1)
    arrayFromVolume(volumeNode)[:] = narray
    volumeNode.StorableModified()
    volumeNode.Modified()


def addVolumeFromArray(narray, ijkToRAS=None, name=None, nodeClassName=None):
    volumeNode = slicer.mrmlScene.AddNewNodeByClass(nodeClassName or "vtkMRMLScalarVolumeNode", name or "")
    if ijkToRAS is not None:
        if not isinstance(ijkToRAS, vtk.vtkMatrix4x4):
            ijkToRAS = vtkMatrixFromArray(np.asarray(ijkToRAS, dtype=float))
        volumeNode.SetIJKToRASMatrix(ijkToRAS)
    updateVolumeFromArray(volumeNode, narray)
    volumeNode.CreateDefaultDisplayNodes()
    return volumeNode


def arrayFromVTKMatrix(vmatrix):
    if not isinstance(vmatrix, vtk.vtkMatrix4x4):
        raise RuntimeError("the stand-in models vtk.vtkMatrix4x4 only")
    narray = np.eye(4)
    vmatrix.DeepCopy(narray.ravel(), vmatrix)
    return narray


def vtkMatrixFromArray(narray):
    if narray.shape != (4, 4):
        raise RuntimeError("Unsupported numpy array shape: " + str(narray.shape) + " expected (4,4)")
    vmatrix = vtk.vtkMatrix4x4()
    vmatrix.DeepCopy(np.asarray(narray, dtype=float).ravel())
    return vmatrix


def _referenceVolume(segmentationNode, referenceVolumeNode):
    """The given volume, else the segmentation's reference geometry volume (as both Slicer functions do)."""
    if referenceVolumeNode:
        return referenceVolumeNode
    referenceVolumeNode = segmentationNode.GetNodeReference(
        slicer.vtkMRMLSegmentationNode.GetReferenceImageGeometryReferenceRole()
    )
    if not referenceVolumeNode:
        raise RuntimeError(
            "No reference volume is found in the input segmentationNode, therefore a valid "
            "referenceVolumeNode input is required."
        )
    return referenceVolumeNode


def updateSegmentBinaryLabelmapFromArray(narray, segmentationNode, segmentId, referenceVolumeNode=None):
    """Same steps as Slicer's: a temporary labelmap on the reference volume's grid (its parent
    transform included), values outside 0/1 binarised, imported into the one segment, removed."""
    referenceVolumeNode = _referenceVolume(segmentationNode, referenceVolumeNode)
    labelmapVolumeNode = slicer.modules.volumes.logic().CreateAndAddLabelVolume(referenceVolumeNode, "__temp__")
    try:
        if narray.min() >= 0 and narray.max() <= 1:
            updateVolumeFromArray(labelmapVolumeNode, narray)
        else:
            normalized = np.zeros(narray.shape, np.uint8)
            normalized[narray > 0] = 1
            updateVolumeFromArray(labelmapVolumeNode, normalized)
        segmentIds = vtk.vtkStringArray()
        segmentIds.InsertNextValue(segmentId)
        if not slicer.modules.segmentations.logic().ImportLabelmapToSegmentationNode(
            labelmapVolumeNode, segmentationNode, segmentIds
        ):
            raise RuntimeError("Importing of segment failed.")
    finally:
        slicer.mrmlScene.RemoveNode(labelmapVolumeNode)


def arrayFromSegmentBinaryLabelmap(segmentationNode, segmentId, referenceVolumeNode=None):
    """A copy of the segment's voxels on the reference volume's grid (the stand-in: only when the
    segment already lies on that grid; Slicer would resample)."""
    referenceVolumeNode = _referenceVolume(segmentationNode, referenceVolumeNode)
    segmentIds = vtk.vtkStringArray()
    segmentIds.InsertNextValue(segmentId)
    labelmapVolumeNode = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "__temp__")
    try:
        if not slicer.modules.segmentations.logic().ExportSegmentsToLabelmapNode(
            segmentationNode, segmentIds, labelmapVolumeNode, referenceVolumeNode
        ):
            raise RuntimeError("Export of segment failed.")
        narray = np.copy(arrayFromVolume(labelmapVolumeNode))
    finally:
        slicer.mrmlScene.RemoveNode(labelmapVolumeNode)
    return narray


def startupEnvironment():
    """The environment Slicer was started from; the stand-in's process started from os.environ."""
    return dict(os.environ)


# What the slice views show, as setSliceViewerLayers last set it (node IDs and foreground opacity).
sliceViewerLayers: dict = {}


def setSliceViewerLayers(
    background="keep-current",
    foreground="keep-current",
    label="keep-current",
    foregroundOpacity=None,
    labelOpacity=None,
    fit=False,
    rotateToVolumePlane=False,
):
    for role, node in (("background", background), ("foreground", foreground), ("label", label)):
        if node != "keep-current":
            sliceViewerLayers[role] = node.GetID() if hasattr(node, "GetID") else node
    if foregroundOpacity is not None:
        sliceViewerLayers["foregroundOpacity"] = float(foregroundOpacity)


def confirmOkCancelDisplay(text, windowTitle=None, parent=None, **kwargs):
    """Slicer's: logs ``text``; in testing mode (``slicer.app.testingEnabled()``) returns True without a
    popup. The stand-in has no popup: outside testing mode it raises."""
    logging.info(text)
    if slicer.app.testingEnabled():
        return True
    raise NotImplementedError("the stand-in shows no dialogs; tests replace confirmOkCancelDisplay")


def confirmYesNoDisplay(text, windowTitle=None, parent=None, **kwargs):
    """Slicer's: logs ``text``; in testing mode returns True ("Yes") without a popup. The stand-in has no
    popup: outside testing mode it raises."""
    logging.info(text)
    if slicer.app.testingEnabled():
        return True
    raise NotImplementedError("the stand-in shows no dialogs; tests replace confirmYesNoDisplay")


class WaitCursor:
    """A context manager that shows a wait cursor in Slicer; nothing to show here."""

    def __init__(self, show=True):
        self.show = show

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc_value, traceback):
        return False


def pip_install(requirements):
    """Slicer 5.10's blocking ``PythonSlicer -m pip install``; the stand-in never installs (tests replace it)."""
    raise NotImplementedError("the stand-in does not install packages; tests replace pip_install")


def delayDisplay(message, autoCloseMsec=1000, parent=None, **kwargs):
    """In Slicer a short-lived popup; in testing mode (and here) a log line."""
    logging.info(message)


class VTKObservationMixin:
    """Present so that the module file imports; the widget (which uses it) is not run outside Slicer."""

    def __init__(self):
        self.Observations = []

    def addObserver(self, obj, event, method, group="none", priority=0.0):
        self.Observations.append((obj, event, method))

    def removeObservers(self, method=None):
        self.Observations = [o for o in self.Observations if method is not None and o[2] != method]
