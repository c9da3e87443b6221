"""``limbseg-rt serve``: the scanner-side DICOM node (C-STORE in, segment, SEG out by C-STORE)."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "serve",
        help="run a DICOM node: receive series by C-STORE, segment them, send the SEG on",
        description="A DICOM Storage SCP that spools every instance before acknowledging it, segments each series once "
        "it is stable and sends the results to the configured destinations with retries. Settings: one TOML file "
        "(docs/serve.md). Logs are JSON lines on stderr. SIGTERM or Ctrl-C stops it cleanly.",
    )
    p.add_argument("--config", required=True, metavar="TOML", help="the node's configuration file")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--check", action="store_true", help="validate the configuration (and load the model), then exit")
    mode.add_argument("--status", action="store_true", help="print the running node's status (from its spool) and exit")
    p.add_argument("--verbose", action="store_true", help="log every instance received, not only per series")
    return p


def main(args) -> int:
    from limbseg_rt.runtime.service.config import load_config

    config = load_config(args.config)
    if args.status:
        return _print_status(config)
    if args.check:
        return _check(config)

    import logging

    from limbseg_rt.runtime.service.logs import configure
    from limbseg_rt.runtime.service.node import Node
    from limbseg_rt.runtime.service.process import SegmentSeries

    configure(sys.stderr, logging.DEBUG if args.verbose else logging.INFO)
    processor = SegmentSeries(config.model)
    node = Node(config, processor, processor.identity)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    node.start()
    try:
        while not stop.wait(0.5):
            pass
    finally:
        node.stop()
        processor.close()
    return 0


def _check(config) -> int:
    from limbseg_rt.runtime.service.config import ConfigError
    from limbseg_rt.runtime.service.scp import server_ssl_context

    try:
        server_ssl_context(config)
    except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
        raise ConfigError(f"[tls] certificate/key cannot be used: {exc}") from None
    try:
        config.spool.mkdir(parents=True, exist_ok=True)
        probe = config.spool / ".check"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise ConfigError(f"[spool] folder {config.spool} is not writable: {exc.strerror}") from None
    from limbseg_rt.runtime.service.process import SegmentSeries

    processor = SegmentSeries(config.model)
    try:
        ident = processor.identity
    finally:
        processor.close()
    print(f"config {config.source}: OK")
    print(
        f"  node {config.ae_title} on {config.bind}:{config.port}{' (TLS)' if config.tls else ''}; "
        f"callers {', '.join(config.allowed_calling_ae)}"
        + (f" from {', '.join(config.allowed_addresses)}" if config.allowed_addresses else "")
    )
    print(
        f"  spool {config.spool} (quota {config.quota_mb:g} MB), stable after {config.stable_seconds:g} s, queue {config.queue_size}"
    )
    print(
        f"  model {config.model.model} ({ident['model_sha256'][:12]}) on {config.model.provider}, settings {ident['settings']}"
    )
    for d in config.destinations:
        print(f"  destination {d.name}: {d.ae_title}@{d.host}:{d.port}")
    if not config.destinations:
        print("  no destination: results stay in the spool's results/ folder")
    return 0


def _print_status(config) -> int:
    from limbseg_rt.runtime.service.config import ConfigError

    path = config.spool / "status.json"
    try:
        status = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise ConfigError(f"no status in {path}: the node has not run with this spool yet") from None
    print(json.dumps(status, indent=2, sort_keys=True))
    return 0
