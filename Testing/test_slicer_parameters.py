"""The panel's state is the module's parameter node (slicer.parameterNodeWrapper): it survives saving
and reloading the scene, is scriptable from the Python console, and every panel widget is bound to it.

Run against the stand-in's parameterNodeWrapper (Testing/slicer_stub/slicer/parameterNodeWrapper.py,
written from Slicer's Base/Python/slicer/parameterNodeWrapper/): same serialization into the
vtkMRMLScriptedModuleNode's string parameters and node references, same validators.
"""

from __future__ import annotations

import sys
import typing
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

TESTING = Path(__file__).resolve().parent
REPO = TESTING.parent
for folder in (TESTING / "slicer_stub", REPO / "TGatedSegment"):
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))

import slicer  # noqa: E402  (the stand-in)
from helpers.slicer import AXIAL, fake_logic, make_volume, slicer_tmp  # noqa: E402,F401
from slicer.parameterNodeWrapper import WithinRange  # noqa: E402

import TGatedSegment  # noqa: E402
import TGatedSegmentGlue as glue  # noqa: E402

VALUES = dict(
    prompts="Leber\n肝臓, rein gauche",
    preset="abdomen13",
    checkpoint="runs/best",
    device="cuda:1",
    modality="mr",
    threshold=0.35,
    batchSize=2,
    cropToBody=True,
    replaceExisting=True,
    showIn3D=False,
    uncertainty=True,
    uncertaintySamples=7,
)


def save_and_reload(node):
    """What a scene file keeps of a parameter node, read back into a new node: the string parameters
    (vtkMRMLScriptedModuleNode::WriteXML / ReadXMLAttributes: "name value" pairs), the node
    references by ID (vtkMRMLNode), the singleton tag and the ModuleName attribute. Nothing else of
    the panel's state (widget values, Python attributes) survives."""
    saved = {name: (node.GetParameter(name), node.GetNodeReferenceID(name)) for name in node.GetParameterNames()}
    tag, moduleName = node.GetSingletonTag(), node.GetAttribute("ModuleName")
    slicer.mrmlScene.RemoveNode(node)
    loaded = slicer.mrmlScene.CreateNodeByClass("vtkMRMLScriptedModuleNode")
    loaded.SetSingletonTag(tag)
    loaded.SetAttribute("ModuleName", moduleName)
    for name, (value, reference) in saved.items():
        loaded.SetParameter(name, value)
        if reference:
            loaded.SetNodeReferenceID(name, reference)
    slicer.mrmlScene.AddNode(loaded)
    return loaded


def test_defaults_are_the_panels(slicer_tmp):
    parameters = TGatedSegment.TGatedSegmentLogic().getParameterNode()
    assert (parameters.prompts, parameters.checkpoint, parameters.device, parameters.modality) == (
        "",
        "",
        "auto",
        "auto",
    )
    assert (parameters.threshold, parameters.batchSize, parameters.uncertaintySamples) == (0.0, 4, 10)
    assert parameters.showIn3D and not parameters.replaceExisting and not parameters.cropToBody
    assert parameters.inputVolume is None and parameters.roi is None and parameters.outputSegmentation is None
    node = parameters.parameterNode
    assert node.GetSingletonTag() == "TGatedSegment" and node.GetAttribute("ModuleName") == "TGatedSegment"
    assert node.GetParameter("batchSize") == "4" and node.GetParameter("showIn3D") == "True"  # Slicer's text forms


