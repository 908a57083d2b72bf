"""The Slicer module's Slicer-free helpers (TGatedSegment/TGatedSegmentGlue): no Slicer, no stand-in."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
if str(REPO / "TGatedSegment") not in sys.path:
    sys.path.insert(0, str(REPO / "TGatedSegment"))

import TGatedSegmentGlue as glue  # noqa: E402
from TGatedSegmentLib.io.volume import Geometry  # noqa: E402
from TGatedSegmentLib.vocabulary import ABDOMEN13, generated_color  # noqa: E402

# --- prompts, history, names ----------------------------------------------------------------------


def test_prompts_split_like_the_backend():
    assert glue.parsePrompts("liver, left kidney\n\n pancreas ;Liver") == ["liver", "left kidney", "pancreas"]
    assert glue.parsePrompts(["  spleen ", "", "spleen"]) == ["spleen"]
    assert glue.parsePrompts(" ,\n") == []
    assert glue.parsePrompts(glue.ABDOMEN13_PROMPTS) == [o.prompt for o in ABDOMEN13]
    assert len(glue.parsePrompts(glue.ABDOMEN13_PROMPTS)) == 13


def test_prompt_history_keeps_the_last_ten_without_repeats():
    history = []
    for n in range(12):
        history = glue.rememberPrompts(history, [f"organ {n}"])
    assert len(history) == 10 and history[0] == "organ 11" and history[-1] == "organ 2"
    history = glue.rememberPrompts(history, ["Organ 5"])  # same prompt, other case: moves to the front
    assert history[0] == "Organ 5" and sum(h.lower() == "organ 5" for h in history) == 1
    assert glue.rememberPrompts(history, []) == history
    assert glue.decodeHistory(glue.encodeHistory(history)) == history
    for broken in ("not json", "", None, '{"a": 1}', "[1, 2]"):
        assert glue.decodeHistory(broken) == []


def test_keep_rule_suffixes_and_replace_rule_targets_the_same_name():
    assert glue.planSegmentNames(["liver", "spleen"], [], replace=False) == [("liver", False), ("spleen", False)]
    assert glue.planSegmentNames(["liver"], ["Liver", "liver (2)"], replace=False) == [("liver (3)", False)]
    assert glue.planSegmentNames(["liver", "spleen"], ["LIVER"], replace=True) == [("liver", True), ("spleen", False)]
    assert glue.uniqueName("a", set()) == "a" and glue.uniqueName("a", {"a", "a (2)"}) == "a (3)"


def test_names_in_any_script_follow_one_rule():
    """Case and composition do not make another name, in any script (Slicer's own lookup lowers ASCII
    letters only, so the logic finds IDs with segmentIdByName)."""
    decomposed = "rein gauche\u0301"  # "gauché" typed as e + combining accent
    existing = ["LEBER", "Rein gauché", "肝臓"]
    plan = glue.planSegmentNames(["Leber", decomposed, "肝臓", "ÖL"], existing, replace=False)
    assert plan == [("Leber (2)", False), (f"{decomposed} (2)", False), ("肝臓 (2)", False), ("ÖL", False)]
    plan = glue.planSegmentNames(["leber", decomposed, "肝臓"], existing, replace=True)
    assert plan == [("leber", True), (decomposed, True), ("肝臓", True)]
    segments = [("id1", "LEBER"), ("id2", "Rein gauché"), ("id3", "Öl")]
    assert [glue.segmentIdByName(segments, n) for n in ("leber", decomposed, "öl", "spleen")] == [
        "id1",
        "id2",
        "id3",
        "",
    ]


def test_presets_fill_prompts_and_a_default_crop():
    abdomen = glue.preset("abdomen13")
    assert list(abdomen.prompts) == glue.parsePrompts(glue.ABDOMEN13_PROMPTS) and abdomen.cropToBody
    assert abdomen.title() == "Abdomen: 13 organs" and glue.presetTitle("") == "No preset"
    with pytest.raises(ValueError, match="known: abdomen13"):
        glue.preset("thorax")


def test_recent_models_keep_the_last_ten_as_typed():
    history = []
    for n in range(12):
        history = glue.rememberCheckpoint(history, f"/models/run{n}/best")
    assert len(history) == 10 and history[0] == "/models/run11/best"
    history = glue.rememberCheckpoint(history, "/models/run5/best")
    assert history[0] == "/models/run5/best" and history.count("/models/run5/best") == 1
    assert glue.rememberCheckpoint(history, "  ") == history  # zero-shot is not a recent model


def test_default_segmentation_name():
    assert glue.defaultSegmentationName("CT abdomen") == "CT abdomen segmentation"


def test_without_a_trained_model_the_note_says_so_and_where_to_get_one():
    """No trained weights are published: the note says so, names the zero-shot default (a model of
    natural photos) and points to the documentation's section on getting or training a model."""
    note = glue.modelNote("")
    assert note == glue.modelNote(None) == glue.noTrainedModelNote()
    for part in (
        "No trained model",
        "publish no trained weights",
        "zero-shot",
        "CIDAS/clipseg-rd64-refined",
        "natural photos",
        "logic.train",
        glue.MODEL_HELP,
    ):
        assert part in note, part
    section = glue.MODEL_HELP.split("#")[1]
    docs = (REPO / glue.MODEL_HELP.split("#")[0]).read_text(encoding="utf-8")
    assert f"## {section.replace('-', ' ').capitalize()}" in docs  # the anchor names a real section
    assert "\n" not in note


