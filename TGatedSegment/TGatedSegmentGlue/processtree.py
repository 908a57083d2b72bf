"""Start the backend as the root of a process tree of its own, and stop that whole tree.

Why this exists: Slicer starts the backend through ``PythonSlicer``, which is a launcher (CTK's
AppLauncher): it sets up the environment, starts the real Python interpreter as its *child* and waits
for it. ``Popen.terminate()``/``kill()`` signal only the process ``Popen`` started, the launcher: the
interpreter, now an orphan, keeps computing (and keeps the output pipe open, so that waiting for the
end of the output waits for it too). So the backend is started as the root of a group of its own and
stopping signals the group:

- POSIX (Linux, macOS): a new session (``start_new_session=True``, i.e. ``setsid``), so that the
  process group id is the launcher's pid and holds every process it starts; ``os.killpg`` SIGTERM
  (the backend stops cleanly and writes nothing), then SIGKILL after a grace period. A process that
  moved itself to another group or session (a daemon) escapes; the backend starts none.
- Windows: a new process group (``CREATE_NEW_PROCESS_GROUP``) and ``taskkill /T /F /PID``, which
  ends the launcher and all its descendants at once. Windows has no SIGTERM for a console program
  started with a hidden window, so this stop is always a hard one (as ``terminate()`` already was).

Nothing here blocks for long: :meth:`ProcessTree.stop` sends the signal and returns;
:meth:`ProcessTree.stopped` is a non-blocking check (called from a ``qt.QTimer`` in Slicer) that also
kills the tree once the grace period is over. Standard library only, no Slicer: the pytest suite runs
it for real.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from typing import Sequence

WINDOWS = os.name == "nt"
# The output pipes of an orphan that escaped the group, or a process stuck in the kernel, may outlive
# SIGKILL for a while; after this many seconds the tree is reported as stopped anyway (``abandoned``),
# so that a cancelled job always ends.
ABANDON_AFTER_KILL_S = 5.0


def startProcessTree(
    args: Sequence[str], env: dict | None = None, cwd: str | None = None, stdin: bool = False
) -> subprocess.Popen:
    """Start ``args`` as :func:`slicer.util.launchConsoleProcess` does (output and errors on one text
    pipe, no console window on Windows), but as the root of a process group of its own, which
    launchConsoleProcess has no option for. ``env`` is the complete environment (None: this one).
    The pipe is read as UTF-8 (the backend writes UTF-8 whatever the locale: PYTHONIOENCODING), and a
    byte that is not UTF-8 (a log line from some library) becomes U+FFFD instead of an exception.
    ``stdin``: also a pipe to the process's standard input (the warm backend reads requests there)."""
    options: dict = {}
    if WINDOWS:
        info = subprocess.STARTUPINFO()
        info.dwFlags = subprocess.STARTF_USESHOWWINDOW
        info.wShowWindow = 0  # SW_HIDE, as launchConsoleProcess
        options.update(startupinfo=info, creationflags=subprocess.CREATE_NEW_PROCESS_GROUP)
    else:
        options.update(start_new_session=True)
    return subprocess.Popen(
        list(args),
        env=env,
        cwd=cwd,
        stdin=subprocess.PIPE if stdin else None,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        encoding="utf-8",
        errors="replace",
        bufsize=1,
        **options,
    )


def _linuxGroupMembers(pgid: int) -> list[int] | None:
    """PIDs of the live (not zombie) processes in process group ``pgid``; None without /proc."""
    try:
        entries = os.listdir("/proc")
    except OSError:
        return None
    members = []
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as stat:
                text = stat.read()
        except OSError:  # ended while we looked
            continue
        # "pid (comm) state ppid pgrp ...": comm may hold spaces and parentheses, so split after the last ')'.
        fields = text[text.rfind(b")") + 2 :].split()
        if len(fields) >= 3 and int(fields[2]) == pgid and fields[0] not in (b"Z", b"X"):
            members.append(int(entry))
    return members


