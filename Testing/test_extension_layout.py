"""The Slicer extension's files: CMake lists complete, requirements consistent, icons, .ui names, and a
module that loads without torch. (What Slicer's build would reject or ship broken, checked here.)"""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
import sys

try:
    import tomllib
except ImportError:  # Python 3.10
    tomllib = None
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
MODULE = REPO / "TGatedSegment"
LIBRARY = REPO / "TGatedSegmentLib"


def cmake_list(path: Path, variable: str) -> list[str]:
    text = re.sub(r"#.*", "", path.read_text(encoding="utf-8"))
    found = re.search(rf"set\(\s*{variable}\s+(.*?)\)", text, re.S)
    assert found, f"{path.relative_to(REPO)} sets no {variable}"
    return [item.replace("${MODULE_NAME}", "TGatedSegment") for item in found.group(1).split()]


def package_files(folder: Path) -> set[str]:
    return {
        p.relative_to(folder).as_posix()
        for p in folder.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and p.name != "CMakeLists.txt"
    }


def test_library_cmake_lists_every_file_of_the_package():
    """Only listed files are shipped (ctkMacroCompilePythonScript): a new backend module must be listed."""
    scripts = cmake_list(LIBRARY / "CMakeLists.txt", "MODULE_PYTHON_SCRIPTS")
    text = (LIBRARY / "CMakeLists.txt").read_text(encoding="utf-8")
    resources = (
        cmake_list(LIBRARY / "CMakeLists.txt", "MODULE_PYTHON_RESOURCES") if "MODULE_PYTHON_RESOURCES" in text else []
    )
    files = package_files(LIBRARY)
    unlisted = sorted(files - set(scripts) - set(resources))
    assert not unlisted, f"add to TGatedSegmentLib/CMakeLists.txt: {unlisted}"
    assert not set(scripts + resources) - files, "CMake lists files that do not exist (configure would fail)"
    assert len(scripts) == len(set(scripts))
    assert all(s.endswith(".py") for s in scripts)
    assert re.search(r"slicerMacroBuildScriptedModule\(\s*NAME \$\{MODULE_NAME\}.*WITH_SUBDIR", text, re.S)


def test_module_cmake_lists_every_script_and_resource():
    cmake = MODULE / "CMakeLists.txt"
    listed = set(cmake_list(cmake, "MODULE_PYTHON_SCRIPTS")) | set(cmake_list(cmake, "MODULE_PYTHON_RESOURCES"))
    files = package_files(MODULE)
    assert files == listed, f"unlisted: {sorted(files - listed)}, missing: {sorted(listed - files)}"
    text = cmake.read_text(encoding="utf-8")
    assert "WITH_GENERIC_TESTS" in text and "slicer_add_python_unittest(SCRIPT ${MODULE_NAME}.py)" in text
    # Slicer loads every .py directly in a module folder as a module: only TGatedSegment.py may be there.
    assert [p.name for p in MODULE.glob("*.py")] == ["TGatedSegment.py"]


def test_extension_cmake_metadata():
    text = (REPO / "CMakeLists.txt").read_text(encoding="utf-8")
    version = re.search(r"cmake_minimum_required\(VERSION (\d+(?:\.\d+)*)", text).group(1)
    assert tuple(map(int, version.split("."))) <= (3, 20, 6), "must configure with Slicer 5.10's CMake"
    assert re.search(r'set\(EXTENSION_CATEGORY "Segmentation"\)', text)
    assert "PyTorch" in re.search(r'set\(EXTENSION_DEPENDS "([^"]*)"\)', text).group(1).split()
    assert "add_subdirectory(TGatedSegmentLib)" in text and "add_subdirectory(TGatedSegment)" in text
    for key in ("EXTENSION_DESCRIPTION", "EXTENSION_CONTRIBUTORS"):
        assert re.search(rf'set\({key} "[^"]+"\)', text), key
    assert "OWNER" not in text and "TODO" not in text  # no placeholder URL