def test_relative_checkpoints_are_found_in_the_scene_folder_then_the_models_folder(tmp_path, monkeypatch):
    scene, models, elsewhere = tmp_path / "scene", tmp_path / "models", tmp_path / "cwd"
    for folder in (scene / "runs" / "best", models / "runs" / "best", models / "flare" / "best", elsewhere / "x"):
        folder.mkdir(parents=True)
    monkeypatch.chdir(elsewhere)  # the backend starts in the extension's folder: never resolve against a cwd
    assert glue.resolveCheckpoint("runs/best", [str(scene), str(models)]) == str(scene / "runs" / "best")
    assert glue.resolveCheckpoint("flare/best", [str(scene), str(models)]) == str(models / "flare" / "best")
    assert glue.resolveCheckpoint("flare/best", [None, str(models)]) == str(models / "flare" / "best")
    assert glue.resolveCheckpoint(str(scene / "runs" / "best"), []) == str(scene / "runs" / "best")
    assert glue.resolveCheckpoint("someone/tgated-flare22", [str(scene)]) == "someone/tgated-flare22"  # a hub id
    assert glue.resolveCheckpoint("  ", [str(scene)]) is None
    with pytest.raises(ValueError, match="looked up in the scene's folder") as info:
        glue.resolveCheckpoint("x", [str(scene), str(models)])  # exists only in the working folder
    assert str(scene) in str(info.value) and str(models) in str(info.value)
    assert glue.modelNote("runs/best", [str(scene)]).startswith("'best' has no readable config.json")


def test_model_note_says_what_each_choice_means(tmp_path, tiny_checkpoint, tiny_baseline_checkpoint):
    assert (
        glue.modelNote(str(tiny_checkpoint)) == "Checkpoint folder: T-Gated (reads 5 neighbouring slices), "
        "untrained (random adapter: for tests only)."
    )
    assert "slice-wise baseline" in glue.modelNote(str(tiny_baseline_checkpoint))
    trained = tmp_path / "trained"
    trained.mkdir()
    config = json.loads((tiny_checkpoint / "config.json").read_text(encoding="utf-8"))
    (trained / "config.json").write_text(json.dumps({**config, "training": {"epochs": 30}}))
    assert glue.modelNote(str(trained)) == "Checkpoint folder: T-Gated (reads 5 neighbouring slices), trained."
    assert "Hub" in glue.modelNote("someone/tgated-flare22")
    assert "no readable config.json" in glue.modelNote(str(tmp_path))
    (tmp_path / "weights.pt").write_bytes(b"x")
    assert "single file" in glue.modelNote(str(tmp_path / "weights.pt"))
    assert glue.modelNote(str(tmp_path / "nothing" / "here")).startswith("Not found")
    for note in (glue.modelNote(""), glue.modelNote(str(tiny_checkpoint)), glue.modelNote("a/b")):
        assert "\n" not in note


