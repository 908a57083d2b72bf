"""The allocator setting (``TGatedSegmentLib/allocator.py``): freed memory is reused, not faulted in
again; the user's environment wins; nothing happens off glibc.

Each case runs in a fresh interpreter: the setting is process-wide and one-way.
"""

from __future__ import annotations

import json
import platform
import subprocess
import sys

import pytest
from helpers.env import python_env

GLIBC = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"

# Allocates, touches and frees a 64 MB tensor (above the 32 MB that glibc's own threshold rises to,
# as a training step's full-resolution maps are) 10 times after 10 rounds of settling; prints whether
# the thresholds were raised and the minor page faults of the last 10 rounds.
PROBE = """
import json, resource, sys
import torch
from TGatedSegmentLib.allocator import is_tuned, keep_freed_memory
keep_freed_memory()
keep_freed_memory()  # a second call changes nothing
for _ in range(10):  # settling: the first few rounds fault either way
    a = torch.ones(16 * 1024 * 1024)
    del a
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    a = torch.ones(16 * 1024 * 1024)  # 64 MB, every page written
    del a
after = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
print(json.dumps({"tuned": is_tuned(), "faults": after - before}))
"""


def _clean_env() -> dict:
    """This checkout's environment without any malloc setting the caller's shell may carry."""
    env = python_env()
    for name in ("TGATED_MALLOC", "MALLOC_MMAP_THRESHOLD_", "GLIBC_TUNABLES"):
        env.pop(name, None)
    return env


def _probe(**env: str) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", PROBE],
        env={**_clean_env(), **env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not GLIBC, reason="glibc's malloc only")
def test_freed_memory_is_reused_instead_of_faulted_in_again():
    pages = 64 * 1024 * 1024 // 4096  # one 64 MB buffer's pages
    untuned = _probe(TGATED_MALLOC="system")
    tuned = _probe()
    assert not untuned["tuned"] and tuned["tuned"]
    # glibc's default: every 64 MB buffer is a fresh mmap, so all its pages fault again, every time
    assert untuned["faults"] > 5 * pages
    # raised thresholds: the buffer is reused from the heap, its pages already there
    assert tuned["faults"] < pages


@pytest.mark.skipif(not GLIBC, reason="glibc's malloc only")
def test_the_users_malloc_settings_win():
    assert not _probe(MALLOC_MMAP_THRESHOLD_="131072")["tuned"]
    assert not _probe(GLIBC_TUNABLES="glibc.malloc.trim_threshold=0")["tuned"]


def test_nothing_changes_off_glibc(monkeypatch):
    from TGatedSegmentLib import allocator

    def no_gnu_libc(name):  # what macOS's confstr says of a name it does not know
        raise ValueError("unrecognized configuration name")

    monkeypatch.setattr(allocator, "_tuned", None)
    monkeypatch.setattr(allocator.os, "confstr", no_gnu_libc)
    assert allocator.keep_freed_memory() is False
    assert allocator.is_tuned() is False


@pytest.mark.skipif(not GLIBC, reason="glibc's malloc only")
def test_the_command_line_tunes_its_process():
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "import TGatedSegmentLib.cli.main; from TGatedSegmentLib import allocator; print(allocator.is_tuned())",
        ],
        env=_clean_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.stdout.strip().splitlines()[-1] == "True", done.stderr


@pytest.mark.skipif(not GLIBC, reason="glibc's malloc only")
def test_the_kept_memory_is_given_back_when_the_work_ends():
    code = """
import torch
from TGatedSegmentLib.allocator import give_back_freed_memory, keep_freed_memory
def rss_mb():
    return int(open("/proc/self/statm").read().split()[1]) * 4096 / 2**20
keep_freed_memory()
tensors = [torch.ones(16 * 1024 * 1024) for _ in range(8)]  # 512 MB, written
del tensors
kept = rss_mb()
give_back_freed_memory()
print(kept, rss_mb())
"""
    done = subprocess.run([sys.executable, "-c", code], env=_clean_env(), capture_output=True, text=True, timeout=120)
    kept, after = map(float, done.stdout.strip().splitlines()[-1].split())
    assert kept - after > 400, (kept, after)  # the 512 MB freed were kept, and are returned now
