"""The module as a whole: it loads on an old Slicer and says which one is needed; torch is imported
only in the backend process; every user-visible string goes through Slicer's translation; the
device list and the clear message for a missing GPU; the dependency install flow; checkpoints
relative to the scene; the self-test's dependency check.
"""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
import textwrap
import types
from pathlib import Path

import pytest

TESTING = Path(__file__).resolve().parent
REPO = TESTING.parent
MODULE = REPO / "TGatedSegment"
for folder in (TESTING / "slicer_stub", MODULE):
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))

import slicer  # noqa: E402  (the stand-in)
from helpers.slicer import AXIAL, FAKE_BACKEND, fake_logic, logic, make_volume, slicer_tmp  # noqa: E402,F401

import TGatedSegment  # noqa: E402
import TGatedSegmentGlue as glue  # noqa: E402


def run_python(code: str, cwd: Path) -> subprocess.CompletedProcess:
    prelude = f"import sys\nsys.path[:0] = [{str(TESTING / 'slicer_stub')!r}, {str(MODULE)!r}]\n"
    return subprocess.run(
        [sys.executable, "-c", prelude + textwrap.dedent(code)],
        capture_output=True,
        encoding="utf-8",
        cwd=str(cwd),
        timeout=300,
    )


# --------------------------------------------------------------------------------------------------
# An old Slicer


def test_the_module_file_parses_as_python_3_9():
    """Slicer 5.8 runs Python 3.9: the module file (all that loads before the version check) must parse there."""
    ast.parse((MODULE / "TGatedSegment.py").read_text(encoding="utf-8"), feature_version=(3, 9))


def test_on_an_old_slicer_the_module_loads_and_says_which_slicer_is_needed(tmp_path):
    result = run_python(
        """
        import json, types
        sys.version_info = (3, 9, 10, "final", 0)  # what Slicer 5.8 runs
        import slicer
        slicer.app.majorVersion, slicer.app.minorVersion = 5, 8
        import TGatedSegment
        module = TGatedSegment.TGatedSegment(types.SimpleNamespace())
        logic = TGatedSegment.TGatedSegmentLogic()  # Slicer's generic module test creates it
        try:
            logic.segment(None, "liver")
            refused = None
        except RuntimeError as exc:
            refused = str(exc)
        TGatedSegment.TGatedSegmentTest().runTest()  # every test skips, saying why
        print(json.dumps({"problem": TGatedSegment.PYTHON_PROBLEM, "help": module.parent.helpText,
                          "refused": refused, "loaded": sorted(m for m in ("TGatedSegmentGlue", "TGatedSegmentLib",
                                                                          "torch") if m in sys.modules)}))
    """,
        tmp_path,
    )
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout.strip().splitlines()[-1])
    problem = seen["problem"]
    assert "Python 3.10 or newer" in problem and "(5.8)" in problem and "Python 3.9.10" in problem
    assert "3D Slicer 5.10 or newer (recommended)" in problem
    assert seen["help"].startswith(problem) and seen["refused"] == problem
    assert seen["loaded"] == []  # nothing of the backend was even imported
    assert problem in result.stderr  # logged once at load, where Slicer's error log shows it
    assert TGatedSegment.PYTHON_PROBLEM is None and TGatedSegment.pythonVersionProblem((3, 12, 10)) is None


# --------------------------------------------------------------------------------------------------
# torch only in the backend process