# --- appearance ------------------------------------------------------------------------------------


def test_table_organs_get_table_colour_and_snomed_terminology():
    look = glue.segmentAppearance("Left Kidney", 3, slicerLookup=lambda label: pytest.fail("table comes first"))
    assert look.source == "abdomen13"
    assert look.color == pytest.approx(tuple(c / 255 for c in (212, 126, 151)))
    parts = look.terminology.split("~")
    assert parts == [
        "Segmentation category and type - 3D Slicer General Anatomy list",
        "SCT^123037004^Anatomical Structure",
        "SCT^64033007^Kidney",
        "SCT^7771000^Left",
        "Anatomic codes - DICOM master list",
        "^^",
        "^^",
    ]
    assert glue.segmentAppearance("RK", 0).terminology.split("~")[3] == "SCT^24028007^Right"  # alias


def test_other_prompts_use_slicer_terminology_then_a_generated_colour():
    asked = []
    entries = {
        "urinary bladder": ("ctx~SCT^123037004^Anatomical Structure~SCT^89837001^Bladder~^^~~^^~^^", (222, 154, 132)),
        "brain": ("ctx~x~SCT^12738006^Brain~^^~~^^~^^", (127, 127, 127)),
    }

    def lookup(label):
        asked.append(label)
        return entries.get(label)

    look = glue.segmentAppearance("Urinary Bladder", 5, lookup)
    assert asked == ["Urinary Bladder", "urinary bladder"]  # as typed, then lower case (exact match in Slicer)
    assert look.source == "slicer" and look.terminology == entries["urinary bladder"][0]
    assert look.color == pytest.approx((222 / 255, 154 / 255, 132 / 255))
    brain = glue.segmentAppearance("brain", 2, lookup)  # Slicer's "no colour" grey: use a distinct one instead
    assert brain.color == pytest.approx(tuple(c / 255 for c in generated_color(2)))
    lesion = glue.segmentAppearance("liver lesion", 4, lookup)
    assert lesion.source == "generated" and lesion.terminology is None
    assert lesion.color == pytest.approx(tuple(c / 255 for c in generated_color(4)))
    colours = {glue.segmentAppearance(f"thing {n}", n).color for n in range(20)}
    assert len(colours) == 20


def test_modality_texts_follow_the_backend_rule():
    assert glue.modalityFromDicom("CT") == "ct" and glue.modalityFromDicom(" mr ") == "mr"
    assert glue.modalityFromDicom("PT") is None and glue.modalityFromDicom("") is None
    assert glue.checkedModality(" CT ") == "ct" and glue.checkedModality(None) == "auto"
    with pytest.raises(ValueError, match="use auto, ct or mr"):
        glue.checkedModality("pet")


# --- command lines -----------------------------------------------------------------------------------