def test_the_panels_state_survives_saving_and_reloading_the_scene(slicer_tmp):
    logic = TGatedSegment.TGatedSegmentLogic()
    volume, _ = make_volume(AXIAL)
    roi = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLMarkupsROINode", "organs")
    segmentation = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", "mine")
    parameters = logic.getParameterNode()
    for name, value in VALUES.items():
        setattr(parameters, name, value)
    parameters.inputVolume, parameters.roi, parameters.outputSegmentation = volume, roi, segmentation

    loaded = save_and_reload(parameters.parameterNode)
    reloaded = TGatedSegment.TGatedSegmentLogic().getParameterNode()
    assert reloaded.parameterNode is loaded  # the module finds the scene's node, not a new one
    assert {name: getattr(reloaded, name) for name in VALUES} == VALUES
    assert (reloaded.inputVolume, reloaded.roi, reloaded.outputSegmentation) == (volume, roi, segmentation)
    assert isinstance(reloaded.threshold, float) and isinstance(reloaded.batchSize, int)

    slicer.mrmlScene.Clear()  # closing the scene keeps the singleton, reset: the panel starts over
    fresh = TGatedSegment.TGatedSegmentLogic().getParameterNode()
    assert fresh.prompts == "" and fresh.inputVolume is None and fresh.batchSize == 4


def test_values_outside_the_panels_ranges_are_refused(slicer_tmp):
    parameters = TGatedSegment.TGatedSegmentLogic().getParameterNode()
    for name, value in (("batchSize", 0), ("threshold", 1.5), ("uncertaintySamples", 1)):
        with pytest.raises(ValueError):
            setattr(parameters, name, value)
    with pytest.raises(ValueError):
        parameters.prompts = None
    with pytest.raises(TypeError):
        parameters.batchSize = "4"
    with pytest.raises(TypeError):
        parameters.inputVolume = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode")


def test_a_preset_fills_in_its_prompts_and_default_crop(slicer_tmp):
    logic = TGatedSegment.TGatedSegmentLogic()
    logic.applyPreset("abdomen13")
    parameters = logic.getParameterNode()
    assert glue.parsePrompts(parameters.prompts) == list(glue.PRESETS["abdomen13"].prompts)
    assert parameters.cropToBody and parameters.preset == "abdomen13"
    parameters.prompts = "liver"
    logic.applyPreset("")  # no preset: the prompts typed stay
    assert parameters.prompts == "liver" and parameters.preset == ""
    with pytest.raises(ValueError, match="Unknown preset"):
        logic.applyPreset("thorax")


def test_a_script_runs_the_panels_settings(fake_logic, slicer_tmp):
    """Scriptable: set the parameter node, run segmentFromParameterNode; the backend gets those settings."""
    volume, voxels = make_volume(AXIAL)
    parameters = fake_logic.getParameterNode()
    parameters.inputVolume = volume
    parameters.prompts = "bright\npatient left"
    parameters.device, parameters.modality, parameters.threshold, parameters.batchSize = "cpu", "ct", 0.4, 3
    parameters.showIn3D = False
    node = fake_logic.segmentFromParameterNode(wait=True)
    argv = fake_logic.argv()
    options = {flag: argv[n + 1] for n, flag in enumerate(argv[:-1]) if flag.startswith("--")}
    assert options["--prompts"] == "bright, patient left" and options["--device"] == "cpu"
    assert options["--modality"] == "ct" and options["--threshold"] == "0.4" and options["--batch-size"] == "3"
    assert "--checkpoint" not in options and "--uncertainty" not in options
    segmentation = node.GetSegmentation()
    assert segmentation.GetNumberOfSegments() == 2
    assert not segmentation.ContainsRepresentation("Closed surface")
    parameters.threshold = 0.0  # the panel's "model default"
    parameters.outputSegmentation = node
    fake_logic.segmentFromParameterNode(wait=True)
    assert "--threshold" not in fake_logic.argv() and segmentation.GetNumberOfSegments() == 4


# --------------------------------------------------------------------------------------------------
# The panel's widgets and the parameters (what connectGui will bind in Slicer)

# Widget classes Slicer's GUI connectors bind to each parameter type (parameterNodeWrapper/guiConnectors.py).
CONNECTORS = {
    bool: {"QCheckBox", "ctkCheckBox"},
    int: {"QSpinBox", "QSlider", "QDoubleSpinBox", "ctkSliderWidget"},
    float: {"QDoubleSpinBox", "ctkSliderWidget", "ctkDoubleSpinBox"},
    str: {"QLineEdit", "QTextEdit", "QLabel"},
    "node": {"qMRMLNodeComboBox"},
}
# Parameters the widget binds by hand: a QPlainTextEdit (which connectGui does not bind) and combo
# boxes whose items carry data (a str QComboBox needs a fixed Choice list; the devices are detected).
BOUND_BY_HAND = {"prompts", "preset", "device", "modality"}


