"""Cancel stops the whole backend process tree, not only the launcher, and never blocks the GUI thread.

In Slicer the backend runs as ``PythonSlicer -m TGatedSegmentLib ...``; PythonSlicer is a launcher
(CTK AppLauncher) that starts the real interpreter as its child and waits for it, and dies on SIGTERM
without passing it on. The stand-in launcher here does the same: a Python script that starts a child
Python (which prints a progress line, writes its PID to a file and then runs until killed) and waits
for it. Everything is real processes and signals, started through the module's own start path
(``TGatedSegmentLogic.launchProcess`` / ``TGatedSegmentGlue.popenLauncher`` -> ``processtree``);
nothing is mocked. POSIX only: the Windows path (``taskkill /T /F``) cannot run here.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from pathlib import Path

import pytest

TESTING = Path(__file__).resolve().parent
REPO = TESTING.parent
for folder in (TESTING / "slicer_stub", REPO / "TGatedSegment"):
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))

import slicer  # noqa: E402  (the stand-in)
from helpers.slicer import AXIAL, make_volume, pump_until, scene_snapshot, slicer_tmp  # noqa: E402,F401

import TGatedSegment  # noqa: E402
import TGatedSegmentGlue as glue  # noqa: E402
from TGatedSegmentGlue import processtree  # noqa: E402

pytestmark = pytest.mark.skipif(os.name != "posix", reason="process groups and signals as on Linux/macOS")

# Bounds generous enough for a loaded 2-core machine; the measured values are printed (pytest -rP).
RETURN_BOUND_S = 2.0  # cancel() on the GUI thread
TREE_GONE_BOUND_S = 3.0  # Cancel -> no process of the tree left (segmentation grace: 1.5 s)
# A test never hangs: a cancel that blocks on the orphaned child (the old code closed the pipe under
# a reader thread that waited for the child's output) is freed by killing the child after this long,
# and the test then fails.
WATCHDOG_S = 15.0

CHILD = r"""
import json, os, signal, sys, time
if sys.argv[2] == "ignore-sigterm":  # like a backend stuck in a long native call
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
print(json.dumps({"event": "progress", "stage": "segment", "done": 0, "total": 100}), flush=True)
tmp = sys.argv[1] + ".tmp"
with open(tmp, "w") as f:
    f.write(str(os.getpid()))
os.replace(tmp, sys.argv[1])
while True:  # "computing" forever, gently: the test machine is shared
    sum(range(1000))
    time.sleep(0.02)
"""

LAUNCHER = r"""
import os, subprocess, sys
# Like PythonSlicer: start the real interpreter as a child, wait for it, pass no signal on.
child = subprocess.Popen([sys.executable, "-c", os.environ["TREE_CHILD_CODE"], os.environ["TREE_PIDFILE"],
                          os.environ.get("TREE_CHILD_MODE", "")])
