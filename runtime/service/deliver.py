"""Delivery: C-STORE the files of each committed result to every destination, with retries and backoff.

A result stays in the outbox (``results/<key>/`` with an undelivered destination in its
``result.json``) until every destination answered success (or a warning status, 0xB000-0xBFFF)
for every file. After a failed attempt the next one waits ``backoff_seconds * 2**(attempts - 1)``,
at most ``backoff_max_seconds``. With ``max_attempts`` > 0 a destination that failed that many
times is parked (``parked: true``) until the node restarts, which tries it again; 0 means try
forever. Attempts and the last error are written to ``result.json`` after each try.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from limbseg_rt.runtime.service.config import Destination, ServeConfig
from limbseg_rt.runtime.service.spool import Spool

log = logging.getLogger("limbseg_rt.serve")


def next_delay(attempts: int, base: float, cap: float) -> float:
    """Seconds to wait after ``attempts`` (>= 1) failed attempts: ``base * 2**(attempts-1)``, at most ``cap``."""
    return min(cap, base * (2 ** max(0, attempts - 1)))


def send_files(
    files: list[Path], dest: Destination, calling_ae: str, *, timeout: float = 30.0, tls_context=None
) -> None:
    """C-STORE ``files`` (Part 10) to ``dest`` in one association; ``OSError`` with the reason on any failure."""
    from pydicom import dcmread
    from pynetdicom import AE

    datasets = [dcmread(str(p)) for p in files]
    ae = AE(ae_title=calling_ae)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout
    contexts = sorted({(str(ds.SOPClassUID), str(ds.file_meta.TransferSyntaxUID)) for ds in datasets})
    for sop_class, ts in contexts:
        ae.add_requested_context(sop_class, [ts])
    tls_args = (tls_context, dest.host) if tls_context is not None else None  # SNI only; hostname check is off
    assoc = ae.associate(dest.host, dest.port, ae_title=dest.ae_title, tls_args=tls_args)
    if not assoc.is_established:
        why = "rejected" if assoc.is_rejected else "aborted" if assoc.is_aborted else "no connection"
        raise OSError(f"association with {dest.ae_title}@{dest.host}:{dest.port} failed ({why})")
    try:
        for ds in datasets:
            status = assoc.send_c_store(ds)
            code = getattr(status, "Status", None)
            if code is None:
                raise OSError(f"no C-STORE response from {dest.ae_title} (connection lost or timed out)")
            if code != 0x0000 and not 0xB000 <= code <= 0xBFFF:
                raise OSError(f"{dest.ae_title} answered C-STORE status 0x{code:04X} for SOP {ds.SOPInstanceUID}")
    finally:
        if assoc.is_established:
            assoc.release()


class Sender:
    """Works the outbox: one pass sends every due (result, destination) pair. Not thread-safe; one sender."""

    def __init__(self, config: ServeConfig, spool: Spool, counters: dict):
        self.config, self.spool, self.counters = config, spool, counters
        self._due: dict[tuple[str, str], float] = {}  # (key, destination) -> monotonic time of the next try

    def pending(self) -> int:
        return len(self.spool.undelivered())

    def run_once(self, stop=None) -> None:
        """Try every undelivered (result, destination) whose backoff has elapsed; returns when all tried."""
        by_name = {d.name: d for d in self.config.destinations}
        for key in self.spool.undelivered():
            if stop is not None and stop.is_set():
                return
            record = self.spool.result_record(key)
            if record is None:
                continue
            folder = self.spool.results / key
            files = [folder / name for name in record.get("files", [])]
            changed = False
            for name, state in record["destinations"].items():
                if state.get("delivered") or state.get("parked"):
                    continue
                dest = by_name.get(name)
                if dest is None:  # destination removed from the config: keep the record, say so once
                    continue
                if time.monotonic() < self._due.get((key, name), 0.0):
                    continue
                t0 = time.perf_counter()
                try:
                    from limbseg_rt.runtime.service.scp import client_ssl_context

                    send_files(files, dest, self.config.ae_title, tls_context=client_ssl_context(self.config, dest))
                except Exception as exc:  # network errors, refused statuses: all are retried
                    state["attempts"] = state.get("attempts", 0) + 1
                    state["last_error"] = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                    delay = next_delay(state["attempts"], self.config.backoff_seconds, self.config.backoff_max_seconds)
                    self._due[(key, name)] = time.monotonic() + delay
                    if self.config.max_attempts and state["attempts"] >= self.config.max_attempts:
                        state["parked"] = True
                    self.counters["delivery_failures"] += 1
                    log.warning(
                        "delivery failed",
                        extra={
                            "event": "delivery_failed",
                            "series": record["series_uid"],
                            "destination": name,
                            "attempts": state["attempts"],
                            "retry_in_s": None if state.get("parked") else round(delay, 1),
                            "error": state["last_error"],
                        },
                    )
                else:
                    state["delivered"] = True
                    state["attempts"] = state.get("attempts", 0) + 1
                    state["delivered_at"] = time.time()
                    self.counters["delivered"] += 1
                    latency = time.time() - record.get("last_received", time.time())
                    self.counters["last_delivery_latency_s"] = round(latency, 3)
                    log.info(
                        "delivered",
                        extra={
                            "event": "delivered",
                            "series": record["series_uid"],
                            "destination": name,
                            "files": len(files),
                            "seconds": round(time.perf_counter() - t0, 3),
                        },
                    )
                changed = True
            if changed:
                self.spool.update_result(key, record)
                if all(d.get("delivered") for d in record["destinations"].values()):
                    self.spool.release_payload(key)
