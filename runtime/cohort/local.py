"""The local engine: a pool of worker processes on this machine, each holding one ``Segmenter``.

Workers are started with ``spawn`` (a fresh interpreter: ONNX Runtime and OpenMP are not safe
across ``fork``), load the model once, then run ``worker.ScanPipeline``. Each worker talks to the
parent over its own pipe, never over a queue shared with the other workers: a worker killed while
holding a shared queue's lock would hang every other worker. Messages from a worker: ``ready``
(what the engine runs), ``want`` (its reader thread is free for the next scan; the parent answers
with a job or None when there is no more work), ``outcome``, ``init_failed`` (the model or
provider cannot be used: the batch stops with that error, since every worker would fail the same
way) and ``exit``. Scans go to whichever worker asks first, so a slow scan never holds up others.

A worker that dies (the kernel's OOM killer, a crash in a native library) fails the scans the
parent had handed it with exit code 1 and a message naming the signal, and a new worker takes its
place while scans remain. Interrupts: Ctrl-C reaches every process of the terminal's group;
SIGTERM to the parent is forwarded to the workers. A worker stops taking scans, finishes the save
it is in (a scan folder appears whole or not at all) and exits; the parent waits for them and
re-raises ``KeyboardInterrupt``.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import threading
import time
from collections import deque
from collections.abc import Callable
from multiprocessing.connection import Connection, wait
from typing import Any

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


def _worker_main(index: int, config: WorkerConfig, conn) -> None:
    """Entry point of a worker process (module level: ``spawn`` imports it)."""
    _stop_on_signal()
    lock = threading.Lock()  # the reader, segmenting and writer threads share the pipe

    def send(kind: str, payload=None) -> None:
        with lock:
            conn.send((kind, index, payload))

    from limbseg_rt.runtime.api import Segmenter

    seg = None
    try:
        try:
            seg = Segmenter(**config.segmenter_kwargs)
        except Exception as exc:
            code = exc.exit_code if isinstance(exc, LimbsegError) else EXIT_INTERNAL
            send("init_failed", (type(exc).__name__, code, (str(exc).splitlines() or [""])[0]))
            return
        send(
            "ready",
            {
                "pid": os.getpid(),
                "provider": seg.provider,
                "precision": seg.precision,
                "model_sha256": seg.model_sha256,
                "model_file": seg.model_path.name,
                "load_seconds": seg.load_seconds,
            },
        )

        def next_job() -> ScanJob | None:
            send("want")
            item = conn.recv()  # only the reader thread receives
            return None if item is None else ScanJob.from_dict(item)

        ScanPipeline(seg, config, lambda o: send("outcome", o)).run(next_job)
    except (KeyboardInterrupt, EOFError, BrokenPipeError):
        pass  # interrupted, or the parent is gone
    finally:
        if seg is not None:
            seg.close()
        try:
            send("exit")
        except OSError:
            pass


class LocalPool:
    """Run jobs on ``workers`` processes; ``on_outcome(outcome)`` is called in the caller's thread."""

    def __init__(self, config: WorkerConfig, *, workers: int):
        if workers < 1:
            raise ValueError("workers must be at least 1")
        self.config, self.workers = config, workers
        self.ctx: Any = mp.get_context(START_METHOD)  # a SpawnContext/ForkContext (mypy sees a BaseContext)
        self.info: dict = {
            "engine": "local",
            "workers": workers,
            "start_method": START_METHOD,
            "threads_per_worker": config.segmenter_kwargs.get("threads"),
            "worker_restarts": 0,
            "ready": [],
        }

    def run(self, jobs: list[ScanJob], on_outcome: Callable[[dict], None]) -> dict:
        todo = deque(jobs)
        by_id = {j.id: j for j in jobs}
        pending = set(by_id)
        procs: dict[int, mp.Process] = {}
        conns: dict[int, Connection] = {}
        handed: dict[int, set[str]] = {}
        gone: set[int] = set()
        counter = [0]

        def start() -> None:
            index = counter[0]
            counter[0] += 1
            parent, child = self.ctx.Pipe(duplex=True)
            p = self.ctx.Process(target=_worker_main, args=(index, self.config, child), name=f"limbseg-cohort-{index}")
            p.start()
            child.close()
            procs[index], conns[index], handed[index] = p, parent, set()

        def handle(kind: str, index: int, payload) -> None:
            if kind == "ready":
                self.info["ready"].append(payload)
            elif kind == "want":
                job = todo.popleft() if todo else None
                if job is not None:
                    handed[index].add(job.id)
                _send(conns[index], None if job is None else job.to_dict())
            elif kind == "outcome":
                handed[index].discard(payload["id"])
                if payload["id"] in pending:
                    pending.discard(payload["id"])
                    on_outcome(payload)
            elif kind == "init_failed":
                raise remote_error(*payload)
            elif kind == "exit":
                gone.add(index)

        def read(index: int) -> bool:
            """Handle every message waiting on this worker's pipe; False once the pipe is closed."""
            conn = conns[index]
            try:
                while conn.poll():
                    handle(*conn.recv())
            except (EOFError, OSError):
                return False
            return True

        def buried(index: int) -> None:
            """A worker process ended: its pipe is drained; scans it held and never finished fail."""
            read(index)
            conns[index].close()
            if index not in gone:
                gone.add(index)
                why = _death(procs[index].exitcode)
                for sid in sorted(handed[index] & pending):
                    pending.discard(sid)
                    on_outcome(_died(by_id[sid], why))
            handed[index] = set()
            if todo and pending:
                self.info["worker_restarts"] += 1
                start()

        try:
            for _ in range(min(self.workers, len(jobs))):
                start()
            while pending:
                live = {i: p for i, p in procs.items() if not conns[i].closed}
                if not live:
                    break
                ready = wait([conns[i] for i in live] + [p.sentinel for p in live.values()], timeout=1.0)
                for i, p in live.items():
                    if (conns[i] in ready and not read(i)) or p.sentinel in ready:
                        p.join(timeout=10)  # pipe closed or process ended: it is exiting
                        buried(i)
            self._join(procs, conns, read, timeout=30.0)
        except BaseException:
            todo.clear()  # workers asking from now on are told there is no more work
            for p in procs.values():
                if p.is_alive():
                    p.terminate()  # SIGTERM: the worker finishes its save and exits
            self._join(procs, conns, lambda i: _quiet(read, i), timeout=STOP_GRACE_S)
            raise
        for sid in sorted(pending):  # only if every worker died with scans never handed out
            on_outcome(_died(by_id[sid], "no worker process was left"))
        return self.info

    @staticmethod
    def _join(procs: dict, conns: dict, read, *, timeout: float) -> None:
        """Wait for every worker, reading their pipes meanwhile (a full pipe would block their exit)."""
        deadline = time.monotonic() + timeout
        while any(p.is_alive() for p in procs.values()) and time.monotonic() < deadline:
            open_conns = [c for c in conns.values() if not c.closed]
            wait(open_conns + [p.sentinel for p in procs.values() if p.is_alive()], timeout=0.2)
            for i in list(conns):
                if not conns[i].closed and not read(i):
                    conns[i].close()
        for i, p in procs.items():
            if p.is_alive():
                p.kill()
            p.join(timeout=5)
            if not conns[i].closed:
                read(i)
                conns[i].close()


def _send(conn, item) -> None:
    try:
        conn.send(item)
    except (BrokenPipeError, OSError):
        pass  # the worker died after asking; its death is handled when its sentinel fires


def _quiet(read, index: int) -> bool:
    try:
        return read(index)
    except LimbsegError:
        return False  # a late init failure while stopping: the interrupt is what the caller reports


def _death(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        name = signal.Signals(-exitcode).name
        hint = " (the kernel may have run out of memory: use fewer --workers)" if name == "SIGKILL" else ""
        return f"the worker process was killed by {name}{hint}"
    return f"the worker process exited unexpectedly (code {exitcode})"


def _died(job: ScanJob, why: str) -> dict:
    return make_outcome(
        job, STATUS_FAILED, EXIT_INTERNAL, f"{why} while this scan was in progress", error_type="WorkerDied"
    )
