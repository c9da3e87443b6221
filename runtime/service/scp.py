"""The Storage SCP: pynetdicom event handlers that spool every instance before answering success.

Association checks (before any data is accepted):
- the calling AE title must be on ``allowed_calling_ae`` -> otherwise A-ASSOCIATE-RJ
  "rejected-permanent, service-user, calling-AE-title-not-recognized" (result 1, source 1, reason 3);
- the called AE title must be ours -> otherwise reason 7 (called-AE-title-not-recognized);
- with ``allowed_addresses``, the peer's IP must be in one of the networks -> otherwise reason 1
  (no-reason-given: DICOM has no reason code for an address).

C-STORE statuses we answer (PS3.4 Annex B.2.3):
- 0x0000 success, only after the Part 10 file and the series state are fsync-ed;
- 0xA700 out of resources, when the spool would exceed its quota (or the disk is full);
- 0xC210 cannot understand (the dataset does not decode), 0xC211 cannot understand (it lacks a valid
  SeriesInstanceUID / StudyInstanceUID / SOPInstanceUID); nothing is spooled for these;
- 0xC212 any other failure to write (the node logs it and keeps serving).
"""

from __future__ import annotations

import errno
import logging
import ssl
from collections.abc import Callable
from typing import Any

from limbseg_rt.runtime.service.config import ServeConfig
from limbseg_rt.runtime.service.spool import SeriesState, Spool, SpoolFull, valid_uid

log = logging.getLogger("limbseg_rt.serve")

MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
ENHANCED_MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4.1"
VERIFICATION = "1.2.840.10008.1.1"
TRANSFER_SYNTAXES = (
    "1.2.840.10008.1.2.1",  # Explicit VR Little Endian
    "1.2.840.10008.1.2",  # Implicit VR Little Endian
    "1.2.840.10008.1.2.2",  # Explicit VR Big Endian (retired, still sent by old scanners)
    "1.2.840.10008.1.2.1.99",  # Deflated Explicit VR Little Endian
    "1.2.840.10008.1.2.4.70",  # JPEG Lossless SV1
    "1.2.840.10008.1.2.4.57",  # JPEG Lossless
    "1.2.840.10008.1.2.4.80",  # JPEG-LS Lossless
    "1.2.840.10008.1.2.4.81",  # JPEG-LS Near-lossless
    "1.2.840.10008.1.2.4.90",  # JPEG 2000 Lossless
    "1.2.840.10008.1.2.4.91",  # JPEG 2000
    "1.2.840.10008.1.2.5",  # RLE Lossless
)

STATUS_SUCCESS = 0x0000
STATUS_OUT_OF_RESOURCES = 0xA700
STATUS_CANNOT_DECODE = 0xC210
STATUS_MISSING_UIDS = 0xC211
STATUS_WRITE_FAILED = 0xC212


def server_ssl_context(config: ServeConfig) -> ssl.SSLContext | None:
    """TLS server context from ``[tls]`` (TLS 1.2+); with ``ca``, callers must present a certificate it signed."""
    if config.tls is None:
        return None
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(certfile=str(config.tls.cert), keyfile=str(config.tls.key))
    if config.tls.ca is not None:
        ctx.load_verify_locations(cafile=str(config.tls.ca))
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def client_ssl_context(config: ServeConfig, dest) -> ssl.SSLContext | None:
    """TLS client context for a destination with ``tls = true``: verifies the peer against ``dest.ca``
    (or the system store), and presents this node's ``[tls]`` certificate when there is one."""
    if not dest.tls:
        return None
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(dest.ca) if dest.ca else None)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.check_hostname = False  # DICOM peers are named by AE title and address; the CA check still applies
    if config.tls is not None:
        ctx.load_cert_chain(certfile=str(config.tls.cert), keyfile=str(config.tls.key))
    return ctx


