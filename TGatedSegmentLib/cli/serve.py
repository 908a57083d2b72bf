"""``tgated serve``: a warm backend that keeps one model loaded and answers requests over JSON lines.

Why: a Slicer user segments one volume, then asks for another organ. A fresh ``tgated segment``
pays the start-up and re-encodes every slice; this process pays them once and keeps, for the last
volume, each slice's encoder tokens and adapter output (``inference/volume_cache.py``, keyed by a
content hash of the preprocessed volume), so a new prompt on the same volume costs the decoder.

Protocol (one JSON object per line; requests on stdin, events on stdout, logs on stderr):

* started as ``python -m TGatedSegmentLib serve --checkpoint CKPT --device auto``; once the model is
  loaded: ``{"event": "ready", "pid", "checkpoint", "device", "precision"}``;
* ``{"op": "segment", "id": ID, "input": PATH, "output": PATH, "prompts": "liver, spleen" | [...],
  "preset", "modality", "threshold", "overwrite"}``: the events of ``tgated segment --progress json``
  (``info``, ``progress`` with stages ``segment`` and ``write``, then ``done``, ``error`` or
  ``cancelled``), each with the request's ``id``; ``done`` also says ``cached`` (the volume's
  tokens were reused) and ``slices_encoded``;
* ``{"op": "cancel"}``: the running request stops at its next batch and reports ``cancelled``; the
  process stays up for the next request;
* ``{"op": "ping", "id"}``: ``{"event": "pong"}``; ``{"op": "shutdown"}`` (or the end of stdin):
  ``{"event": "bye"}`` and exit 0. SIGTERM stops it like Ctrl-C (the glue's process-tree kill).

A checkpoint or device change needs a new process: the client restarts it
(``TGatedSegment/TGatedSegmentGlue/warm.py``). Requests run one at a time, in order.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import signal
import sys
import threading
import time

from ..errors import EXIT_CANCELLED, Cancelled, TGatedError
from ..progress import CancelToken, Progress
from .common import add_compute_options


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "serve",
        help="keep a model loaded and segment on request (JSON lines; for Slicer)",
        description=__doc__.split("\n\n")[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--checkpoint", metavar="PATH|HUB_ID", help="checkpoint folder or hub id (default: zero-shot)")
    add_compute_options(p, amp=False, precision=True)
    p.add_argument(
        "--cache-mb",
        type=float,
        default=4096.0,
        help="memory for the last volume's encoder tokens and adapter outputs (default 4096 MB)",
    )
    p.set_defaults(func=run, progress="json")


class Channel:
    """stdout, one JSON event per line, written whole by one thread at a time."""

    def __init__(self, stream=None):
        self.stream = stream or sys.stdout
        self._lock = threading.Lock()

    def send(self, event: dict) -> None:
        with self._lock:
            self.stream.write(json.dumps(event, default=str) + "\n")
            self.stream.flush()


class RequestReader(threading.Thread):
    """Reads stdin: ``cancel`` acts at once (on the running request's token), the rest queues up."""

    def __init__(self, channel: Channel, stream=None):
        super().__init__(name="tgated serve stdin", daemon=True)
        self.channel, self.stream = channel, stream or sys.stdin
        self.requests: queue.Queue = queue.Queue()
        self.current: CancelToken | None = None

    def run(self) -> None:
        for line in self.stream:
            line = line.strip()
            if not line:
                continue
            try:
                request = json.loads(line)
                if not isinstance(request, dict):
                    raise ValueError("not an object")
            except ValueError as exc:
                self.channel.send(
                    {
                        "event": "error",
                        "kind": "ProtocolError",
                        "message": f"unreadable request ({exc})",
                        "hint": "Send one JSON object per line.",
                    }
                )
                continue
            if request.get("op") == "cancel":
                if self.current is not None:
                    self.current.cancel()
                continue
            if request.get("op") == "shutdown" and self.current is not None:
                self.current.cancel()
            self.requests.put(request)
        if self.current is not None:  # stdin closed: the client is gone
            self.current.cancel()
        self.requests.put({"op": "shutdown"})


def run(args: argparse.Namespace) -> int:
    from ..inference.api import Segmenter
    from ..inference.volume_cache import VolumeCache

    signal.signal(signal.SIGTERM, _exit)  # Ctrl-C cancels a request; SIGTERM (the glue's kill) ends the process
    channel = Channel()
    segmenter = Segmenter(
        args.checkpoint,
        device=args.device,
        batch_size=args.batch_size,
        precision=args.precision,
        volume_cache=VolumeCache(args.cache_mb),
    )
    channel.send(
        {
            "event": "ready",
            "pid": os.getpid(),
            "checkpoint": args.checkpoint,
            "device": str(segmenter.device),
            "precision": segmenter.precision,
        }
    )
    reader = RequestReader(channel)
    reader.start()
    while True:
        request = reader.requests.get()
        op, rid = request.get("op"), request.get("id")
        if op == "shutdown":
            channel.send({"event": "bye"})
            return 0
        if op == "ping":
            channel.send({"event": "pong", "id": rid})
            continue
        if op != "segment":
            channel.send(
                {
                    "event": "error",
                    "id": rid,
                    "kind": "ProtocolError",
                    "message": f"unknown op {op!r}",
                    "hint": "Use segment, cancel, ping or shutdown.",
                }
            )
            continue
        reader.current = token = CancelToken()
        try:
            channel.send(handle_segment(segmenter, request, token, channel))
        except (Cancelled, KeyboardInterrupt):
            channel.send({"event": "cancelled", "id": rid})
        except TGatedError as exc:
            channel.send(
                {"event": "error", "id": rid, "kind": type(exc).__name__, "message": exc.message, "hint": exc.hint}
            )
        except Exception as exc:  # a bug in one request must not take the warm model down
            channel.send({"event": "error", "id": rid, "kind": type(exc).__name__, "message": str(exc), "hint": None})
        finally:
            reader.current = None


def _exit(signum, frame):
    raise SystemExit(EXIT_CANCELLED)


def handle_segment(segmenter, request: dict, cancel: CancelToken, channel: Channel) -> dict:
    """One ``segment`` request, checked before the model runs as ``tgated segment`` checks it;
    returns its ``done`` event."""
    from ..errors import InputError
    from ..io.volume import read_image
    from ..vocabulary import resolve_prompts
    from .segment import check_dicom_seg_source, check_output

    start = time.perf_counter()
    rid = request.get("id")
    missing = [key for key in ("input", "output") if not request.get(key)]
    if missing:
        raise InputError(f"the request has no {' or '.join(missing)}", "Send input and output paths.")
    output, source = str(request["output"]), str(request["input"])
    check_output(output, bool(request.get("overwrite")))
    organs = resolve_prompts(request.get("prompts"), request.get("preset"))
    image = read_image(source)
    check_dicom_seg_source(output, source, image)
    progress = Progress(lambda event: channel.send({**event, "id": rid}))
    result = segmenter.segment(
        image,
        prompts=organs,
        modality=request.get("modality") or "auto",
        threshold=request.get("threshold"),
        progress=progress,
        cancel=cancel,
    )
    cancel.check()
    progress.update("write", 0, 1)
    written = result.write(output, overwrite=bool(request.get("overwrite")), source=source)
    progress.update("write", 1, 1)
    cache = segmenter.engine.volume_cache
    return {
        "event": "done",
        "id": rid,
        "outputs": [str(p) for p in written],
        "device": result.device,
        "modality": result.modality,
        "seconds": round(time.perf_counter() - start, 3),
        "engine_seconds": round(result.seconds, 3),
        "segments": result.summary(),
        "cached": bool(cache is not None and cache.hits),
        "slices_encoded": result.stats.slices_encoded,
        "precision": segmenter.precision,
    }
