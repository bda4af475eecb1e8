"""API keys: stored hashed, loaded from a secret file or the environment, rotated without a
restart, with scopes.

Keys are random tokens of 32 bytes or more (``ragstream apikey new`` makes them), so a SHA-256
digest is enough to store them safely and lets a request be checked with one lookup; the digest
is compared with ``hmac.compare_digest``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, TypeAdapter

from ragstream.config import Settings

log = logging.getLogger(__name__)

Scope = Literal["publish", "search", "infer", "admin"]
SCOPES: tuple[str, ...] = ("publish", "search", "infer", "admin")


class ApiKey(BaseModel):
    id: str = Field(min_length=1, max_length=128)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    scopes: list[Scope]
    # tokens: one a request, plus one an event or text and one a KiB of document beyond the
    # first (dependencies.charge); the burst lets one full 1,000-event batch through at once
    rate_per_s: float = Field(default=100.0, gt=0)
    burst: int = Field(default=1000, ge=1)

    def allows(self, scope: str) -> bool:
        return scope in self.scopes or "admin" in self.scopes


_KEYS = TypeAdapter(list[ApiKey])


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_key(key_id: str, scopes: list[str], rate_per_s: float = 100.0,
            burst: int = 1000) -> tuple[str, ApiKey]:
    """A fresh key (shown once) and the entry to store, which holds only its digest."""
    key = "rsk_" + secrets.token_urlsafe(32)
    return key, ApiKey(id=key_id, sha256=digest(key), scopes=scopes, rate_per_s=rate_per_s,
                       burst=burst)


@dataclass
class KeyStore:
    """The current keys. ``maybe_reload`` re-reads the file when its modification time changed."""

    settings: Settings
    _by_digest: dict[str, ApiKey] | None = None
    _mtime: float | None = None
    _checked: float = 0.0

    def reload(self) -> None:
        if self.settings.api_keys_file is not None:
            path = Path(self.settings.api_keys_file)
            self._mtime = path.stat().st_mtime
            raw = path.read_text()
        elif self.settings.api_keys is not None:
            raw = self.settings.api_keys.get_secret_value()
        else:
            raw = "[]"
        keys = _KEYS.validate_python(json.loads(raw))
        self._by_digest = {k.sha256: k for k in keys}
        log.info("api keys loaded", extra={"keys": sorted(k.id for k in keys)})

    def maybe_reload(self, every_s: float = 1.0) -> None:
        now = time.monotonic()
        if self._by_digest is not None and now - self._checked < every_s:
            return
        self._checked = now
        path = self.settings.api_keys_file
        if self._by_digest is None or (path is not None and Path(path).stat().st_mtime != self._mtime):
            try:
                self.reload()
            except (OSError, ValueError) as exc:
                if self._by_digest is None:
                    raise
                # keep serving with the keys we have; a broken file must not lock everyone out
                log.error("api keys file unreadable; keeping the previous keys",
                          extra={"error": str(exc)[:300]})

    def authenticate(self, presented: str | None) -> ApiKey | None:
        if not presented:
            return None
        self.maybe_reload()
        wanted = digest(presented)
        key = self._by_digest.get(wanted)
        if key is None or not hmac.compare_digest(key.sha256, wanted):
            return None
        return key
