"""The errors the worker runtime acts on. Layers below it (transports, stores, domains) raise
these, never their client library's own, so the runtime imports no client library.

- ``Unavailable`` (a store or the broker is down or overloaded) is backpressure: the runtime
  rewinds the batch, pauses its partitions and retries later. Never a dead letter.
- ``CommitLost``: the group moved on before a commit; the new owner replays, idempotently.
- ``PermanentError``: this input can never be processed as it is; dead-letter it at once.
- ``MessageTooLarge``: the broker refused a message as too large; sending it again cannot help.
  The runtime dead-letters the event whose result it was.
- ``WiringError``: a programming error (a write to a sink the worker does not have, say). It
  crashes the worker with its message; it never dead-letters the input that happened to meet it.
"""

from __future__ import annotations


class Unavailable(Exception):
    """A store or the broker is down or overloaded: pause, retry later, never drop."""

    def __init__(self, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


class SinkUnavailable(Unavailable):
    """A store that a worker writes or reads is down or overloaded."""


class TransportUnavailable(Unavailable):
    """The broker cannot be reached, or did not acknowledge in time."""


class CommitLost(Exception):
    """A commit was refused because the partitions moved to another group member."""


class PermanentError(Exception):
    """This input can never be processed as it is: dead-letter it without retrying."""

    reason = "permanent"


class MessageTooLarge(Exception):
    """The broker, or the producer's request limit that mirrors it, refused a message for its
    size: a retry sends the same bytes and is refused again."""


class WiringError(Exception):
    """The code is wired wrong (an unknown sink, say): crash with this message."""


# What counts as "down" besides ``Unavailable``. A store module whose client library raises its
# own connection errors declares them here once, where it connects (see stores/redis.py), so
# the runtime can treat them as backpressure without importing that library.
_unavailable: tuple[type[BaseException], ...] = (Unavailable, ConnectionError, TimeoutError)


def declare_unavailable(*types: type[BaseException]) -> None:
    global _unavailable
    _unavailable = tuple(dict.fromkeys(_unavailable + types))


def unavailable_types() -> tuple[type[BaseException], ...]:
    """Every exception type that means "down, retry later" (for an ``except`` clause)."""
    return _unavailable
