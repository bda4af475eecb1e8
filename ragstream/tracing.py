"""OpenTelemetry tracing across topics: the W3C ``traceparent`` rides in each message's headers.

Off by default, and then nearly free: every hook checks one module-level bool (``ENABLED``) and
OpenTelemetry is not even imported. On when the standard OTEL_* environment asks for an exporter:

- ``OTEL_TRACES_EXPORTER=otlp`` (or ``console``), or ``OTEL_EXPORTER_OTLP_ENDPOINT`` /
  ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` set: spans go to that OTLP/HTTP endpoint;
- ``OTEL_SDK_DISABLED=true`` or ``OTEL_TRACES_EXPORTER=none`` keeps it off;
- ``OTEL_SERVICE_NAME``, ``OTEL_RESOURCE_ATTRIBUTES``, ``OTEL_TRACES_SAMPLER`` and the
  ``OTEL_BSP_*`` batch settings are read by the SDK as usual.

The spans of one request: ``gateway`` (SERVER) -> ``publish <topic>`` (PRODUCER; its context is
what the message's ``traceparent`` header carries) -> ``process <topic>`` (CONSUMER, in the
worker, one per trace in a batch) -> ``publish <result topic>`` (PRODUCER, the result), and on to
the next worker. The envelope's own ``traceparent`` keeps the trace id, so logs and events still
correlate when tracing is off.
"""

from __future__ import annotations

import atexit
import contextlib
import contextvars
import os
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

ENABLED = False
TRACEPARENT = "traceparent"

_tracer: Any = None
_provider: Any = None
_propagator: Any = None


def _wanted_by_env(env: dict[str, str] | os._Environ = os.environ) -> bool:
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporter = env.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporter:
        return exporter != "none"
    return bool(env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or
                env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))


def configure(exporter: Any = None, *, service_name: str | None = None,
              simple: bool = False, sampler: Any = None) -> bool:
    """Turn tracing on with ``exporter`` (tests pass an in-memory one), or from OTEL_* env.

    Returns whether tracing is on. Safe to call more than once: the last call wins."""
    global ENABLED, _tracer, _provider, _propagator
    if exporter is None and not _wanted_by_env():
        return ENABLED
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    if exporter is None:
        exporter = _exporter_from_env()
        if exporter is None:
            return ENABLED
    attrs = {"service.name": service_name} if service_name else {}
    provider = TracerProvider(resource=Resource.create(attrs), sampler=sampler,  # None: env
                              id_generator=_RequestTraceIds())
    provider.add_span_processor(SimpleSpanProcessor(exporter) if simple
                                else BatchSpanProcessor(exporter))
    shutdown()
    _provider = provider
    _tracer = provider.get_tracer("ragstream")
    _propagator = TraceContextTextMapPropagator()
    ENABLED = True
    return True


_root_trace_id: contextvars.ContextVar[int | None] = contextvars.ContextVar(
    "ragstream_root_trace_id", default=None)


def _RequestTraceIds() -> Any:  # noqa: N802 - a class, built lazily so OTel loads only when on
    from opentelemetry.sdk.trace.id_generator import RandomIdGenerator

    class RequestTraceIds(RandomIdGenerator):
        """Random ids, except a root span's trace id when the gateway names one (its request
        id's), so that the trace id stays the request's whether tracing is on or off."""

        def generate_trace_id(self) -> int:
            wanted = _root_trace_id.get()
            return wanted if wanted is not None else super().generate_trace_id()

    return RequestTraceIds()


def _exporter_from_env() -> Any:
    kind = os.environ.get("OTEL_TRACES_EXPORTER", "otlp").split(",")[0].strip().lower()
    if kind == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        return ConsoleSpanExporter()
    if kind == "otlp":
        protocol = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
                                  os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"))
        if protocol != "http/protobuf":
            raise ValueError(f"OTLP protocol {protocol!r} is not installed; use http/protobuf")
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter()  # endpoint, headers, timeout: OTEL_EXPORTER_OTLP_* env
    raise ValueError(f"OTEL_TRACES_EXPORTER={kind!r} is not supported (otlp, console, none)")


def shutdown() -> None:
    """Flush and stop the exporter; tracing is off afterwards."""
    global ENABLED, _tracer, _provider
    provider, _provider = _provider, None
    ENABLED, _tracer = False, None
    if provider is not None:
        provider.shutdown()


atexit.register(shutdown)


def configure_from_env(service_name: str | None = None) -> bool:
    """Process start: on only if the OTEL_* environment asks for it (cheap when it does not)."""
    if not _wanted_by_env():
        return False
    return configure(service_name=os.environ.get("OTEL_SERVICE_NAME") or service_name)


# contexts ---------------------------------------------------------------------------------------


def context_from(traceparent: str | bytes | None) -> Any:
    """The OpenTelemetry context whose parent is ``traceparent`` (None: a new trace)."""
    if not traceparent:
        return None
    if isinstance(traceparent, bytes):
        traceparent = traceparent.decode("ascii", "replace")
    return _propagator.extract({TRACEPARENT: traceparent})


def traceparent_of(span: Any) -> str:
    ctx = span.get_span_context()
    return f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{int(ctx.trace_flags):02x}"


def header(headers: Iterable[tuple[str, bytes]]) -> bytes | None:
    for key, value in headers:
        if key == TRACEPARENT:
            return value
    return None


def _trace_id(traceparent: bytes | str | None) -> str | None:
    if not traceparent:
        return None
    if isinstance(traceparent, bytes):
        traceparent = traceparent.decode("ascii", "replace")
    parts = traceparent.split("-")
    return parts[1] if len(parts) == 4 else None