def test_segment_arguments():
    args = glue.segmentArguments("/t/in.nrrd", "/t/out.seg.nrrd", ["liver", "left kidney"])
    assert args == [
        "segment",
        "/t/in.nrrd",
        "--prompts",
        "liver, left kidney",
        "--output",
        "/t/out.seg.nrrd",
        "--device",
        "auto",
        "--modality",
        "auto",
        "--progress",
        "json",
        "--overwrite",
    ]
    args = glue.segmentArguments(
        "i", "o", ["x"], checkpoint="/ckpt", device="CUDA", modality="MR", threshold=0.35, batchSize=2
    )
    assert args[-6:] == ["--checkpoint", "/ckpt", "--threshold", "0.35", "--batch-size", "2"]
    assert args[args.index("--device") + 1] == "cuda" and args[args.index("--modality") + 1] == "mr"
    for device in ("cuda:1", "MPS", "cpu"):
        args = glue.segmentArguments("i", "o", ["x"], device=device)
        assert args[args.index("--device") + 1] == device.lower()
    for bad in (
        dict(prompts=[]),
        dict(device="tpu"),
        dict(device="cuda:x"),
        dict(modality="pet"),
        dict(threshold=1.0),
        dict(batchSize=0),
        dict(uncertainty=1, uncertaintyOutput="u"),
        dict(uncertainty=3),
    ):
        with pytest.raises(ValueError):
            glue.segmentArguments("i", "o", **{"prompts": ["x"], **bad})


def test_segment_arguments_are_accepted_by_the_real_cli():
    from TGatedSegmentLib.cli.main import build_parser

    args = build_parser().parse_args(
        glue.segmentArguments(
            "i.nrrd", "o.seg.nrrd", ["liver"], checkpoint="c", device="cpu", modality="ct", threshold=0.4, batchSize=3
        )
    )
    assert (args.command, args.prompts, args.progress, args.threshold, args.batch_size, args.modality) == (
        "segment",
        "liver",
        "json",
        0.4,
        3,
        "ct",
    )


def test_train_arguments():
    args = glue.trainArguments(
        "/d",
        "/r",
        epochs=2,
        batch_size=8,
        freezeEncoders=True,
        noTemporal=False,
        resume=True,
        val="/v",
        base="/ckpt",
        device="cpu",
        seed=1,
        steps=None,
    )
    assert args[:6] == ["train", "--data", "/d", "--output", "/r", "--progress"]
    pairs = {flag: args[n + 1] for n, flag in enumerate(args[:-1]) if flag.startswith("--")}
    assert pairs["--epochs"] == "2" and pairs["--batch-size"] == "8" and pairs["--resume"] == "/r"
    assert pairs["--val"] == "/v" and pairs["--base"] == "/ckpt" and pairs["--seed"] == "1"
    assert "--freeze-encoders" in args and "--no-temporal" not in args and "--steps" not in args
    assert glue.trainArguments("/d", "/r", resume="/other")[-2:] == ["--resume", "/other"]
    with pytest.raises(TypeError, match="known: val, base"):
        glue.trainArguments("/d", "/r", lr=1)


def test_device_report_lists_the_detected_devices_and_refuses_missing_ones():
    cpu_only = glue.DeviceReport.fromEvent(
        {
            "event": "done",
            "python": "3.12.10",
            "torch": "2.5.1+cpu",
            "cuda_build": None,
            "devices": [{"id": "cpu", "kind": "cpu", "name": "CPU"}],
        }
    )
    assert cpu_only.ids == ["cpu"] and cpu_only.choices() == [("Auto (CPU: no CUDA GPU found)", "auto"), ("CPU", "cpu")]
    assert cpu_only.problem("auto") is None and cpu_only.problem("cpu") is None
    problem = cpu_only.problem("cuda")
    assert problem.startswith("CUDA was asked for, but PyTorch sees no CUDA GPU here.")
    assert "CPU-only build" in problem and "Advanced > Device" in problem and "PyTorch Utils" in problem
    gpus = glue.DeviceReport.fromEvent(
        {
            "torch": "2.5.1",
            "cuda_build": "12.4",
            "devices": [
                {"id": "cpu", "kind": "cpu", "name": "CPU"},
                {"id": "cuda:0", "kind": "cuda", "name": "RTX A5000", "memory_gb": 23.6},
                {"id": "cuda:1", "kind": "cuda", "name": "RTX A4000", "memory_gb": 15.7},
            ],
        }
    )
    assert gpus.choices()[0] == ("Auto (GPU RTX A5000)", "auto")
    assert ("GPU cuda:1: RTX A4000 (15.7 GB)", "cuda:1") in gpus.choices()
    assert gpus.problem("cuda") is None and gpus.problem("cuda:1") is None
    assert "cuda:0, cuda:1" in gpus.problem("cuda:2") and "not available" in gpus.problem("mps")
    with pytest.raises(ValueError, match="Unknown device"):
        gpus.problem("gpu")