def _metadata_urls(tmp_path, **defines) -> tuple[dict, str]:
    """The URL block of CMakeLists.txt run by CMake itself, with Slicer's repository macro replaced by
    one that reports ``WC_URL`` as the checkout's remote (SlicerMacroExtractRepositoryInfo's output)."""
    text = (REPO / "CMakeLists.txt").read_text(encoding="utf-8")
    block = text[text.index("# Homepage, icon and screenshot") : text.index("# Extension modules")]
    script = tmp_path / "urls.cmake"
    script.write_text(
        "macro(SlicerMacroExtractRepositoryInfo)\n"
        '  cmake_parse_arguments(MY "" "VAR_PREFIX;SOURCE_DIR" "" ${ARGN})\n'
        '  set(${MY_VAR_PREFIX}_WC_URL "${WC_URL}")\n'
        "endmacro()\n" + block + "foreach(key HOMEPAGE ICONURL SCREENSHOTURLS)\n"
        '  message(STATUS "${key}=${EXTENSION_${key}}")\n'
        "endforeach()\n"
    )
    result = subprocess.run(
        ["cmake", *[f"-D{k}={v}" for k, v in defines.items()], "-P", str(script)],
        capture_output=True,
        encoding="utf-8",
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    urls = dict(line[3:].split("=", 1) for line in result.stdout.splitlines() if line.startswith("-- "))
    return urls, result.stderr


@pytest.mark.skipif(shutil.which("cmake") is None, reason="no cmake on this machine")
def test_metadata_urls_are_files_of_this_tree_in_its_public_repository(tmp_path):
    """Homepage, icon and screenshot point at files that exist here (docs/slicer.md, the icon, the
    tutorial's figure), in the repository the checkout was cloned from; with no public repository
    (this project has none yet) they stay empty and configuring says so, never a made-up address."""
    for remote in (
        "git@github.com:someone/SlicerTGatedSegment.git",
        "https://github.com/someone/SlicerTGatedSegment.git",
        "https://github.com/someone/SlicerTGatedSegment",
    ):
        urls, _ = _metadata_urls(tmp_path, WC_URL=remote)
        assert urls["HOMEPAGE"] == "https://github.com/someone/SlicerTGatedSegment/blob/main/docs/slicer.md"
        raw = "https://raw.githubusercontent.com/someone/SlicerTGatedSegment/main/"
        assert urls["ICONURL"] == raw + "TGatedSegment.png"
        assert urls["SCREENSHOTURLS"] == raw + "docs/images/slicer-tutorial.png"
    for url in urls.values():
        assert (REPO / url.split("/main/", 1)[1]).is_file(), url
    urls, warning = _metadata_urls(tmp_path, WC_URL="NA")  # no remote: SlicerMacroExtractRepositoryInfo's "NA"
    assert set(urls.values()) == {""} and "no public repository URL" in warning
    urls, _ = _metadata_urls(tmp_path, WC_URL="NA", TGATED_REPOSITORY_URL="https://github.com/x/y")
    assert urls["HOMEPAGE"] == "https://github.com/x/y/blob/main/docs/slicer.md"


def test_requirements_match_the_package_dependencies():
    """One torch requirement everywhere (a second spec makes pip download torch twice)."""
    requirements = [
        line.strip()
        for line in (MODULE / "Resources" / "requirements.txt").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    text = (REPO / "pyproject.toml").read_text(encoding="utf-8")
    if tomllib is not None:
        dependencies = tomllib.loads(text)["project"]["dependencies"]
    else:
        block = re.search(r"^dependencies = \[(.*?)^\]", text, re.S | re.M).group(1)
        dependencies = re.findall(r'"([^"]+)"', block)
    assert requirements == dependencies


def test_icons_are_128_pixels_and_the_same():
    extension = Image.open(REPO / "TGatedSegment.png")
    module = Image.open(MODULE / "Resources" / "Icons" / "TGatedSegment.png")
    assert extension.size == (128, 128) and module.size == (128, 128)
    assert extension.tobytes() == module.tobytes()
    colours = extension.convert("RGB").getcolors(1 << 16)
    assert colours is None or len(colours) > 200, "a drawn icon, not a placeholder"


def module_source() -> str:
    return (MODULE / "TGatedSegment.py").read_text(encoding="utf-8")


def test_ui_has_every_widget_the_module_uses():
    tree = ET.parse(MODULE / "Resources" / "UI" / "TGatedSegment.ui")
    widgets = {w.get("name"): w.get("class") for w in tree.iter("widget")}
    used = set(re.findall(r"self\.ui\.(\w+)", module_source()))
    assert used, "the widget uses no ui names?"
    missing = sorted(used - set(widgets))
    assert not missing, f"not in TGatedSegment.ui: {missing}"
    expected = {
        "inputVolumeSelector": "qMRMLNodeComboBox",
        "outputSegmentationSelector": "qMRMLNodeComboBox",
        "promptsTextEdit": "QPlainTextEdit",
        "applyButton": "QPushButton",
        "progressBar": "QProgressBar",
        "replaceCheckBox": "QCheckBox",
        "show3DCheckBox": "QCheckBox",
        "deviceComboBox": "QComboBox",
        "modalityComboBox": "QComboBox",
        "thresholdSpinBox": "QDoubleSpinBox",
        "batchSizeSpinBox": "QSpinBox",
        "roiSelector": "qMRMLNodeComboBox",
        "cropToBodyCheckBox": "QCheckBox",
        "presetComboBox": "QComboBox",
        "modelsFolderLineEdit": "ctkPathLineEdit",
        "modelsComboBox": "QComboBox",
        "importModelButton": "QPushButton",
        "modelNoteLabel": "QLabel",
        "modelCardTextBrowser": "QTextBrowser",
        "modelCardCollapsibleButton": "ctkCollapsibleButton",
    }
    assert {name: widgets[name] for name in expected} == expected
    # Every node selector gets the scene from the top widget.
    receivers = {
        c.findtext("receiver") for c in tree.iter("connection") if c.findtext("slot") == "setMRMLScene(vtkMRMLScene*)"
    }
    assert receivers == {name for name, cls in widgets.items() if cls == "qMRMLNodeComboBox"}


def test_module_file_has_the_classes_slicer_looks_up():
    tree = ast.parse(module_source())
    classes = {node.name for node in tree.body if isinstance(node, ast.ClassDef)}
    assert {"TGatedSegment", "TGatedSegmentWidget", "TGatedSegmentLogic", "TGatedSegmentTest"} <= classes


def test_module_loads_without_torch_or_transformers():
    """Module import and the logic's construction import neither (Slicer's generic tests run without them)."""
    code = (
        "import sys\n"
        f"sys.path[:0] = [{str(REPO / 'Testing' / 'slicer_stub')!r}, {str(MODULE)!r}]\n"
        "import TGatedSegment\n"
        "logic = TGatedSegment.TGatedSegmentLogic()\n"
        "logic.missingDependencies()\n"
        "heavy = sorted(m for m in ('torch', 'transformers', 'SimpleITK', 'slicerio') if m in sys.modules)\n"
        "print(heavy)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, encoding="utf-8", cwd=str(REPO / "Testing"), timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
    top_level = [node for node in ast.parse(module_source()).body if isinstance(node, (ast.Import, ast.ImportFrom))]
    names = {alias.name.split(".")[0] for node in top_level for alias in node.names} | {
        node.module.split(".")[0] for node in top_level if isinstance(node, ast.ImportFrom) and node.module
    }
    assert not names & {"torch", "transformers", "SimpleITK", "numpy"}


def test_the_extension_ships_the_licence_its_metadata_names():
    """Slicer's ExtensionsIndex and pip both expect the licence text beside the metadata."""
    licence = (REPO / "LICENSE").read_text(encoding="utf-8")
    declared = re.search(r'^license = "([^"]+)"', (REPO / "pyproject.toml").read_text(encoding="utf-8"), re.M)
    assert (
        declared
        and declared.group(1) == "Apache-2.0"
        and "Apache License" in licence
        and "Version 2.0, January 2004" in licence
    )
