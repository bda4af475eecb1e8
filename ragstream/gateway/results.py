"""Request-reply for ``POST /v1/infer``: publish a request on inference.requests.v1, and hand
each result read from inference.results.v1 to the request waiting for its correlation id."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from ragstream.publisher import Publisher
from ragstream.config import Settings
from schemas.catalogue import INFERENCE_REQUESTED
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

    def start(self) -> None:
        self._results_task = asyncio.create_task(self._route_results())

    async def stop(self) -> None:
        if self._results_task is not None:
            self._results_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._results_task

    async def _route_results(self) -> None:
        """Hand each inference result to the request waiting for its correlation id."""
        from producers.subscribe import subscribe

        while True:
            try:
                async for envelope, _ in subscribe(self.settings, "inference.results.v1"):
                    future = self._pending.pop(envelope.data.correlation_id, None)
                    if future is not None and not future.done():
                        future.set_result(envelope.data)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the broker went away: keep trying, requests time out
                log.warning("inference results stream failed; retrying",
                            extra={"error": repr(exc)[:300]})
                await asyncio.sleep(1)

    async def infer(self, request: InferenceRequested, trace: str) -> InferenceCompleted:
        future = asyncio.get_running_loop().create_future()
        self._pending[request.correlation_id] = future
        envelope = Envelope(type=INFERENCE_REQUESTED, source="ragstream/gateway",
                            subject=request.correlation_id, traceparent=trace,
                            data=request.model_dump(mode="json"))
        try:
            await self.publisher.publish([envelope])
            return await asyncio.wait_for(future, self.settings.gateway.infer_timeout_s)
        finally:
            self._pending.pop(request.correlation_id, None)
