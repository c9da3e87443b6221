"""The local engine: a pool of worker processes on this machine, each holding one ``Segmenter``.

Workers are started with ``spawn`` (a fresh interpreter: ONNX Runtime and OpenMP are not safe
across ``fork``), load the model once, then run ``worker.ScanPipeline`` over a shared task queue,
so a slow scan never holds up the others. Messages back to the parent: ``ready`` (what the engine
runs), ``claimed`` (a scan was taken), ``outcome``, ``init_failed`` (the model or provider cannot be
used: the whole batch stops with that error, since every worker would fail the same way) and
``exit``.

A worker that dies (killed by the kernel for memory, a crash in a native library) fails the scans
it had claimed with exit code 1 and is replaced, so the cohort goes on. Interrupts: Ctrl-C reaches
every process of the terminal's group; SIGTERM to the parent is forwarded to the workers. A worker
stops taking scans, finishes the save it is in (a scan folder appears whole or not at all) and
exits; the parent then waits for them and re-raises ``KeyboardInterrupt``.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import queue
import signal
import time
from typing import Callable

from limbseg_rt.runtime.cohort.jobs import ScanJob
from limbseg_rt.runtime.cohort.worker import STATUS_FAILED, ScanPipeline, WorkerConfig, make_outcome, remote_error
from limbseg_rt.runtime.errors import EXIT_INTERNAL, LimbsegError

START_METHOD = "spawn"
STOP_GRACE_S = 120.0  # how long an interrupted worker may take to finish the save it is in


def _stop_on_signal() -> None:
    """SIGTERM and SIGINT raise KeyboardInterrupt once; repeats are ignored so cleanup can finish."""
    state = {"seen": False}

    def handler(signum, frame):
        if not state["seen"]:
            state["seen"] = True
            raise KeyboardInterrupt(signal.Signals(signum).name)

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


def _worker_main(index: int, config: WorkerConfig, tasks, results) -> None:
    """Entry point of a worker process (module level: ``spawn`` imports it)."""
    _stop_on_signal()
    from limbseg_rt.runtime.api import Segmenter

    seg = None
    try:
        try:
            seg = Segmenter(**config.segmenter_kwargs)
        except Exception as exc:
            code = exc.exit_code if isinstance(exc, LimbsegError) else EXIT_INTERNAL
            results.put(("init_failed", index, (type(exc).__name__, code, (str(exc).splitlines() or [""])[0])))
            return
        results.put(("ready", index, {"pid": os.getpid(), "provider": seg.provider, "precision": seg.precision,
                                      "model_sha256": seg.model_sha256, "model_file": seg.model_path.name,
                                      "load_seconds": seg.load_seconds}))

        def next_job() -> ScanJob | None:
            item = tasks.get()
            if item is None:
                return None
            results.put(("claimed", index, item["id"]))
            return ScanJob.from_dict(item)

        ScanPipeline(seg, config, lambda o: results.put(("outcome", index, o))).run(next_job)
    except KeyboardInterrupt:
        pass
    finally:
        if seg is not None:
            seg.close()
        results.put(("exit", index, None))


class LocalPool:
    """Run ``jobs`` on ``workers`` processes; ``on_outcome(outcome)`` is called in the caller's thread."""

    def __init__(self, config: WorkerConfig, *, workers: int):
        if workers < 1:
            raise ValueError("workers must be at least 1")
        self.config, self.workers = config, workers
        self.ctx = mp.get_context(START_METHOD)
        self.info: dict = {"engine": "local", "workers": workers, "start_method": START_METHOD,
                           "threads_per_worker": config.segmenter_kwargs.get("threads"), "worker_restarts": 0,
                           "ready": []}

    def run(self, jobs: list[ScanJob], on_outcome: Callable[[dict], None]) -> dict:
        tasks, results = self.ctx.Queue(), self.ctx.Queue()
        for j in jobs:
            tasks.put(j.to_dict())
        for _ in range(self.workers):
            tasks.put(None)
        procs: dict[int, mp.Process] = {}
        claimed: dict[int, set[str]] = {}
        exited: set[int] = set()
        by_id = {j.id: j for j in jobs}
        pending = set(by_id)
        next_index = 0

        def start() -> None:
            nonlocal next_index
            p = self.ctx.Process(target=_worker_main, args=(next_index, self.config, tasks, results),
                                 name=f"limbseg-cohort-{next_index}")
            p.start()
            procs[next_index], claimed[next_index] = p, set()
            next_index += 1

        def handle(msg) -> None:
            kind, index, payload = msg
            if kind == "ready":
                self.info["ready"].append(payload)
            elif kind == "claimed":
                claimed[index].add(payload)
            elif kind == "outcome":
                claimed[index].discard(payload["id"])
                if payload["id"] in pending:
                    pending.discard(payload["id"])
                    on_outcome(payload)
            elif kind == "init_failed":
                raise remote_error(*payload)
            elif kind == "exit":
                exited.add(index)

        try:
            for _ in range(min(self.workers, max(1, len(jobs)))):
                start()
            while pending:
                try:
                    handle(results.get(timeout=0.5))
                    continue
                except queue.Empty:
                    pass
                for index, p in list(procs.items()):
                    if index in exited or p.is_alive():
                        continue
                    self._drain(results, handle)  # messages it sent before dying
                    if index in exited:
                        continue
                    exited.add(index)
                    why = _death(p.exitcode)
                    for sid in sorted(claimed[index] & pending):
                        pending.discard(sid)
                        on_outcome(_died(by_id[sid], why))
                    if pending:
                        self.info["worker_restarts"] += 1
                        start()
            self._join(procs, results, handle, timeout=30.0)
        except BaseException:
            tasks.cancel_join_thread()  # unread tasks must not block this process's exit
            for p in procs.values():
                if p.is_alive():
                    p.terminate()  # SIGTERM: the worker finishes its save and exits
            self._join(procs, results, lambda m: _safe(handle, m), timeout=STOP_GRACE_S)
            raise
        finally:
            tasks.cancel_join_thread()
        return self.info

    @staticmethod
    def _drain(results, handle) -> None:
        while True:
            try:
                handle(results.get(timeout=0.05))
            except queue.Empty:
                return

    def _join(self, procs: dict, results, handle, *, timeout: float) -> None:
        """Wait for every worker, reading their messages meanwhile (a full pipe would block their exit)."""
        deadline = time.monotonic() + timeout
        while any(p.is_alive() for p in procs.values()) and time.monotonic() < deadline:
            try:
                handle(results.get(timeout=0.2))
            except queue.Empty:
                pass
        for p in procs.values():
            if p.is_alive():
                p.kill()
            p.join(timeout=5)
        self._drain(results, handle)


def _safe(handle, msg) -> None:
    try:
        handle(msg)
    except LimbsegError:
        pass  # a late init failure while stopping: the interrupt is what the caller reports


def _death(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        name = signal.Signals(-exitcode).name
        hint = " (the kernel may have run out of memory: use fewer --workers)" if name == "SIGKILL" else ""
        return f"the worker process was killed by {name}{hint}"
    return f"the worker process exited unexpectedly (code {exitcode})"


def _died(job: ScanJob, why: str) -> dict:
    return make_outcome(job, STATUS_FAILED, EXIT_INTERNAL, f"{why} while this scan was in progress",
                        error_type="WorkerDied")