def _ui_bindings():
    tree = ET.parse(REPO / "TGatedSegment" / "Resources" / "UI" / "TGatedSegment.ui")
    bindings = {}
    for widget in tree.iter("widget"):
        for prop in widget.findall("property"):
            if prop.get("name") == "SlicerParameterName":
                bindings[prop.findtext("string")] = widget
    return bindings


def test_every_parameter_has_its_widget_of_a_kind_connectgui_binds():
    hints = typing.get_type_hints(TGatedSegment.TGatedSegmentParameterNode, include_extras=True)
    bindings = _ui_bindings()
    assert set(bindings) | BOUND_BY_HAND == set(hints) and not set(bindings) & BOUND_BY_HAND
    for name, widget in bindings.items():
        base, *annotations = typing.get_args(hints[name]) or (hints[name],)
        kind = "node" if isinstance(base, type) and issubclass(base, slicer.vtkMRMLNode) else base
        assert widget.get("class") in CONNECTORS[kind], (name, widget.get("class"))
        if widget.get("class") in ("QSpinBox", "QDoubleSpinBox"):
            # connectGui sets the widget's range from WithinRange (or to +-2^31 without it): it must be the .ui's
            bounds = next(a for a in annotations if isinstance(a, WithinRange))
            values = {
                p.get("name"): float(next(iter(p)).text)
                for p in widget.findall("property")
                if p.get("name") in ("minimum", "maximum")
            }
            assert (values["minimum"], values["maximum"]) == (bounds.minimum, bounds.maximum), name
    source = (REPO / "TGatedSegment" / "TGatedSegment.py").read_text(encoding="utf-8")
    for name in BOUND_BY_HAND:
        assert f"p.{name}" in source or f"_parameterNode.{name}" in source, name


def test_the_widget_has_no_state_of_its_own():
    """Widget = GUI wiring: it keeps no segmentation settings in Python attributes (they live in the
    parameter node) and computes nothing the logic does (no backend, no scene import)."""
    import ast

    tree = ast.parse((REPO / "TGatedSegment" / "TGatedSegment.py").read_text(encoding="utf-8"))
    widget = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "TGatedSegmentWidget")
    attributes = {
        t.attr
        for n in ast.walk(widget)
        if isinstance(n, ast.Assign)
        for t in n.targets
        if isinstance(t, ast.Attribute) and isinstance(t.value, ast.Name) and t.value.id == "self"
    }
    assert attributes <= {
        "logic",
        "job",
        "ui",
        "_parameterNode",
        "_parameterNodeGuiTag",
        "_updatingPrompts",
        "promptHistory",
        "modelHistory",
    }, attributes
    calls = {n.func.attr for n in ast.walk(widget) if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)}
    assert not calls & {
        "segment",
        "exportVolume",
        "readResult",
        "importResult",
        "startProcessTree",
        "pip_install",
        "installTorch",
        "backendPrefix",
    }
    widget_source = ast.get_source_segment(
        (REPO / "TGatedSegment" / "TGatedSegment.py").read_text(encoding="utf-8"), widget
    )
    assert "self.logic.installDependencies()" in widget_source  # the install flow is the logic's


def test_the_logic_and_its_jobs_call_one_way():
    """The glue's jobs know nothing of the logic (it hands them callables) and nothing of Slicer."""
    import ast

    for path in (REPO / "TGatedSegment" / "TGatedSegmentGlue").glob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        names = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
        names |= {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)}
        assert "logic" not in names, path
        imported = {alias.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for alias in n.names}
        imported |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
        assert not imported & {"qt", "vtk", "ctk", "torch", "transformers"}, path
        # slicer only for its translation function (i18n.py), and only when present
        assert "slicer" not in imported or path.name == "i18n.py", path
