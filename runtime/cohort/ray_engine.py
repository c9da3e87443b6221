"""The Ray engine: Ray Data over the cohort, an actor pool where each actor holds one ``Segmenter``.

``ray.data.from_items`` makes one row (one block) per scan; ``map_batches(ScanActor, batch_size=1,
concurrency=N)`` runs them on N actors, each built once (model loaded once) and reused for many
scans, and each requesting ``num_cpus`` (its ONNX Runtime threads) and ``num_gpus`` (1 for a GPU
provider: Ray then sets ``CUDA_VISIBLE_DEVICES`` so the actor's device 0 is its own GPU). Every
actor runs ``worker.process_scan``, the same code as the local engine, and writes ``DIR/<id>/`` on
the path it was given, so ``DIR`` must be the same shared file system on every node. The driver
(the ``limbseg-rt batch`` process) only collects the per-scan outcomes as they stream back.

Needs ``pip install "limbseg-rt[cluster]"`` (Ray Data) on the driver and on every node, plus the
same limbseg-rt and model on every node. See docs/cohorts.md for a real cluster.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import threading
from collections.abc import Callable

from limbseg_rt.runtime.cohort.jobs import ScanJob
from limbseg_rt.runtime.cohort.worker import WorkerConfig, process_scan, remote_error
from limbseg_rt.runtime.errors import EXIT_INTERNAL, EXIT_USAGE, LimbsegError, MissingDependencyError

INSTALL_HINT = 'pip install "limbseg-rt[cluster]"'
LOOPBACK_SWITCH = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"  # "0": Ray uses the loopback address as the node IP
INIT_FAILED = "init_failed"


class ClusterError(LimbsegError):
    """The Ray engine cannot start: Ray missing, or the cluster address unreachable."""

    exit_code = EXIT_USAGE


def import_ray():
    try:
        import ray
        import ray.data  # noqa: F401  (Ray Data is the part we need; plain "ray" lacks it)
    except ImportError:
        raise MissingDependencyError(f"--engine ray needs Ray Data, which is not installed: {INSTALL_HINT}") from None
    return ray


class ScanActor:
    """A Ray Data callable class: one ``Segmenter`` per actor, one scan per call (``batch_size=1``).

    A ``Segmenter`` that cannot be built (model or provider unusable) is not raised here, where
    Ray would retry and wrap it, but returned as an ``init_failed`` outcome the driver raises.
    """

    def __init__(self, config: WorkerConfig):
        from limbseg_rt.runtime.api import Segmenter

        self.config, self.seg, self.init_error = config, None, None
        try:
            self.seg = Segmenter(**config.segmenter_kwargs)
        except Exception as exc:
            code = exc.exit_code if isinstance(exc, LimbsegError) else EXIT_INTERNAL
            self.init_error = (type(exc).__name__, code, (str(exc).splitlines() or [""])[0])

    def __call__(self, batch: dict) -> dict:
        import numpy as np

        out = []
        for text in batch["job"]:
            job = ScanJob.from_dict(json.loads(str(text)))
            if self.init_error is not None:
                out.append({"id": job.id, "status": INIT_FAILED, "error": list(self.init_error)})
                continue
            assert self.seg is not None  # built when init_error is None
            outcome = process_scan(self.seg, job, self.config)
            outcome["engine"] = {
                "provider": self.seg.provider,
                "precision": self.seg.precision,
                "model_sha256": self.seg.model_sha256,
                "model_file": self.seg.model_path.name,
            }
            out.append(outcome)
        return {"outcome": np.array([json.dumps(o, default=str) for o in out], dtype=object)}


def run_ray(
    jobs: list[ScanJob],
    config: WorkerConfig,
    on_outcome: Callable[[dict], None],
    *,
    workers: int | None = None,
    address: str | None = None,
    cpus_per_worker: float = 1.0,
    gpus_per_worker: float = 0.0,
) -> dict:
    """Run ``jobs`` on ``workers`` Ray actors; ``on_outcome`` per scan as results stream back.

    Connects to ``address`` (``ray://host:10001`` or ``host:6379``, or ``auto`` for the cluster of
    this node), else to an already initialised Ray, else starts a local Ray on this machine.
    Returns what ran (Ray version, address, resources, the engine each actor reported).
    """
    if not address:
        # A Ray that this batch starts is single-node: Ray's own switch for that binds it to
        # 127.0.0.1, so nothing of it is reachable from the network. Read when ray is imported.
        os.environ.setdefault(LOOPBACK_SWITCH, "0")
    ray = import_ray()
    started_here = False
    if not ray.is_initialized():
        # ray.init installs its own SIGTERM handler (which kills the driver on the spot); keep the
        # caller's, so an interrupted batch still stops cleanly and recovers its folder.
        previous = signal.getsignal(signal.SIGTERM) if threading.current_thread() is threading.main_thread() else None
        try:
            ray.init(
                address=address or None, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR
            )  # the CLI owns the terminal
        except ConnectionError as exc:
            raise ClusterError(
                f"cannot reach the Ray cluster at {address}: {exc}; check --ray-address "
                "(ray status on the head node shows it)"
            ) from None
        started_here = True
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    for name in ("ray", "ray.data"):
        logging.getLogger(name).setLevel(logging.ERROR)
    resources = ray.cluster_resources()
    if workers is None:  # as many actors as the cluster can hold at once
        workers = (
            int(resources.get("GPU", 0) // gpus_per_worker)
            if gpus_per_worker
            else int(resources.get("CPU", 1) // max(cpus_per_worker, 1e-9))
        )
    workers = max(1, min(workers, len(jobs)))
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    info = {
        "engine": "ray",
        "ray_version": ray.__version__,
        "workers": workers,
        "cpus_per_worker": cpus_per_worker,
        "gpus_per_worker": gpus_per_worker,
        "address": address or ("local" if started_here else "existing"),
        "cluster_resources": {k: v for k, v in resources.items() if k in ("CPU", "GPU", "memory")},
        "nodes": sorted({n["NodeManagerAddress"] for n in ray.nodes() if n.get("Alive")}),
        "ready": [],
    }
    try:
        ds = ray.data.from_items([{"job": json.dumps(j.to_dict())} for j in jobs], override_num_blocks=len(jobs))
        out = ds.map_batches(
            ScanActor,
            fn_constructor_kwargs={"config": config},
            batch_size=1,
            batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=workers),
            num_cpus=cpus_per_worker,
            num_gpus=gpus_per_worker or None,
        )
        seen_engines = set()
        for row in out.iter_rows():
            outcome = json.loads(row["outcome"])
            if outcome.get("status") == INIT_FAILED:
                raise remote_error(*outcome["error"])
            engine = outcome.pop("engine", None)
            if engine and json.dumps(engine, sort_keys=True) not in seen_engines:
                seen_engines.add(json.dumps(engine, sort_keys=True))
                info["ready"].append(engine)
            on_outcome(outcome)
    finally:
        if started_here:
            ray.shutdown()
    return info
