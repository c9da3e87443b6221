"""The node's TOML configuration, read into frozen dataclasses and checked before anything starts.

Every key, its default and its meaning are listed in docs/serve.md ("Configuration"). Unknown
keys are refused (a misspelt ``stable_secnds`` must not silently fall back to the default).
Relative paths are taken relative to the config file's folder.
"""

from __future__ import annotations

import ipaddress
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from limbseg_rt.runtime.errors import EXIT_USAGE, LimbsegError

_AE_RE = re.compile(r"^[\x20-\x5b\x5d-\x7e]{1,16}$")  # DICOM AE: 16 chars, no backslash or controls


class ConfigError(LimbsegError):
    """The serve configuration file is missing, unreadable or has a wrong setting."""

    exit_code = EXIT_USAGE


@dataclass(frozen=True)
class TLSConfig:
    """Certificate and key (PEM) of this node; ``ca``: when set, callers must present a certificate it signed."""

    cert: Path
    key: Path
    ca: Path | None = None


@dataclass(frozen=True)
class Destination:
    """A DICOM Storage SCP the results are sent to (C-STORE)."""

    name: str
    host: str
    port: int
    ae_title: str
    tls: bool = False
    ca: Path | None = None  # CA that signed the destination's certificate (default: the system store)


@dataclass(frozen=True)
class ModelConfig:
    model: str = "unet"
    provider: str = "cpu"
    precision: str = "auto"
    threads: int | None = None
    seg_type: str = "binary"
    keep_report: bool = False  # also keep labels.nii.gz, report.json, volumes.csv in results/<key>/


@dataclass(frozen=True)
class ServeConfig:
    ae_title: str
    port: int
    allowed_calling_ae: tuple[str, ...]
    spool: Path
    bind: str = "0.0.0.0"
    allowed_addresses: tuple[str, ...] = ()
    tls: TLSConfig | None = None
    quota_mb: float = 4096.0
    stable_seconds: float = 10.0
    queue_size: int = 16
    destinations: tuple[Destination, ...] = ()
    max_attempts: int = 0
    backoff_seconds: float = 5.0
    backoff_max_seconds: float = 300.0
    model: ModelConfig = field(default_factory=ModelConfig)
    http_port: int = 0
    shutdown_grace_seconds: float = 120.0
    source: Path | None = None

    @property
    def quota_bytes(self) -> int:
        return int(self.quota_mb * 1024 * 1024)

    def address_allowed(self, address: str) -> bool:
        """True when no address list is set, or ``address`` (IPv4/IPv6 text) is in one of its networks."""
        if not self.allowed_addresses:
            return True
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in ipaddress.ip_network(net, strict=False) for net in self.allowed_addresses)


def _toml_load(path: Path) -> dict:
    try:
        import tomllib  # Python 3.11+
    except ModuleNotFoundError:  # pragma: no cover - Python 3.10
        try:
            import tomli as tomllib  # type: ignore[no-redef]
        except ModuleNotFoundError:
            raise ConfigError(
                'reading the config needs tomli on Python 3.10: pip install "limbseg-rt[serve]"'
            ) from None
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None


class _Section:
    """Typed access to one TOML table that remembers which keys were used (the rest are refused)."""

    def __init__(self, data, name: str):
        if not isinstance(data, dict):
            raise ConfigError(f"[{name}] must be a table")
        self.data, self.name = data, name
        self.used: set[str] = set()

    def get(self, key, kind, default=None, *, required=False):
        self.used.add(key)
        if key not in self.data:
            if required:
                raise ConfigError(f"[{self.name}] {key} is required")
            return default
        value = self.data[key]
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise ConfigError(f"[{self.name}] {key} must be {getattr(kind, '__name__', kind)}, got {value!r}")
        return value

    def finish(self) -> None:
        extra = sorted(set(self.data) - self.used)
        if extra:
            raise ConfigError(f"[{self.name}] has unknown setting(s): {', '.join(extra)}")


def _ae(value: str, what: str) -> str:
    if not _AE_RE.match(value) or not value.strip():
        raise ConfigError(f"{what} {value!r} is not a DICOM AE title (1-16 printable characters, no backslash)")
    return value.strip()


def _port(value: int, what: str, *, zero_ok: bool = False) -> int:
    if not (0 if zero_ok else 1) <= value <= 65535:
        raise ConfigError(f"{what} {value} is not a TCP port (1-65535)")
    return value


def _positive(value: float, what: str, *, zero_ok: bool = False) -> float:
    if value < 0 or (value == 0 and not zero_ok):
        raise ConfigError(f"{what} must be {'>= 0' if zero_ok else '> 0'}, got {value}")
    return value


