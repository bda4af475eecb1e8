"""Structured JSON logs that carry the event and trace ids, with secrets redacted."""

from __future__ import annotations

import json
import logging
import sys
from contextvars import ContextVar
from datetime import UTC, datetime

from ragstream.config import secret_values

event_id_var: ContextVar[str | None] = ContextVar("event_id", default=None)
trace_id_var: ContextVar[str | None] = ContextVar("trace_id", default=None)
worker_var: ContextVar[str | None] = ContextVar("worker", default=None)

REDACTED = "**********"


def redact(text: str) -> str:
    for secret in secret_values():
        if secret in text:
            text = text.replace(secret, REDACTED)
    return text


class JsonFormatter(logging.Formatter):
    _reserved = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message"}

    def format(self, record: logging.LogRecord) -> str:
        doc = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, var in (("worker", worker_var), ("event_id", event_id_var),
                         ("trace_id", trace_id_var)):
            value = var.get()
            if value is not None:
                doc[key] = value
        for key, value in record.__dict__.items():
            if key not in self._reserved and not key.startswith("_"):
                doc[key] = value
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return redact(json.dumps(doc, default=str))


def configure(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # aiokafka logs every rebalance step at INFO; keep its warnings only
    logging.getLogger("aiokafka").setLevel(logging.WARNING)