def test_install_plan_keeps_slicers_rules():
    plan = glue.installPlan(["torch>=2.1", "transformers>=4.45", "SimpleITK>=2.2", "tqdm>=4.60"])
    assert plan.bundled == ["SimpleITK>=2.2"] and plan.torch == "torch>=2.1"
    assert plan.pip == ["transformers>=4.45", "tqdm>=4.60"]
    assert plan.names == ["SimpleITK", "torch", "transformers", "tqdm"]
    assert glue.torchVersionRequirement("torch>=2.1") == ">=2.1" and glue.torchVersionRequirement("torch") is None


def test_backend_environment_puts_the_package_first():
    env = glue.backendEnvironment("/ext/lib", "/a:/ext/lib:/b".replace(":", __import__("os").pathsep))
    sep = __import__("os").pathsep
    assert env["PYTHONPATH"].split(sep) == ["/ext/lib", "/a", "/b"]
    assert env["PYTHONUNBUFFERED"] == "1" and env["PYTHONIOENCODING"] == "utf-8"
    assert glue.backendEnvironment("/x", None)["PYTHONPATH"] == "/x"


# --- progress and errors -----------------------------------------------------------------------------


def test_event_lines():
    assert glue.parseEventLine('{"event": "progress", "stage": "load", "done": 0, "total": 1}\n')["stage"] == "load"
    for line in ("INFO: loading", "{not json}", '{"no": "event"}', '["event"]', ""):
        assert glue.parseEventLine(line) is None


def test_progress_tracker_maps_stages_to_a_monotonic_bar():
    tracker = glue.ProgressTracker(glue.SEGMENT_STAGES)
    seen = [tracker.update({"event": "progress", "stage": "load", "done": 1, "total": 1})]
    seen.append(
        tracker.update({"event": "info", "device": "cuda", "modality": "ct", "slices": 80, "orientation": "LPS"})
    )
    assert seen[-1]["text"] == "device cuda, CT, 80 slices, stored LPS"
    for done in (8, 40, 80):
        seen.append(tracker.update({"event": "progress", "stage": "segment", "done": done, "total": 80}))
    assert seen[-2]["text"] == "Segmenting: slice 40 of 80" and seen[-2]["percent"] == 50
    seen.append(tracker.update({"event": "progress", "stage": "load", "done": 0, "total": 1}))  # late: no going back
    seen.append(tracker.update({"event": "done"}))
    seen.append(tracker.update({"event": "progress", "stage": "import", "done": 2, "total": 2}))
    percents = [e["percent"] for e in seen]
    assert percents == sorted(percents) and percents[-1] == 100 and seen[-1]["text"] == "Importing segments: 2 of 2"
    plain = glue.ProgressTracker()
    assert plain.update({"event": "progress", "stage": "epoch", "done": 1, "total": 4}) == {
        "event": "progress",
        "stage": "epoch",
        "done": 1,
        "total": 4,
        "percent": 25,
        "text": "Training: epoch 1 of 4",
    }
    assert plain.update({"event": "progress", "stage": "odd", "done": 1, "total": 2})["text"] == "Odd: 1 of 2"