def load_config(path: str | os.PathLike) -> ServeConfig:
    """Read and check the TOML file at ``path``. Raises ``ConfigError`` naming the bad setting."""
    path = Path(path)
    raw = _toml_load(path)
    base = path.resolve().parent

    def _path(text: str) -> Path:
        p = Path(text).expanduser()
        return p if p.is_absolute() else base / p

    top = _Section(raw, "top level")
    for key in ("node", "tls", "spool", "model", "delivery", "destination", "status"):
        top.used.add(key)
    top.finish()

    node = _Section(raw.get("node", {}), "node")
    ae_title = _ae(node.get("ae_title", str, "LIMBSEG"), "[node] ae_title")
    port = _port(node.get("port", int, 11112), "[node] port")
    bind = node.get("bind", str, "0.0.0.0")
    calling = node.get("allowed_calling_ae", list, required=True)
    if not calling:
        raise ConfigError("[node] allowed_calling_ae is empty: list the AE titles of the scanners that may send")
    calling_t = tuple(_ae(str(a), "[node] allowed_calling_ae entry") for a in calling)
    addresses = node.get("allowed_addresses", list, [])
    for a in addresses:
        try:
            ipaddress.ip_network(str(a), strict=False)
        except ValueError:
            raise ConfigError(f"[node] allowed_addresses entry {a!r} is not an IP address or network") from None
    node.finish()

    tls = None
    if "tls" in raw:
        t = _Section(raw["tls"], "tls")
        cert_p, key_p = _path(t.get("cert", str, required=True)), _path(t.get("key", str, required=True))
        ca_text = t.get("ca", str)
        t.finish()
        ca = _path(ca_text) if ca_text else None
        for what, p in (("cert", cert_p), ("key", key_p), ("ca", ca)):
            if p is not None and not p.is_file():
                raise ConfigError(f"[tls] {what} file {p} does not exist")
        tls = TLSConfig(cert=cert_p, key=key_p, ca=ca)

    sp = _Section(raw.get("spool", {}), "spool")
    spool = _path(sp.get("folder", str, required=True))
    quota = _positive(sp.get("quota_mb", float, 4096.0), "[spool] quota_mb")
    stable = _positive(sp.get("stable_seconds", float, 10.0), "[spool] stable_seconds")
    queue_size = int(_positive(sp.get("queue_size", int, 16), "[spool] queue_size"))
    sp.finish()

    m = _Section(raw.get("model", {}), "model")
    model = ModelConfig(
        model=m.get("model", str, "unet"),
        provider=m.get("provider", str, "cpu"),
        precision=m.get("precision", str, "auto"),
        threads=m.get("threads", int, None),
        seg_type=m.get("seg_type", str, "binary"),
        keep_report=m.get("keep_report", bool, False),
    )
    m.finish()
    if model.provider not in ("auto", "tensorrt", "cuda", "openvino", "cpu"):
        raise ConfigError(f"[model] provider {model.provider!r} is not one of auto, tensorrt, cuda, openvino, cpu")
    if model.precision not in ("auto", "fp32", "fp16", "int8"):
        raise ConfigError(f"[model] precision {model.precision!r} is not one of auto, fp32, fp16, int8")
    if model.seg_type not in ("binary", "labelmap"):
        raise ConfigError(f"[model] seg_type {model.seg_type!r} is not binary or labelmap")

    d = _Section(raw.get("delivery", {}), "delivery")
    max_attempts = int(_positive(d.get("max_attempts", int, 0), "[delivery] max_attempts", zero_ok=True))
    backoff = _positive(d.get("backoff_seconds", float, 5.0), "[delivery] backoff_seconds")
    backoff_max = _positive(d.get("backoff_max_seconds", float, 300.0), "[delivery] backoff_max_seconds")
    d.finish()

    dests_raw = raw.get("destination", [])
    if not isinstance(dests_raw, list):
        raise ConfigError("destinations are [[destination]] tables (an array of tables)")
    dests, names = [], set()
    for i, item in enumerate(dests_raw):
        s = _Section(item, f"destination {i + 1}")
        name = s.get("name", str, f"dest{i + 1}")
        dest = Destination(
            name=name,
            host=s.get("host", str, required=True),
            port=_port(s.get("port", int, required=True), f"[destination {name}] port"),
            ae_title=_ae(s.get("ae_title", str, required=True), f"[destination {name}] ae_title"),
            tls=s.get("tls", bool, False),
            ca=_path(s.get("ca", str)) if s.get("ca", str) else None,
        )
        if dest.ca is not None and not dest.ca.is_file():
            raise ConfigError(f"[destination {name}] ca file {dest.ca} does not exist")
        s.finish()
        if not re.match(r"^[A-Za-z0-9_.-]{1,64}$", name) or name in names:
            raise ConfigError(f"destination name {name!r} must be unique, letters/digits/_.- only")
        names.add(name)
        dests.append(dest)

    st = _Section(raw.get("status", {}), "status")
    http_port = _port(st.get("http_port", int, 0), "[status] http_port", zero_ok=True)
    grace = _positive(st.get("shutdown_grace_seconds", float, 120.0), "[status] shutdown_grace_seconds", zero_ok=True)
    st.finish()

    return ServeConfig(
        ae_title=ae_title,
        port=port,
        bind=bind,
        allowed_calling_ae=calling_t,
        allowed_addresses=tuple(str(a) for a in addresses),
        tls=tls,
        spool=spool,
        quota_mb=quota,
        stable_seconds=stable,
        queue_size=queue_size,
        destinations=tuple(dests),
        max_attempts=max_attempts,
        backoff_seconds=backoff,
        backoff_max_seconds=backoff_max,
        model=model,
        http_port=http_port,
        shutdown_grace_seconds=grace,
        source=path,
    )