sys.exit(child.wait())
"""


def process_alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie waiting to be reaped has ended)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            state = stat.read().rsplit(b")", 1)[1].split()[0]
    except OSError:
        return True  # no /proc (macOS): kill(pid, 0) said it exists
    return state not in (b"Z", b"X")


@pytest.fixture
def tree(tmp_path, monkeypatch):
    """The stand-in launcher's command line and a way to read its child's PID. Whatever a test leaves
    running (the old code left the child) is killed afterwards, so that no test leaks a process, and
    a watchdog kills the child WATCHDOG_S after it started (``watchdog_fired``), so no test hangs."""
    launcher = tmp_path / "launcher.py"
    launcher.write_text(LAUNCHER)
    pidfile = tmp_path / "child.pid"
    monkeypatch.setenv("TREE_CHILD_CODE", CHILD)
    monkeypatch.setenv("TREE_PIDFILE", str(pidfile))

    class Tree:
        command = [sys.executable, str(launcher)]
        pids: list[int] = []
        watchdogs: list[threading.Timer] = []
        watchdog_fired = False

        @staticmethod
        def _watchdog(pid: int) -> None:
            if process_alive(pid):
                Tree.watchdog_fired = True
                os.kill(pid, signal.SIGKILL)

        @staticmethod
        def mode(mode: str) -> None:
            monkeypatch.setenv("TREE_CHILD_MODE", mode)

        @staticmethod
        def child_pid(timeout: float = 30.0, pump=None) -> int:
            end = time.monotonic() + timeout
            while not pidfile.exists():
                assert time.monotonic() < end, "the launcher's child did not start"
                if pump:
                    pump()
                time.sleep(0.01)
            pid = int(pidfile.read_text(encoding="utf-8"))
            Tree.pids.append(pid)
            watchdog = threading.Timer(WATCHDOG_S, Tree._watchdog, (pid,))
            watchdog.daemon = True
            watchdog.start()
            Tree.watchdogs.append(watchdog)
            return pid

    yield Tree
    for watchdog in Tree.watchdogs:
        watchdog.cancel()
    for pid in Tree.pids:
        if process_alive(pid):
            os.kill(pid, signal.SIGKILL)
    assert not Tree.watchdog_fired, f"a backend process outlived Cancel by {WATCHDOG_S:.0f} s (killed by the test)"


def wait_gone(pids, started: float, limit: float, pump=None) -> float:
    """Seconds from ``started`` until none of ``pids`` runs (pumping the event loop meanwhile); fails
    after ``limit`` seconds."""
    while any(process_alive(pid) for pid in pids):
        assert time.monotonic() - started < limit + 2.0, f"still running {limit + 2.0:.0f} s after Cancel: {pids}"
        if pump:
            pump()
        time.sleep(0.005)
    return time.monotonic() - started


# --------------------------------------------------------------------------------------------------
# The Slicer-free part: BackendProcess with the stand-alone launcher


@pytest.mark.parametrize("mode", ["", "ignore-sigterm"])
def test_backend_process_cancel_reaches_the_launchers_child(tree, mode):
    """The old cancel terminated the launcher only: its child kept running (and holding the pipe)."""
    tree.mode(mode)
    process = glue.BackendProcess(tree.command).start()
    child = tree.child_pid(pump=process.poll)
    launcher = process.process.pid
    assert os.getpgid(child) == launcher, "the backend runs in a process group of its own"

    started = time.monotonic()
    process.cancel(grace=1.5)
    returned = time.monotonic() - started
    gone = wait_gone([launcher, child], started, TREE_GONE_BOUND_S, pump=process.poll)
    pump_until(process.poll, 10, "the cancelled process to be reported finished")
    print(
        f"BackendProcess.cancel ({mode or 'obeys SIGTERM'}): returned in {returned:.3f} s, tree gone after {gone:.3f} s"
    )
    assert returned < RETURN_BOUND_S
    assert gone < TREE_GONE_BOUND_S
    assert process.cancelled and process.finished and not process.stopping
    assert process.process.poll() is not None and process.returncode != 0


def test_process_tree_is_empty_only_when_every_process_ended(tree):
    """ProcessTree.alive() looks at the whole group: the launcher gone is not the tree gone."""
    process = processtree.startProcessTree(tree.command, dict(os.environ))
    child = tree.child_pid()
    group = processtree.ProcessTree(process)
    assert group.ownGroup and group.alive()
    os.kill(process.pid, signal.SIGKILL)  # only the launcher, as Popen.kill() did
    process.wait(10)
    assert process_alive(child) and group.alive()
    group.stop(grace=0)
    assert group.waitStopped(5.0) and not process_alive(child) and not group.abandoned


def test_a_process_that_leads_no_group_is_stopped_alone(tmp_path):
    """A launcher that did not start a new group (e.g. slicer.util.launchConsoleProcess) must not
    make cancel signal the caller's own group."""
    import subprocess

    process = subprocess.Popen([sys.executable, "-c", "import time\nwhile True: time.sleep(0.05)"])
    try:
        group = processtree.ProcessTree(process)
        assert not group.ownGroup
        group.stop(grace=1.0)
        assert group.waitStopped(5.0) and process.poll() is not None
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


# --------------------------------------------------------------------------------------------------
# The module: the panel's Cancel (logic.cancel) and stopTraining, through the logic's own start path


@pytest.fixture
def tree_logic(slicer_tmp, tree):  # noqa: F811  (slicer_tmp: the fixture imported above)
    logic = TGatedSegment.TGatedSegmentLogic()
    logic.keepBackendLoaded = False  # a one-shot run per Apply: the tree stands in for that process
    logic.backendCommand = tree.command
    return logic


