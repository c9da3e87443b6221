"""The node: SCP + stability scheduler + one worker per model + sender, with status on disk and HTTP.

Threads (all daemons; ``stop`` ends them in order):
- pynetdicom's server and association threads (``scp.py``) spool instances and touch the clock;
- the scheduler marks a series complete once ``stable_seconds`` passed since its last instance
  (wall clock, so a restarted node sees how long a series has been quiet) and puts it on a bounded
  queue (``queue_size``; a full queue leaves series waiting on disk), and rewrites ``status.json``;
- the worker runs ``process(series_dir, out_dir) -> list[Path]`` (one at a time: the model is
  loaded once) and commits the result (``Spool.commit_result``);
- the sender C-STOREs committed results (``deliver.py``).

``process`` is injected: ``identity`` (a JSON-able dict: model SHA-256 and the settings that change
the output) goes into the dedup key, so a new model or new settings process a series again.
"""

from __future__ import annotations

import json
import logging
import queue
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from limbseg_rt.runtime.service.config import ServeConfig
from limbseg_rt.runtime.service.deliver import Sender
from limbseg_rt.runtime.service.spool import SeriesChanged, SeriesState, Spool, series_key, write_json

log = logging.getLogger("limbseg_rt.serve")

ProcessFn = Callable[[Path, Path], list]
STATUS_SCHEMA = "limbseg-rt.serve-status/1"
COUNTERS = (
    "received",
    "rejected_associations",
    "refused_quota",
    "refused_malformed",
    "refused_write",
    "queued",
    "processed",
    "duplicates",
    "failed",
    "delivered",
    "delivery_failures",
)