@pytest.mark.parametrize(
    "event, output, kind, message, hint",
    [
        (
            {
                "kind": "OutOfMemory",
                "message": "the GPU ran out of memory",
                "hint": "Use a smaller --batch-size, or --device cpu.",
            },
            [],
            "OutOfMemory",
            "Segmentation ran out of memory (the GPU ran out of memory)",
            "a smaller batch size, under Advanced",
        ),
        (
            {
                "kind": "DeviceError",
                "message": "CUDA was requested but PyTorch sees no CUDA GPU on this machine",
                "hint": "Use --device cpu (or auto).",
            },
            [],
            "DeviceError",
            "Segmentation cannot use the chosen device: CUDA was requested but PyTorch sees no CUDA GPU on this machine",
            "Choose CPU (or Auto) under Advanced > Device",
        ),
        (
            {"kind": "CheckpointError", "message": "checkpoint 'x' does not exist", "hint": "Check the path."},
            [],
            "CheckpointError",
            "The model could not be loaded: checkpoint 'x' does not exist",
            "Check the path.",
        ),
        (
            {"kind": "InputError", "message": "'a.nii' is a 2D image", "hint": "Load a 3D volume."},
            [],
            "InputError",
            "Segmentation cannot use this input: 'a.nii' is a 2D image",
            "Load a 3D volume.",
        ),
        (
            {"kind": "ModuleNotFoundError", "message": "No module named 'transformers'", "hint": None},
            [],
            "MissingDependency",
            "Segmentation needs the Python package 'transformers', which is not installed",
            "install",
        ),
        ({"kind": "ValueError", "message": "odd", "hint": None}, [], "ValueError", "Segmentation failed: odd", None),
        (
            None,
            ["Traceback", "ImportError: No module named 'torch._C'"],
            "MissingDependency",
            "Segmentation needs the Python package 'torch', which is not installed",
            "PyTorch",
        ),
        (
            None,
            ["INFO: x", "tgated: error: '/x' already exists. Pass --overwrite to replace it."],
            "CommandError",
            "Segmentation failed: '/x' already exists. Pass --overwrite to replace it.",
            None,
        ),
        (
            None,
            ["something", "Segmentation fault", ""],
            "Crash",
            "Segmentation stopped unexpectedly (exit code -11): Segmentation fault",
            "terminal",
        ),
    ],
)
def test_backend_errors_in_plain_words(event, output, kind, message, hint):
    error = glue.errorFromBackend(event, -11 if kind == "Crash" else 1, output, ["python", "-m", "X", "segment"])
    assert error.kind == kind and error.message == message
    assert (hint is None and error.hint is None) or hint in error.hint
    assert error.details.startswith("Command: python -m X segment\nExit code:")
    assert str(error).startswith(message.rstrip("."))