@pytest.mark.parametrize("mode", ["", "ignore-sigterm"])
def test_cancel_stops_the_whole_backend_tree_without_blocking(tree_logic, tree, slicer_tmp, mode):
    tree.mode(mode)
    volume, _ = make_volume(AXIAL)
    before = scene_snapshot()
    events, completed = [], []
    job = tree_logic.segment(
        volume, "liver", progressCallback=events.append, completedCallback=completed.append, wait=False
    )
    child = tree.child_pid(pump=slicer.app.processEvents)
    launcher = job.process.process.pid
    assert job.running

    started = time.monotonic()
    tree_logic.cancel()  # what the panel's Cancel button calls, on the GUI thread
    returned = time.monotonic() - started
    gone = wait_gone([launcher, child], started, TREE_GONE_BOUND_S, pump=slicer.app.processEvents)
    pump_until(lambda: not job.running, 10, "the job to end")
    ended = time.monotonic() - started
    print(
        f"logic.cancel ({mode or 'obeys SIGTERM'}): returned in {returned:.3f} s, tree gone after "
        f"{gone:.3f} s, job ended after {ended:.3f} s"
    )

    assert returned < RETURN_BOUND_S, "Cancel held the GUI thread"
    assert gone < TREE_GONE_BOUND_S
    assert job.state == "cancelled" and completed == [job]
    assert tree_logic.segmentationJob is None
    assert scene_snapshot() == before
    assert os.listdir(slicer_tmp) == []  # temporary files removed once nothing can write there


def test_stop_training_takes_the_same_path(tree_logic, tree, tmp_path):
    """stopTraining returns at once even when the trainer does not stop on SIGTERM (its grace is
    30 s, for the last checkpoint write); the tree is gone once the grace is over or on a kill."""
    tree.mode("ignore-sigterm")
    completed = []
    tree_logic.train(tmp_path / "dataset", tmp_path / "run", completedCallback=completed.append)
    job = tree_logic.trainingJob
    child = tree.child_pid(pump=slicer.app.processEvents)
    launcher = job.process.process.pid

    started = time.monotonic()
    tree_logic.stopTraining()
    assert time.monotonic() - started < RETURN_BOUND_S
    for _ in range(20):  # the event loop keeps running; the trainer is within its grace period
        slicer.app.processEvents()
        time.sleep(0.01)
    assert job.state == "cancelling" and job.running and completed == []
    with pytest.raises(RuntimeError, match="still saving"):
        tree_logic.train(tmp_path / "dataset", tmp_path / "run")

    job.cancel(kill=True)  # e.g. Slicer closing: no grace
    wait_gone([launcher, child], started, TREE_GONE_BOUND_S + 1.0, pump=slicer.app.processEvents)
    pump_until(lambda: not job.running, 10, "the training job to end")
    assert job.state == "cancelled" and completed == [job] and tree_logic.trainingJob is None


def test_a_cancelled_run_can_be_followed_by_a_new_one(tree_logic, tree, slicer_tmp):
    """While the tree is still stopping a new segmentation is refused in plain words, then accepted."""
    tree.mode("ignore-sigterm")
    volume, _ = make_volume(AXIAL)
    job = tree_logic.segment(volume, "liver", wait=False)
    tree.child_pid(pump=slicer.app.processEvents)
    tree_logic.cancel()
    assert job.state == "cancelling"
    with pytest.raises(RuntimeError, match="still stopping"):
        tree_logic.segment(volume, "liver", wait=False)
    pump_until(lambda: not job.running, 10, "the job to end")
    tree.mode("")
    Path(os.environ["TREE_PIDFILE"]).unlink()
    second = tree_logic.segment(volume, "liver", wait=False)
    tree.child_pid(pump=slicer.app.processEvents)
    tree_logic.cancel(kill=True)
    pump_until(lambda: not second.running, 10, "the second job to end")
    assert second.state == "cancelled" and os.listdir(slicer_tmp) == []
    assert not any(process_alive(pid) for pid in tree.pids)


def test_real_launcher_environment_reaches_the_backend(tree_logic, tree, slicer_tmp, tmp_path, monkeypatch):
    """launchProcess starts from Slicer's startup environment plus the backend's variables (what
    launchConsoleProcess did), with the working directory that holds TGatedSegmentLib."""
    record = tmp_path / "env.json"
    script = tmp_path / "show_env.py"
    script.write_text(
        "import json, os, sys\n"
        f"open({str(record)!r}, 'w').write(json.dumps({{'cwd': os.getcwd(), "
        "'PYTHONPATH': os.environ.get('PYTHONPATH'), 'MARK': os.environ.get('TGATED_TEST_MARK'), "
        "'UNBUFFERED': os.environ.get('PYTHONUNBUFFERED')}))\n"
    )
    monkeypatch.setenv("TGATED_TEST_MARK", "from the startup environment")
    process = tree_logic.launchProcess(
        [sys.executable, str(script)], tree_logic.backendEnvironment(), tree_logic.backendLibraryParent()
    )
    assert process.wait(30) == 0
    process.stdout.close()
    seen = json.loads(record.read_text(encoding="utf-8"))
    assert seen["MARK"] == "from the startup environment" and seen["UNBUFFERED"] == "1"
    assert seen["PYTHONPATH"].split(os.pathsep)[0] == str(REPO)
    assert os.path.samefile(seen["cwd"], REPO)
