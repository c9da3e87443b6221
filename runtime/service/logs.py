"""JSON-lines logging for the node: one object per line with ``ts``, ``level``, ``msg`` and the fields
the code passes in ``extra`` (UIDs, AE titles, addresses, counts; never patient names, which the
node does not read from the datasets at all).
"""

from __future__ import annotations

import json
import logging
import time

_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "taskName"}


class JsonLinesFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "msg": record.getMessage(),
        }
        out.update({k: v for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")})
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info).splitlines()[-1]
        return json.dumps(out, default=str)


def configure(stream, level: int = logging.INFO) -> logging.Handler:
    """Send the node's log (and pynetdicom's warnings) as JSON lines to ``stream``; returns the handler."""
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonLinesFormatter())
    ours = logging.getLogger("limbseg_rt.serve")
    ours.setLevel(level)
    ours.addHandler(handler)
    ours.propagate = False
    theirs = logging.getLogger("pynetdicom")  # its INFO/DEBUG lines can dump whole datasets: warnings only
    theirs.setLevel(logging.WARNING)
    theirs.addHandler(handler)
    theirs.propagate = False
    return handler