def _python(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def test_backend_process_separates_events_from_log_lines():
    code = (
        "import json,sys\n"
        "print('INFO: starting', file=sys.stderr, flush=True)\n"
        "for n in range(3):\n"
        "    print(json.dumps({'event': 'progress', 'stage': 'segment', 'done': n + 1, 'total': 3}), flush=True)\n"
        "print(json.dumps({'event':'done','device':'cpu'}), flush=True)\n"
    )
    events, logs = [], []
    process = glue.BackendProcess(_python(code), onEvent=events.append, onLog=logs.append).start()
    assert process.wait() == 0
    assert [e["event"] for e in events] == ["progress"] * 3 + ["done"]
    assert logs == ["INFO: starting"] and process.doneEvent == {"event": "done", "device": "cpu"}
    assert process.poll() is True and process.lastError is None


def _started(code: str) -> glue.BackendProcess:
    """A BackendProcess running ``code``, polled until its first output line arrived."""
    logs = []
    process = glue.BackendProcess(_python(code), onLog=logs.append).start()
    end = time.monotonic() + 20
    while not logs:
        assert time.monotonic() < end
        process.poll()
        time.sleep(0.01)
    return process


def _poll_until_finished(process: glue.BackendProcess, timeout: float = 20.0) -> None:
    """What the panel's QTimer does after Cancel: poll until the process tree is reported gone."""
    end = time.monotonic() + timeout
    while not process.poll():
        assert time.monotonic() < end, "the cancelled process was never reported finished"
        time.sleep(0.01)


def test_backend_process_cancel_stops_a_busy_process_quickly():
    process = _started("import time\nprint('busy', flush=True)\nwhile True: time.sleep(0.05)\n")
    started = time.monotonic()
    process.cancel(grace=5)
    assert time.monotonic() - started < 5  # never blocks: at most its short wait
    _poll_until_finished(process)
    assert time.monotonic() - started < 5  # SIGTERM was enough
    assert process.cancelled and process.finished and process.process.poll() is not None


def test_backend_process_kills_what_ignores_sigterm():
    process = _started(
        "import signal,time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "print('stubborn', flush=True)\nwhile True: time.sleep(0.05)\n"
    )
    assert process.cancel(grace=1.0) is False  # still running after the short wait: SIGTERM is ignored
    assert process.stopping and not process.finished
    _poll_until_finished(process)  # killed once the grace period is over
    assert process.process.poll() is not None and process.returncode != 0 and not process.stopping


# --- dependencies ----------------------------------------------------------------------------------------


def test_missing_requirements_are_found_without_importing():
    assert glue.missingRequirements(["numpy>=1.0", "pillow>=9", "SimpleITK>=2"]) == []
    missing = glue.missingRequirements(["numpy>=999", "surely-not-a-package-tgated>=1"])
    assert missing == ["numpy>=999", "surely-not-a-package-tgated>=1"]
    assert glue.requirementName("huggingface_hub>=0.23") == "huggingface_hub"
    assert glue.requirementName("torch") == "torch"


# --- volume hand-over --------------------------------------------------------------------------------------


def test_result_on_another_grid_is_refused(tmp_path):
    from TGatedSegmentLib.io.writers import write_segmentation
    from TGatedSegmentLib.vocabulary import resolve_prompts

    volume = np.zeros((4, 5, 6), np.int16)
    matrix = np.diag([-1.0, -1.0, 2.0, 1.0])
    geometry = glue.exportVolume(volume, matrix, tmp_path / "in.nrrd")
    assert geometry == Geometry.from_ijk_to_ras(matrix, (6, 5, 4))
    masks = np.zeros((1, 4, 5, 6), bool)
    masks[0, 1, 2, 3] = True
    write_segmentation(tmp_path / "ok.seg.nrrd", masks, resolve_prompts("liver"), geometry)
    read = glue.readResult(tmp_path / "ok.seg.nrrd", geometry)
    assert [name for name, _, _ in read.segments] == ["liver"] and np.array_equal(read.mask(0), masks[0])
    shifted = Geometry(geometry.size, geometry.spacing, (1.0, 0.0, 0.0), geometry.direction)
    write_segmentation(tmp_path / "moved.seg.nrrd", masks, resolve_prompts("liver"), shifted)
    with pytest.raises(glue.BackendError, match="voxel grid") as caught:
        glue.readResult(tmp_path / "moved.seg.nrrd", geometry)
    assert caught.value.kind == "GeometryMismatch"
    with pytest.raises(ValueError):
        glue.exportVolume(np.zeros((3, 4)), matrix, tmp_path / "flat.nrrd")


def test_the_backend_report_names_the_copy_in_use_and_an_ignored_installed_one(tmp_path):
    bundled, installed = tmp_path / "ext" / "TGatedSegmentLib", tmp_path / "site" / "TGatedSegmentLib"
    shadowed, line = glue.backendReport(bundled, "0.1.0")
    assert not shadowed and line.endswith(f"TGatedSegmentLib 0.1.0 from {bundled.resolve()}")
    assert glue.backendReport(bundled, "0.1.0", ("0.1.0", str(bundled)))[0] is False  # the same copy
    shadowed, line = glue.backendReport(bundled, "0.1.0", ("0.0.9", str(installed)))
    assert shadowed and "0.0.9" in line and str(installed) in line and "not used" in line