class StorageSCP:
    """Accepts MR images from allowed callers into ``spool``; ``on_stored(state)`` after each success.

    ``counters`` is a dict the node exposes (received, rejected_associations, refused_quota,
    refused_malformed); updated under the GIL by single assignments.
    """

    def __init__(self, config: ServeConfig, spool: Spool, on_stored: Callable[[SeriesState], None], counters: dict):
        self.config, self.spool, self.on_stored, self.counters = config, spool, on_stored, counters
        self.server: Any = None

    def start(self) -> None:
        from pynetdicom import AE, evt

        ae = AE(ae_title=self.config.ae_title)
        ae.require_calling_aet = list(self.config.allowed_calling_ae)
        ae.require_called_aet = True
        ae.maximum_associations = 16
        for uid in (MR_IMAGE_STORAGE, ENHANCED_MR_IMAGE_STORAGE):
            ae.add_supported_context(uid, list(TRANSFER_SYNTAXES))
        ae.add_supported_context(VERIFICATION)  # C-ECHO: how scanners test a new node
        handlers: list[Any] = [
            (evt.EVT_REQUESTED, self._on_requested),
            (evt.EVT_REJECTED, self._on_rejected),
            (evt.EVT_C_STORE, self._on_store),
            (evt.EVT_C_ECHO, lambda event: STATUS_SUCCESS),
        ]
        self.server = ae.start_server(
            (self.config.bind, self.config.port),
            block=False,
            evt_handlers=handlers,
            ssl_context=server_ssl_context(self.config),
        )

    @property
    def port(self) -> int:
        """The port actually bound (differs from the config's when it asked for 0)."""
        return self.server.server_address[1] if self.server is not None else self.config.port

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server = None

    # ------------------------------------------------------------------ handlers
    def _on_requested(self, event) -> None:
        address = event.assoc.requestor.address
        if not self.config.address_allowed(address):
            self.counters["rejected_associations"] += 1
            log.warning(
                "association rejected",
                extra={
                    "event": "association_rejected",
                    "reason": "address not allowed",
                    "address": address,
                    "calling_ae": event.assoc.requestor.ae_title,
                },
            )
            event.assoc.acse.send_reject(0x01, 0x01, 0x01)
            event.assoc.kill()  # as pynetdicom does after its own rejections: lets the DUL send the PDU first

    def _on_rejected(self, event) -> None:
        # pynetdicom rejected the association itself (calling or called AE title not on our list).
        self.counters["rejected_associations"] += 1
        req = event.assoc.requestor
        log.warning(
            "association rejected",
            extra={
                "event": "association_rejected",
                "reason": "AE title not allowed",
                "address": req.address,
                "calling_ae": req.ae_title,
                "called_ae": getattr(req.primitive, "called_ae_title", ""),
            },
        )

    def _on_store(self, event) -> int:
        calling = event.assoc.requestor.ae_title
        sop = str(event.request.AffectedSOPInstanceUID or "")
        try:
            ds = event.dataset
            series = str(ds.get("SeriesInstanceUID", ""))
            study = str(ds.get("StudyInstanceUID", ""))
            sop_ds = str(ds.get("SOPInstanceUID", ""))
        except Exception as exc:  # any decode failure of the peer's bytes
            self.counters["refused_malformed"] += 1
            log.warning(
                "instance refused",
                extra={
                    "event": "store_refused",
                    "reason": f"does not decode ({type(exc).__name__})",
                    "sop": sop if valid_uid(sop) else "",
                    "calling_ae": calling,
                },
            )
            return STATUS_CANNOT_DECODE
        if not (valid_uid(series) and valid_uid(study) and valid_uid(sop) and sop_ds == sop):
            self.counters["refused_malformed"] += 1
            log.warning(
                "instance refused",
                extra={
                    "event": "store_refused",
                    "reason": "missing or invalid UIDs",
                    "sop": sop if valid_uid(sop) else "",
                    "calling_ae": calling,
                },
            )
            return STATUS_MISSING_UIDS
        try:
            data = event.encoded_dataset(include_meta=True)
            state = self.spool.store_instance(series, study, sop, data, calling)
        except SpoolFull:
            self.counters["refused_quota"] += 1
            log.warning(
                "instance refused: spool quota reached",
                extra={
                    "event": "store_refused",
                    "reason": "quota",
                    "series": series,
                    "sop": sop,
                    "calling_ae": calling,
                },
            )
            return STATUS_OUT_OF_RESOURCES
        except OSError as exc:
            self.counters["refused_write"] += 1
            log.error(
                "instance not stored",
                extra={"event": "store_failed", "reason": exc.strerror, "series": series, "sop": sop},
            )
            return STATUS_OUT_OF_RESOURCES if exc.errno in (errno.ENOSPC, errno.EDQUOT) else STATUS_WRITE_FAILED
        self.counters["received"] += 1
        log.debug(
            "instance stored",
            extra={
                "event": "stored",
                "series": series,
                "sop": sop,
                "calling_ae": calling,
                "instances": state.instances,
            },
        )
        self.on_stored(state)
        return STATUS_SUCCESS