class ProcessTree:
    """The processes of one backend run: the process ``popen`` started and everything it started.

    Built around a process from :func:`startProcessTree`. A process from another launcher (one that
    does not lead its own group, e.g. from :func:`slicer.util.launchConsoleProcess`) is handled as a
    single process: signalling its parent's group would hit Slicer itself.
    """

    def __init__(self, popen: subprocess.Popen):
        self.popen = popen
        self.pid = popen.pid
        self.abandoned = False  # stop() gave up waiting after the kill (see ABANDON_AFTER_KILL_S)
        self._killer: subprocess.Popen | None = None  # Windows: the running taskkill
        self._deadline: float | None = None
        self._killedAt: float | None = None
        self.ownGroup = WINDOWS
        if not WINDOWS:
            try:
                self.ownGroup = os.getpgid(self.pid) == self.pid
            except OSError:  # already gone and reaped
                self.ownGroup = False

    # --- state -------------------------------------------------------------------------------------

    def alive(self) -> bool:
        """True while any process of the tree is running (non-blocking)."""
        self.popen.poll()  # reap the root, so that its zombie does not count
        if WINDOWS or not self.ownGroup:
            killing = self._killer is not None and self._killer.poll() is None
            return self.popen.returncode is None or killing
        members = _linuxGroupMembers(self.pid)
        if members is not None:
            # a multi-threaded root (PyTorch's worker threads) shows as a zombie while its other threads
            # still exit, before waitpid can reap it: the tree is gone only once the root is reaped
            return bool(members) or self.popen.poll() is None
        try:  # macOS: no /proc; orphans' zombies are reaped by launchd at once
            os.killpg(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True

    # --- signals -----------------------------------------------------------------------------------

    def _signalGroup(self, signum: int) -> None:
        if not self.ownGroup:
            if self.popen.poll() is None:
                self.popen.send_signal(signum)
            return
        try:
            os.killpg(self.pid, signum)
        except ProcessLookupError:  # nothing left
            pass

    def _taskkill(self) -> None:
        """Windows: end the launcher and its descendants (``/T``) at once (``/F``), without waiting."""
        if self._killer is not None or self.popen.poll() is not None:
            if self.popen.poll() is None:
                self.popen.kill()
            return
        try:
            self._killer = subprocess.Popen(
                ["taskkill", "/T", "/F", "/PID", str(self.pid)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                creationflags=getattr(subprocess, "CREATE_NO_WINDOW", 0),
            )
        except OSError:  # no taskkill: at least the launcher
            self.popen.kill()

    def terminate(self) -> None:
        """Ask every process of the tree to stop (POSIX SIGTERM; Windows: a hard stop, see the module)."""
        if WINDOWS:
            self._taskkill()
        else:
            self._signalGroup(signal.SIGTERM)

    def kill(self) -> None:
        """End every process of the tree now."""
        self._killedAt = time.monotonic()
        if WINDOWS:
            self._taskkill()
        else:
            self._signalGroup(signal.SIGKILL)

    # --- stopping without blocking -----------------------------------------------------------------

    def stop(self, grace: float = 5.0) -> None:
        """Begin stopping: :meth:`terminate` now, :meth:`kill` once ``grace`` seconds have passed
        (``grace <= 0``: kill now). Returns at once; :meth:`stopped` tells when it is over."""
        now = time.monotonic()
        if self._deadline is None:
            self._deadline = now + max(grace, 0.0)
            if grace > 0:
                self.terminate()
        else:  # asked again, perhaps more urgently
            self._deadline = min(self._deadline, now + max(grace, 0.0))
        self.stopped()

    def stopped(self) -> bool:
        """Non-blocking: True once no process of the tree is left. Kills the tree when the grace
        period of :meth:`stop` is over, and gives up (``abandoned``) if it outlives the kill."""
        if not self.alive():
            return True
        if self._deadline is None:
            return False
        now = time.monotonic()
        if self._killedAt is None:
            if now >= self._deadline:
                self.kill()
                return not self.alive()
        elif now - self._killedAt >= ABANDON_AFTER_KILL_S:
            self.abandoned = True
            return True
        return False

    def waitStopped(self, timeout: float, interval: float = 0.01) -> bool:
        """:meth:`stopped`, retried for at most ``timeout`` seconds (a fraction of a second on the GUI thread)."""
        end = time.monotonic() + timeout
        while not self.stopped():
            if time.monotonic() >= end:
                return False
            time.sleep(interval)
        return True