class Node:
    """One DICOM node. ``start()`` binds and returns; ``stop()`` shuts down cleanly (see docs/serve.md)."""

    def __init__(self, config: ServeConfig, process: ProcessFn, identity: dict, *, tick_seconds: float = 0.2):
        self.config, self.process, self.identity, self.tick = config, process, dict(identity), tick_seconds
        self.spool = Spool(config.spool, config.quota_bytes)
        self.counters: dict = {name: 0 for name in COUNTERS}
        self.counters.update(last_processing_s=None, last_delivery_latency_s=None, processing_s_total=0.0)
        self._clock: dict[str, float] = {}  # series UID -> last_received (wall clock)
        self._clock_lock = threading.Lock()
        self._queued: set[str] = set()
        self._queue: queue.Queue[str] = queue.Queue(maxsize=config.queue_size)
        self._stop = threading.Event()
        self._wake_sender = threading.Event()
        self._processing: str | None = None
        self._threads: list[threading.Thread] = []
        self.started = 0.0
        self.scp: Any = None
        self.http: Any = None
        self.sender = Sender(config, self.spool, self.counters)

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        from limbseg_rt.runtime.service.scp import StorageSCP

        self.started = time.time()
        resumed = self.spool.pending_series()
        for state in resumed:  # received before a restart or crash: their clock goes on from disk
            self._clock[state.series_uid] = state.last_received
        undelivered = len(self.spool.undelivered())
        self.scp = StorageSCP(self.config, self.spool, self._on_stored, self.counters)
        self.scp.start()
        log.info(
            "node started",
            extra={
                "event": "started",
                "ae_title": self.config.ae_title,
                "port": self.scp.port,
                "tls": self.config.tls is not None,
                "resumed_series": len(resumed),
                "undelivered_results": undelivered,
            },
        )
        for target, name in (
            (self._schedule_loop, "scheduler"),
            (self._work_loop, "worker"),
            (self._send_loop, "sender"),
        ):
            t = threading.Thread(target=target, name=f"limbseg-serve-{name}", daemon=True)
            t.start()
            self._threads.append(t)
        if self.config.http_port:
            self._start_http()

    def stop(self) -> None:
        """Stop accepting, let the series in flight finish (up to ``shutdown_grace_seconds``), stop sending.

        Nothing is lost either way: a series not committed stays in ``incoming/`` and is processed
        after a restart; undelivered results stay in the outbox.
        """
        if self._stop.is_set():
            return
        log.info("stopping", extra={"event": "stopping", "processing": self._processing})
        if self.scp is not None:
            self.scp.stop()
        self._stop.set()
        self._wake_sender.set()
        deadline = time.monotonic() + self.config.shutdown_grace_seconds
        for t in self._threads:
            t.join(timeout=max(0.0, deadline - time.monotonic()))
        if self.http is not None:
            self.http.shutdown()
            self.http.server_close()
        parked = self._processing
        self.write_status()
        log.info("node stopped", extra={"event": "stopped", "parked_in_flight": parked})

    def wait(self) -> None:
        while not self._stop.wait(0.5):
            pass

    @property
    def port(self) -> int:
        return self.scp.port if self.scp is not None else self.config.port

    # ------------------------------------------------------------------ receiving
    def _on_stored(self, state: SeriesState) -> None:
        with self._clock_lock:
            self._clock[state.series_uid] = state.last_received

    # ------------------------------------------------------------------ scheduling
    def _schedule_loop(self) -> None:
        last_status = 0.0
        while not self._stop.is_set():
            now = time.time()
            with self._clock_lock:
                ready = [
                    uid
                    for uid, t in self._clock.items()
                    if now - t >= self.config.stable_seconds and uid not in self._queued
                ]
            for uid in sorted(ready, key=lambda u: self._clock.get(u, 0.0)):
                try:
                    self._queue.put_nowait(uid)
                except queue.Full:
                    break
                self._queued.add(uid)
                self.counters["queued"] += 1
                log.info("series complete", extra={"event": "series_complete", "series": uid})
            if now - last_status >= 1.0:
                self.write_status()
                last_status = now
            self._stop.wait(self.tick)

    # ------------------------------------------------------------------ work
    def _work_loop(self) -> None:
        while not self._stop.is_set():
            try:
                uid = self._queue.get(timeout=self.tick)
            except queue.Empty:
                continue
            self._processing = uid
            try:
                self._process_series(uid)
            except Exception as exc:  # e.g. the disk filled up while committing: the series stays in incoming/
                log.error(
                    "series not committed; it is tried again",
                    extra={"event": "commit_error", "series": uid, "error": f"{type(exc).__name__}: {exc}"},
                )
            finally:
                self._processing = None
                self._queued.discard(uid)

    def _process_series(self, uid: str) -> None:
        state = self.spool.series_state(uid)
        files = self.spool.series_files(uid)
        if state is None or not files:
            with self._clock_lock:
                self._clock.pop(uid, None)
            return
        if time.time() - state.last_received < self.config.stable_seconds:
            return  # an instance arrived after it was queued: the scheduler queues it again later
        key = series_key(uid, self.identity.get("model_sha256", ""), self.identity.get("settings", {}))
        if self.spool.is_done(key):
            self.spool.drop_incoming(uid)
            with self._clock_lock:
                self._clock.pop(uid, None)
            self.counters["duplicates"] += 1
            log.info("series already processed", extra={"event": "duplicate", "series": uid, "key": key[:16]})
            return
        log.info("processing", extra={"event": "processing", "series": uid, "instances": len(files)})
        staging = self.spool.staging_dir()
        t0 = time.perf_counter()
        try:
            outputs = [Path(p) for p in self.process(self.spool.incoming / uid, staging)]
            for p in outputs:
                if p.parent.resolve() != staging.resolve() or not p.is_file():
                    raise RuntimeError(f"processing returned {p.name}, not a file in its output folder")
        except Exception as exc:
            shutil.rmtree(staging, ignore_errors=True)
            message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            self.spool.park_failed(
                uid,
                {
                    "series_uid": uid,
                    "error": message,
                    "type": type(exc).__name__,
                    "exit_code": getattr(exc, "exit_code", 1),
                    "time": time.time(),
                },
            )
            with self._clock_lock:
                self._clock.pop(uid, None)
            self.counters["failed"] += 1
            log.error("processing failed", extra={"event": "failed", "series": uid, "error": message})
            return
        seconds = time.perf_counter() - t0
        record = {
            "series_uid": uid,
            "study_uid": state.study_uid,
            "key": key,
            "identity": self.identity,
            "instances": len(files),
            "calling_ae": state.calling_ae,
            "files": [p.name for p in outputs],
            "first_received": state.first_received,
            "last_received": state.last_received,
            "processed_at": time.time(),
            "processing_s": round(seconds, 3),
            # Nothing to send (no muscle found) means nothing to deliver.
            "destinations": {d.name: {"delivered": False, "attempts": 0} for d in self.config.destinations}
            if outputs
            else {},
        }
        try:
            self.spool.commit_result(key, staging, record, expect_last_received=state.last_received)
        except SeriesChanged:
            shutil.rmtree(staging, ignore_errors=True)
            log.info(
                "series changed while processing; it is processed again once stable",
                extra={"event": "requeued", "series": uid},
            )
            return
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)  # gone already if the rename happened
            raise
        with self._clock_lock:
            if self._clock.get(uid) == state.last_received:
                self._clock.pop(uid, None)
        self.counters["processed"] += 1
        self.counters["last_processing_s"] = round(seconds, 3)
        self.counters["processing_s_total"] += seconds
        log.info(
            "processed",
            extra={"event": "processed", "series": uid, "files": len(outputs), "seconds": round(seconds, 3)},
        )
        self._wake_sender.set()

    # ------------------------------------------------------------------ delivery
    def _send_loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.sender.run_once(self._stop)
            except Exception as exc:  # a bug in delivery must not end the node; log and go on
                log.error(
                    "delivery loop error", extra={"event": "delivery_error", "error": f"{type(exc).__name__}: {exc}"}
                )
            self._wake_sender.wait(min(1.0, self.config.backoff_seconds))
            self._wake_sender.clear()

    # ------------------------------------------------------------------ status
    def status(self) -> dict:
        with self._clock_lock:
            waiting = len(self._clock)
        return {
            "schema": STATUS_SCHEMA,
            "time": time.time(),
            "started": self.started,
            "uptime_s": round(time.time() - self.started, 1) if self.started else 0.0,
            "ae_title": self.config.ae_title,
            "port": self.port,
            "tls": self.config.tls is not None,
            "healthy": not self._stop.is_set() and all(t.is_alive() for t in self._threads),
            "series_receiving_or_waiting": waiting,
            "queue_depth": self._queue.qsize(),
            "processing": self._processing,
            "outbox": len(self.spool.undelivered()),
            "spool_bytes": self.spool.used_bytes,
            "spool_quota_bytes": self.spool.quota_bytes,
            "counters": dict(self.counters),
            "identity": self.identity,
        }

    def write_status(self) -> None:
        try:
            write_json(self.spool.root / "status.json", self.status())
        except OSError as exc:
            log.warning("status file not written", extra={"event": "status_error", "error": exc.strerror})

    def _start_http(self) -> None:
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        node = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server's name)
                if self.path == "/health":
                    st = node.status()
                    body, ctype, code = json.dumps(st).encode(), "application/json", 200 if st["healthy"] else 503
                elif self.path == "/metrics":
                    body, ctype, code = prometheus_text(node.status()).encode(), "text/plain; version=0.0.4", 200
                else:
                    body, ctype, code = b"not found\n", "text/plain", 404
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):  # keep http.server off stderr; the node logs JSON lines
                pass

        self.http = ThreadingHTTPServer(("127.0.0.1", self.config.http_port), Handler)
        t = threading.Thread(target=self.http.serve_forever, name="limbseg-serve-http", daemon=True)
        t.start()


def prometheus_text(status: dict) -> str:
    """The status as Prometheus text exposition (counters, gauges); names prefixed ``limbseg_serve_``."""
    lines = []
    for name, value in status["counters"].items():
        if value is None:
            continue
        kind = "gauge" if name.startswith("last_") else "counter"
        metric = f"limbseg_serve_{name}" + ("_total" if kind == "counter" and not name.endswith("_total") else "")
        lines += [f"# TYPE {metric} {kind}", f"{metric} {value}"]
    for name in ("queue_depth", "outbox", "spool_bytes", "spool_quota_bytes", "series_receiving_or_waiting"):
        lines += [f"# TYPE limbseg_serve_{name} gauge", f"limbseg_serve_{name} {status[name]}"]
    lines += ["# TYPE limbseg_serve_up gauge", f"limbseg_serve_up {1 if status['healthy'] else 0}"]
    return "\n".join(lines) + "\n"
