"""Request-reply for ``POST /v1/infer``: publish a request on inference.requests.v1, and hand
each result read from inference.results.v1 to the request waiting for its correlation id."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from ragstream.config import Settings
from ragstream.errors import TransportUnavailable
from ragstream.publisher import Publisher, encode
from ragstream.transport import open_reader
from ragstream.transport.base import OutMessage
from schemas.catalogue import INFERENCE_REQUESTED, TOPICS, DecodeError, decode
from schemas.envelope import Envelope
from schemas.payloads import InferenceCompleted, InferenceRequested

log = logging.getLogger("ragstream.gateway")


class ResultRouter:
    """One per gateway process: a background task reads every inference result and wakes the
    request that waits for it; results for other replicas' requests are ignored."""

    def __init__(self, settings: Settings, publisher: Publisher):
        self.settings = settings
        self.publisher = publisher
        self._pending: dict[str, asyncio.Future] = {}
        self._results_task: asyncio.Task | None = None
        self._ready = asyncio.Event()  # set while the router reads inference results
        self._failure: Exception | None = None  # why the router is not reading now

    def start(self) -> None:
        self._results_task = asyncio.create_task(self._route_results())

    async def stop(self) -> None:
        if self._results_task is not None:
            self._results_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._results_task

    async def _route_results(self) -> None:
        """Hand each inference result to the request waiting for its correlation id. No group:
        every gateway replica sees every result, from now on, on either transport (a groupless
        subscription used to fail every second on RabbitMQ, so every /v1/infer was a 504)."""
        spec = TOPICS["inference.results.v1"]
        while True:
            try:
                async with open_reader(self.settings, [spec.name]) as reader:
                    self._failure = None
                    self._ready.set()
                    async for record in reader:
                        try:
                            result = decode(spec, record.value, self.settings.max_event_bytes,
                                            record.headers)
                        except DecodeError:
                            continue  # the worker dead-letters what it cannot read
                        future = self._pending.pop(result.data.correlation_id, None)
                        if future is not None and not future.done():
                            future.set_result(result.data)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the broker went away: keep trying; requests get 503
                self._ready.clear()
                self._failure = exc
                log.warning("inference results stream failed; retrying",
                            extra={"error": repr(exc)[:300]})
                await asyncio.sleep(1)

    def request_message(self, request: InferenceRequested, trace: str | None) -> OutMessage:
        """The request's event as it will be sent, or a DecodeError (``oversized`` past the
        event limit): what ``/v1/infer`` measures and charges before it sends."""
        envelope = Envelope(type=INFERENCE_REQUESTED, source="ragstream/gateway",
                            subject=request.correlation_id, traceparent=trace,
                            data=request.model_dump(mode="json"))
        return encode(envelope, None, self.settings.max_event_bytes,
                      self.settings.cloudevents_mode)

    async def infer(self, request: InferenceRequested, message: OutMessage) -> InferenceCompleted:
        """Send ``message`` (``request_message(request, ...)``) and wait for its result."""
        if self._failure is not None:  # a 503 now, not a 504 after the timeout
            raise TransportUnavailable(f"inference results: {self._failure!r}")
        future = asyncio.get_running_loop().create_future()
        self._pending[request.correlation_id] = future
        try:
            async with asyncio.timeout(self.settings.gateway.infer_timeout_s):
                # a result that arrives before the router reads is lost: wait for the router
                await self._ready.wait()
                await self.publisher.send_raw([message])
                return await future
        finally:
            self._pending.pop(request.correlation_id, None)
