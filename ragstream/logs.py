"""Structured JSON logs that carry the event and trace ids, with secrets redacted."""

from __future__ import annotations

import json
import logging
import sys
import urllib.parse
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

from ragstream.config import secret_values

event_id_var: ContextVar[str | None] = ContextVar("event_id", default=None)
trace_id_var: ContextVar[str | None] = ContextVar("trace_id", default=None)
worker_var: ContextVar[str | None] = ContextVar("worker", default=None)

REDACTED = "**********"


def redact(text: str) -> str:
    """``text`` with every secret replaced, also where it appears escaped: inside a repr (an
    exception's message), JSON-escaped, or percent-encoded in a URL. Redacting the serialized
    line alone let a secret holding a quote, a backslash or a non-ASCII character through."""
    for secret in secret_values():
        for form in _forms(secret):
            if form in text:
                text = text.replace(form, REDACTED)
    return text


def _forms(secret: str) -> set[str]:
    return {secret, repr(secret)[1:-1], json.dumps(secret)[1:-1],
            urllib.parse.quote(secret, safe=""), urllib.parse.quote_plus(secret)}


def _redacted(value: Any) -> Any:
    """A log field, redacted before it is serialized (see ``redact``)."""
    if isinstance(value, str):
        return redact(value)
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, dict):
        return {str(k): _redacted(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_redacted(v) for v in value]
    return redact(str(value))


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
        return json.dumps(_redacted(doc))


def configure(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # aiokafka logs every rebalance step at INFO; keep its warnings only
    logging.getLogger("aiokafka").setLevel(logging.WARNING)