def test_torch_is_imported_only_in_the_backend_process(tmp_path):
    """Segmenting, importing the result, the parameter node and detecting the devices import neither torch
    nor transformers in Slicer's process: only the backend process does (here: the stand-in backend)."""
    result = run_python(
        f"""
        import numpy as np
        import slicer
        slicer.resetStandIn({str(tmp_path / "temp")!r})
        import TGatedSegment
        logic = TGatedSegment.TGatedSegmentLogic()
        logic.keepBackendLoaded = False  # the stand-in backend answers one-shot commands only
        logic.backendCommand = {FAKE_BACKEND!r}
        volume = slicer.util.addVolumeFromArray(np.full((6, 8, 10), 900, np.int16), np.eye(4), "CT")
        parameters = logic.getParameterNode()
        parameters.inputVolume, parameters.prompts = volume, "bright"
        node = logic.segmentFromParameterNode(wait=True)
        report = logic.detectDevices()
        assert node.GetSegmentation().GetNumberOfSegments() == 1 and report.ids == ["cpu"]
        print(sorted(m for m in ("torch", "transformers") if m in sys.modules))
    """,
        TESTING,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "[]"


# --------------------------------------------------------------------------------------------------
# Translations

# Calls whose string arguments a user sees: dialogs, widgets, the panel's log, errors and skips.
VISIBLE_CALLS = {
    "errorDisplay",
    "warningDisplay",
    "infoDisplay",
    "confirmOkCancelDisplay",
    "confirmYesNoDisplay",
    "delayDisplay",
    "addItem",
    "setText",
    "setToolTip",
    "setPlaceholderText",
    "setFormat",
    "QLabel",
    "log",
    "appendPlainText",
    "ValueError",
    "RuntimeError",
    "TypeError",
    "BackendError",
    "InstallError",
    "Cancelled",
    "SkipTest",
    "addAction",
    "QAction",
    "QMenu",
    "getOpenFileName",
    "getExistingDirectory",
    "setWindowTitle",
    "setLabelText",
    "setMarkdown",
    "setHtml",
    "CommandJob",
}
VISIBLE_ATTRIBUTES = {"text", "toolTip", "title", "helpText", "acknowledgementText", "placeholderText", "windowTitle"}


def _literal_problems(node: ast.AST) -> list[str]:
    """Text literals in ``node`` that do not go through ``_()`` (f-strings never may: their text cannot be translated)."""
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "_":
        return []
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "format":
        return _literal_problems(node.func.value)
    if isinstance(node, ast.Constant) and isinstance(node.value, str):  # "%p%" (a progress format) is no text
        return [node.value] if any(c.isalpha() for c in node.value.replace("%p", "")) else []
    if isinstance(node, ast.JoinedStr):
        return [ast.unparse(node)]
    if isinstance(node, ast.BinOp):
        return _literal_problems(node.left) + _literal_problems(node.right)
    if isinstance(node, ast.IfExp):
        return _literal_problems(node.body) + _literal_problems(node.orelse)
    return []


def untranslated(source: str) -> list[tuple[int, str]]:
    """(line, text) of every user-visible string literal in ``source`` not wrapped in ``_()``."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call):
            name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            if name not in VISIBLE_CALLS:
                continue
            # addItem(text, data): the data is not shown; BackendError(message, hint, details, kind): the
            # details are the command line and the backend's output, the kind an identifier
            args = node.args[:1] if name == "addItem" else node.args[:2] if name.endswith("Error") else node.args
            args = list(args) + [k.value for k in node.keywords if k.arg in ("windowTitle", "text")]
            found += [(node.lineno, text) for arg in args for text in _literal_problems(arg)]
        elif isinstance(node, ast.Assign):
            if any(isinstance(t, ast.Attribute) and t.attr in VISIBLE_ATTRIBUTES for t in node.targets):
                found += [(node.lineno, text) for text in _literal_problems(node.value)]
    return found


def test_the_scan_finds_unwrapped_strings():
    source = textwrap.dedent("""
        def f(x):
            slicer.util.errorDisplay("Broken", windowTitle=_("Title"))
            raise ValueError(f"bad {x}")
            label.text = "Hello " + _("world")
            combo.addItem(_("CPU"), "cpu")
            log(_("{n} done").format(n=x))
            logging.info("not for the panel")
    """)
    assert [text for _line, text in sorted(untranslated(source))] == ["Broken", "f'bad {x}'", "Hello "]


def test_every_user_visible_string_goes_through_slicers_translation():
    files = [MODULE / "TGatedSegment.py", *sorted((MODULE / "TGatedSegmentGlue").glob("*.py"))]
    problems = {path.name: untranslated(path.read_text(encoding="utf-8")) for path in files}
    assert {name: found for name, found in problems.items() if found} == {}
    for path in files[1:]:  # each glue module with user text imports the translation function as Slicer's modules do
        text = path.read_text(encoding="utf-8")
        if re.search(r"(?<![\w.])_\(", text):
            assert "from .i18n import tr as _" in text, path.name


def test_translations_are_looked_up_in_slicers_contexts(monkeypatch):
    """Slicer's tr takes the context from the calling file; the glue's strings get their own module's."""
    asked = []

    def translate(context, text):
        asked.append(context)
        return "[fr] " + text

    monkeypatch.setattr(slicer.app, "translate", translate)
    assert glue.modelNote("").startswith("[fr] No trained model")
    assert "TGatedSegmentGlue.models" in asked
    error = glue.errorFromBackend({"kind": "InputError", "message": "flat"}, 2, [], ["x"])
    # the sentence and the run's name ("Segmentation") are both translated
    assert error.message == "[fr] [fr] Segmentation cannot use this input: flat" and "TGatedSegmentGlue.errors" in asked
    assert TGatedSegment.pythonVersionProblem((3, 9, 1)).startswith("[fr] ") and asked[-1] == "TGatedSegment"
    monkeypatch.setattr(slicer.app, "translate", lambda context, text: text.replace("{what}", "{quoi}"))
    assert glue.errorFromBackend({"kind": "X", "message": "m"}, 1, [], ["x"]).message == "Segmentation failed: m"


# --------------------------------------------------------------------------------------------------
# Devices


def test_detected_devices_refuse_a_missing_gpu_before_anything_starts(fake_logic, slicer_tmp):
    report = fake_logic.detectDevices()
    assert report.ids == ["cpu"] and fake_logic.deviceReport is report and fake_logic.devicesJob is None
    volume, _ = make_volume(AXIAL)
    with pytest.raises(ValueError, match="CUDA was asked for, but PyTorch sees no CUDA GPU here") as info:
        fake_logic.segment(volume, "bright", device="cuda")
    assert "Advanced > Device" in str(info.value) and "CPU-only build" in str(info.value)
    assert os.listdir(slicer_tmp) == [] and fake_logic.segmentationJob is None
    assert fake_logic.segment(volume, "bright", device="cpu").GetSegmentation().GetNumberOfSegments() == 1


def test_a_gpu_list_from_the_backend(fake_logic, monkeypatch):
    monkeypatch.setenv(
        "FAKE_BACKEND_DEVICES",
        json.dumps(
            {
                "torch": "2.5.1",
                "cuda_build": "12.4",
                "devices": [
                    {"id": "cpu", "kind": "cpu", "name": "CPU"},
                    {"id": "cuda:0", "kind": "cuda", "name": "L4", "memory_gb": 22.2},
                ],
            }
        ),
    )
    completed = []
    job = fake_logic.detectDevices(wait=False, completedCallback=completed.append)
    assert isinstance(job, glue.DevicesJob)
    from helpers.slicer import run_until_done

    run_until_done(job)
    assert completed == [job] and job.result.choices()[-1] == ("GPU cuda:0: L4 (22.2 GB)", "cuda:0")
    assert fake_logic.deviceReport.problem("cuda:0") is None


def test_the_real_backend_says_plainly_when_cuda_is_missing(logic, tiny_checkpoint, slicer_tmp):
    """Without a device report, the backend's own check (this machine's PyTorch has no CUDA GPU)."""
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU")
    volume, _ = make_volume(AXIAL, shape=(4, 10, 12))
    with pytest.raises(glue.BackendError) as info:
        logic.segment(volume, "liver", checkpoint=str(tiny_checkpoint), device="cuda")
    error = info.value
    assert error.kind == "DeviceError"
    assert error.message.startswith("Segmentation cannot use the chosen device: CUDA was requested but PyTorch sees no")
    assert "Choose CPU (or Auto) under Advanced > Device" in error.hint
    assert os.listdir(slicer_tmp) == []


# --------------------------------------------------------------------------------------------------
# Dependencies: the logic's install flow (Apply and the console call the same)


@pytest.fixture
def install(monkeypatch):
    """missingDependencies answers from a list the fake installers empty; what they were asked is recorded."""
    state = types.SimpleNamespace(missing=[], calls=[], confirm=True, torch_result=object())

    class PyTorchUtilsLogic:
        def installTorch(self, askConfirmation=False, forceComputationBackend=None, torchVersionRequirement=None):
            state.calls.append(("installTorch", askConfirmation, torchVersionRequirement))
            if state.torch_result is not None:
                state.missing = [r for r in state.missing if not r.startswith("torch")]
            return state.torch_result

    def pip_install(requirements):
        state.calls.append(("pip_install", list(requirements)))
        state.missing = [r for r in state.missing if r not in requirements]

    def confirm(text, windowTitle=None, parent=None, **kwargs):
        state.calls.append(("confirm", text))
        return state.confirm

    monkeypatch.setitem(sys.modules, "PyTorchUtils", types.SimpleNamespace(PyTorchUtilsLogic=PyTorchUtilsLogic))
    monkeypatch.setattr(slicer.util, "pip_install", pip_install)
    monkeypatch.setattr(slicer.util, "confirmOkCancelDisplay", confirm)
    monkeypatch.setattr(TGatedSegment.TGatedSegmentLogic, "missingDependencies", lambda self: list(state.missing))
    return state


def test_install_asks_then_installs_torch_through_the_pytorch_extension_and_the_rest_with_pip(install, slicer_tmp):
    logic = TGatedSegment.TGatedSegmentLogic()
    assert logic.installDependencies() is True and install.calls == []  # nothing missing: nothing asked
    install.missing = ["torch>=2.1", "transformers>=4.45", "tqdm>=4.60"]
    assert logic.installDependencies() is True
    assert [c[0] for c in install.calls] == ["confirm", "installTorch", "pip_install"]
    assert "torch, transformers, tqdm" in install.calls[0][1]
    assert install.calls[1] == ("installTorch", False, ">=2.1")
    assert install.calls[2] == ("pip_install", ["transformers>=4.45", "tqdm>=4.60"])


def test_install_refusals_and_failures_are_plain(install, slicer_tmp):
    logic = TGatedSegment.TGatedSegmentLogic()
    install.missing, install.confirm = ["transformers>=4.45"], False
    with pytest.raises(glue.InstallError, match="Not installed: transformers") as info:
        logic.installDependencies()
    assert "press Apply again" in info.value.hint and not [c for c in install.calls if c[0] == "pip_install"]
    install.missing = ["numpy>=999"]
    with pytest.raises(glue.InstallError, match="Slicer's own numpy") as info:
        logic.installDependencies()
    assert info.value.hint == "Reinstall 3D Slicer."
    install.missing, install.confirm, install.torch_result = ["torch>=2.1"], True, None
    with pytest.raises(glue.InstallError, match="PyTorch was not installed"):
        logic.installDependencies()
    del sys.modules["PyTorchUtils"]
    with pytest.raises(glue.InstallError, match="PyTorch extension is not installed") as info:
        logic.installDependencies()
    assert "Extensions Manager" in info.value.hint


def test_the_self_test_checks_dependencies_as_apply_does(install, monkeypatch, slicer_tmp):
    """--testing mode (as in a build's ctest): missing packages skip the backend tests, saying which;
    elsewhere (a user's self-test) it installs them the way Apply does, after asking."""
    import unittest

    test = TGatedSegment.TGatedSegmentTest()
    install.missing = ["torch>=2.1"]
    with pytest.raises(unittest.SkipTest, match=r"not installed \(torch\).*installDependencies"):
        test._readyLogic()
    assert install.calls == []
    monkeypatch.setattr(slicer.app, "testingEnabled", lambda: False)
    assert isinstance(test._readyLogic(), TGatedSegment.TGatedSegmentLogic)
    assert [c[0] for c in install.calls] == ["confirm", "installTorch"]


# --------------------------------------------------------------------------------------------------
# Checkpoints and folders relative to the scene


def test_relative_checkpoints_and_run_folders_follow_the_scene(fake_logic, tmp_path, monkeypatch):
    scene = tmp_path / "study"
    (scene / "models" / "tiny" / "best").mkdir(parents=True)
    models = tmp_path / "my models"
    (models / "flare").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    volume, _ = make_volume(AXIAL)
    with pytest.raises(ValueError, match="not found"):  # a scene never saved: no scene folder, no models folder
        fake_logic.segment(volume, "bright", checkpoint="models/tiny/best")
    slicer.mrmlScene.SetURL(str(scene / "study.mrml"))
    fake_logic.segment(volume, "bright", checkpoint="models/tiny/best")
    argv = fake_logic.argv()
    assert argv[argv.index("--checkpoint") + 1] == str(scene / "models" / "tiny" / "best")
    fake_logic.modelsFolder = str(models)
    fake_logic.segment(volume, "bright", checkpoint="flare")
    argv = fake_logic.argv()
    assert argv[argv.index("--checkpoint") + 1] == str(models / "flare")
    fake_logic.train("data", "runs/first", wait=True, epochs=1)
    argv = fake_logic.argv()
    assert argv[argv.index("--data") + 1] == str(scene / "data")
    assert argv[argv.index("--output") + 1] == str(scene / "runs" / "first")