# spans ------------------------------------------------------------------------------------------


@contextlib.contextmanager
def server_span(name: str, traceparent: str | None, trace_id: str | None = None,
                **attributes: Any) -> Iterator[Any]:
    """The gateway's span for one request: a child of the caller's ``traceparent``, else a root
    span whose trace id is ``trace_id`` (32 hex digits). A root is sampled by the configured
    sampler (OTEL_TRACES_SAMPLER), and its decision travels downstream in the flags."""
    from opentelemetry import trace
    from opentelemetry.trace import SpanKind

    parent = context_from(traceparent)
    has_parent = parent is not None and trace.get_current_span(parent).get_span_context().is_valid
    token = _root_trace_id.set(int(trace_id, 16) if trace_id and not has_parent else None)
    try:  # the id generator runs inside start_span
        span = _tracer.start_span(name, context=parent if has_parent else None,
                                  kind=SpanKind.SERVER, attributes=attributes)
    finally:
        _root_trace_id.reset(token)
    with trace.use_span(span, end_on_exit=True):
        yield span


@contextlib.contextmanager
def publishing(messages: Sequence[Any], parents: dict[str, Any] | None = None,
               name: str = "publish") -> Iterator[list[Any]]:
    """PRODUCER spans around sending ``messages`` (``OutMessage``s); yields the messages to send,
    their ``traceparent`` header replaced:
    one per (topic, trace) group, each a child of ``parents[trace_id]`` (a worker's span), else
    of the message's own traceparent, else of the current span. The header then carries the
    publish span's context, which is what the consumer continues."""
    import dataclasses

    from opentelemetry.trace import SpanKind

    out = list(messages)
    groups: dict[tuple[str, bytes | None], list[int]] = {}
    for i, m in enumerate(messages):
        groups.setdefault((m.topic, header(m.headers)), []).append(i)
    spans = []
    try:
        for (topic_name, parent_header), indices in groups.items():
            parent_span = (parents or {}).get(_trace_id(parent_header))
            if parent_span is not None:
                from opentelemetry import trace

                ctx = trace.set_span_in_context(parent_span)
            else:
                ctx = context_from(parent_header)
            span = _tracer.start_span(f"{name} {topic_name}", context=ctx, kind=SpanKind.PRODUCER,
                                      attributes={"messaging.system": "kafka",
                                                  "messaging.destination.name": topic_name,
                                                  "messaging.operation.type": "publish",
                                                  "messaging.batch.message_count": len(indices)})
            spans.append(span)
            value = traceparent_of(span).encode()
            for i in indices:
                m = out[i]
                out[i] = dataclasses.replace(m, headers=[
                    *(h for h in m.headers if h[0] != TRACEPARENT), (TRACEPARENT, value)])
        yield out
    except BaseException as exc:
        for span in spans:
            span.record_exception(exc)
            from opentelemetry.trace import Status, StatusCode

            span.set_status(Status(StatusCode.ERROR, str(exc)[:200]))
        raise
    finally:
        for span in spans:
            span.end()


def start_consumer_spans(worker: str, events: Sequence[Any]) -> dict[str, Any]:
    """One CONSUMER span per trace in a batch (``Event``s), parent from the record's
    ``traceparent`` header (the publish span), else the envelope's. Keyed by trace id."""
    from opentelemetry.trace import SpanKind

    spans: dict[str, Any] = {}
    for e in events:
        parent = header(e.record.headers) or e.envelope.traceparent
        trace_id = _trace_id(parent)
        if trace_id is None or trace_id in spans:
            continue
        spans[trace_id] = _tracer.start_span(
            f"process {e.record.topic}", context=context_from(parent), kind=SpanKind.CONSUMER,
            attributes={"messaging.system": "kafka", "messaging.destination.name": e.record.topic,
                        "messaging.operation.type": "process",
                        "messaging.consumer.group.name": worker, "ragstream.worker": worker,
                        "messaging.message.id": e.envelope.id})
    return spans


def end_spans(spans: dict[str, Any], error: BaseException | None = None) -> None:
    for span in spans.values():
        if error is not None:
            from opentelemetry.trace import Status, StatusCode

            span.record_exception(error)
            span.set_status(Status(StatusCode.ERROR, str(error)[:200]))
        span.end()


class BatchTrace:
    """The spans of one worker batch: a CONSUMER span per trace, and PRODUCER spans for the
    results it publishes, children of those. Ended together once the batch is committed."""

    def __init__(self, worker: str, events: Sequence[Any]):
        self.consumer = start_consumer_spans(worker, events)
        self._producers: list[Any] = []

    def publish(self, messages: Sequence[Any]) -> list[Any]:
        """Result messages with their ``traceparent`` header set to a publish span's context.
        Results of untraced events (no consumer span) go out as they are."""
        out = list(messages)
        traced = [i for i, m in enumerate(out) if _trace_id(header(m.headers)) in self.consumer]
        if traced:
            cm = publishing([out[i] for i in traced], self.consumer)
            for i, m in zip(traced, cm.__enter__(), strict=True):
                out[i] = m
            self._producers.append(cm)
        return out

    def end(self, error: BaseException | None = None) -> None:
        for cm in self._producers:
            if error is None:
                cm.__exit__(None, None, None)
            else:
                with contextlib.suppress(BaseException):
                    cm.__exit__(type(error), error, error.__traceback__)
        self._producers.clear()
        end_spans(self.consumer, error)
        self.consumer = {}
