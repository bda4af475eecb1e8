"""The Triton clients: ``TritonClient`` (async) for the batch inference worker, ``TritonModel``
(sync, one model) for the Triton embedder and the search re-ranker.

- gRPC (``tritonclient.grpc.aio``) by default, HTTP (``tritonclient.http.aio``) as an option;
  TLS files and an auth header from ``Settings`` (secrets: ``RAGSTREAM_TRITON_AUTH_HEADER_FILE``).
- What a model takes and gives, and its max batch size and queue limit, are learned from Triton's
  model metadata and config (``ModelInfo``), never assumed.
- Errors are sorted by their gRPC status code (an HTTP status counts as its gRPC equivalent),
  never by their text: ``TritonUnavailable`` (down, overloaded, queue full, timed out: retry
  later) versus ``TritonRejected`` (this request can never succeed: bad input, unknown model).
- What to do about an error (retries, the breaker, the fallback) is ``dispatch``'s business.
"""

from __future__ import annotations

import asyncio
import math
import ssl as ssl_lib
import threading
from dataclasses import dataclass
from typing import Any

import grpc
import numpy as np
from grpc import StatusCode

from ragstream.config import Settings


class TritonError(Exception):
    def __init__(self, message: str, code: StatusCode = StatusCode.UNKNOWN):
        super().__init__(message)
        self.code = code


class TritonUnavailable(TritonError, ConnectionError):
    """Transient: Triton is down, overloaded, its queue is full, or it timed out. Retry later.
    A ``ConnectionError``, so the worker runtime treats it as backpressure."""

    def __init__(self, message: str, code: StatusCode = StatusCode.UNAVAILABLE,
                 retry_after: float | None = None):
        super().__init__(message, code)
        self.retry_after = retry_after


class TritonRejected(TritonError):
    """Permanent: Triton refused this request and will refuse it again."""

    @property
    def invalid(self) -> bool:
        """The request is at fault (bad shape or dtype, unknown model or version); otherwise the
        model failed on it (INTERNAL, UNIMPLEMENTED, ...)."""
        return self.code in _REQUEST_AT_FAULT


# Codes that mean "try again later". A refused token is one too (Triton answers UNAVAILABLE over
# gRPC, 403 over HTTP): it is the deployment's fault, not the request's, so requests wait
# (backpressure) for the fix instead of going to the dead-letter topic by the thousand. A full
# queue is UNAVAILABLE (503 over HTTP).
_TRANSIENT = frozenset({StatusCode.UNAVAILABLE, StatusCode.DEADLINE_EXCEEDED,
                        StatusCode.RESOURCE_EXHAUSTED, StatusCode.CANCELLED, StatusCode.ABORTED,
                        StatusCode.UNKNOWN, StatusCode.UNAUTHENTICATED,
                        StatusCode.PERMISSION_DENIED})
_REQUEST_AT_FAULT = frozenset({StatusCode.INVALID_ARGUMENT, StatusCode.NOT_FOUND,
                               StatusCode.OUT_OF_RANGE})
# Triton's HTTP statuses as the gRPC codes it sends for the same errors, so both protocols are
# sorted by one table.
_HTTP_TO_GRPC = {400: StatusCode.INVALID_ARGUMENT, 401: StatusCode.UNAUTHENTICATED,
                 403: StatusCode.PERMISSION_DENIED, 404: StatusCode.NOT_FOUND,
                 408: StatusCode.DEADLINE_EXCEEDED, 409: StatusCode.ABORTED,
                 429: StatusCode.RESOURCE_EXHAUSTED, 499: StatusCode.CANCELLED,
                 500: StatusCode.INTERNAL, 501: StatusCode.UNIMPLEMENTED,
                 502: StatusCode.UNAVAILABLE, 503: StatusCode.UNAVAILABLE,
                 504: StatusCode.DEADLINE_EXCEEDED}


def status_code(exc: BaseException) -> StatusCode | None:
    """The gRPC status code of a gRPC or tritonclient error (an HTTP status is mapped to its gRPC
    equivalent); None for an error that carries no status."""
    if isinstance(exc, grpc.RpcError) and callable(getattr(exc, "code", None)):
        return exc.code()
    from tritonclient.utils import InferenceServerException

    if not isinstance(exc, InferenceServerException) or not exc.status():
        return None
    status = str(exc.status())  # tritonclient gives str(grpc.StatusCode) or the HTTP status
    if status.isdigit():
        http = int(status)
        return _HTTP_TO_GRPC.get(http, StatusCode.FAILED_PRECONDITION if http < 500
                                 else StatusCode.UNAVAILABLE)
    return StatusCode.__members__.get(status.removeprefix("StatusCode."), StatusCode.UNKNOWN)


def classify(exc: BaseException) -> TritonError:
    """Map a tritonclient, gRPC or aiohttp error to transient or permanent, by its status code.
    An error without one (a refused connection, a timeout, anything unknown) is transient: never
    drop a request on a guess."""
    if isinstance(exc, TritonError):
        return exc
    code = status_code(exc)
    text = exc.message() if callable(getattr(exc, "message", None)) else repr(exc)
    if code is None or code in _TRANSIENT:
        return TritonUnavailable(f"{code.name if code else type(exc).__name__}: {text}",
                                 code or StatusCode.UNAVAILABLE)
    return TritonRejected(f"{code.name}: {text}", code)


@dataclass(frozen=True)
class TensorSpec:
    name: str
    datatype: str  # Triton's: FP32, BYTES, ...
    shape: tuple[int, ...]  # without the batch dimension; -1 is variable


@dataclass(frozen=True)
class ModelInfo:
    name: str
    version: str  # the version Triton serves ("" asks Triton for its latest)
    inputs: dict[str, TensorSpec]
    outputs: dict[str, TensorSpec]
    max_batch_size: int  # 0: the model does not batch; one request per call
    max_queue_size: int  # 0: unbounded
    dynamic_batching: bool

    @property
    def batch_limit(self) -> int:
        return max(self.max_batch_size, 1)


def _spec(t: dict, batched: bool) -> TensorSpec:
    shape = tuple(int(d) for d in t.get("shape", []))
    if batched and shape and shape[0] == -1:
        shape = shape[1:]
    return TensorSpec(t["name"], t["datatype"], shape)


def model_info(metadata: dict, config: dict) -> ModelInfo:
    """ModelInfo from Triton's model metadata and config (both as JSON)."""
    config = config.get("config", config)  # gRPC wraps it in {"config": ...}
    max_batch = int(config.get("max_batch_size", 0) or 0)
    batched = max_batch > 0
    dyn = config.get("dynamic_batching")
    queue = 0
    if isinstance(dyn, dict):
        policy = dyn.get("default_queue_policy") or {}
        queue = int(policy.get("max_queue_size", 0) or 0)
    versions = metadata.get("versions") or [""]
    return ModelInfo(
        name=metadata["name"], version=str(versions[-1]),
        inputs={t["name"]: _spec(t, batched) for t in metadata.get("inputs", [])},
        outputs={t["name"]: _spec(t, batched) for t in metadata.get("outputs", [])},
        max_batch_size=max_batch, max_queue_size=queue, dynamic_batching=dyn is not None)


def headers(settings: Settings) -> dict[str, str] | None:
    if settings.triton_auth_header is None:
        return None
    return {settings.triton_auth_header_name: settings.triton_auth_header.get_secret_value()}


def _path(p: Any) -> str | None:
    return str(p) if p else None


def grpc_kwargs(settings: Settings) -> dict[str, Any]:
    """Connection options for tritonclient.grpc (sync or aio): the embedder uses them too."""
    return dict(url=settings.triton_url, ssl=settings.triton_ssl,
                root_certificates=_path(settings.triton_root_certificates),
                private_key=_path(settings.triton_private_key),
                certificate_chain=_path(settings.triton_certificate_chain))


def grpc_channel_args() -> list[tuple[str, int]]:
    """tritonclient's defaults, plus a short reconnect backoff: gRPC's own grows to 120 s, which
    would keep a worker paused for minutes after Triton came back."""
    from tritonclient.grpc import KeepAliveOptions
    from tritonclient.grpc._client import MAX_GRPC_MESSAGE_SIZE

    k = KeepAliveOptions()
    return [("grpc.max_send_message_length", MAX_GRPC_MESSAGE_SIZE),
            ("grpc.max_receive_message_length", MAX_GRPC_MESSAGE_SIZE),
            ("grpc.keepalive_time_ms", k.keepalive_time_ms),
            ("grpc.keepalive_timeout_ms", k.keepalive_timeout_ms),
            ("grpc.keepalive_permit_without_calls", k.keepalive_permit_without_calls),
            ("grpc.http2.max_pings_without_data", k.http2_max_pings_without_data),
            ("grpc.initial_reconnect_backoff_ms", 200),
            ("grpc.min_reconnect_backoff_ms", 200),
            ("grpc.max_reconnect_backoff_ms", 2000)]


def ssl_context(settings: Settings) -> ssl_lib.SSLContext | None:
    if not settings.triton_ssl:
        return None
    ctx = ssl_lib.create_default_context(cafile=_path(settings.triton_root_certificates))
    if settings.triton_certificate_chain:
        ctx.load_cert_chain(str(settings.triton_certificate_chain),
                            _path(settings.triton_private_key))
    return ctx


def to_numpy(datatype: str, data: list, shape: tuple[int, ...]) -> np.ndarray:
    """One request's tensor from JSON values; raises ValueError on a mismatch."""
    from tritonclient.utils import triton_to_np_dtype

    n = math.prod(shape)
    if len(data) != n:
        raise ValueError(f"{len(data)} values for shape {list(shape)} (needs {n})")
    if datatype == "BYTES":
        # text only: ``bytes(3000000000)`` is three gigabytes of zeros, and a 10-byte request
        # got the worker OOM-killed before it could commit, again on every replay
        if not all(isinstance(v, str) for v in data):
            raise ValueError("BYTES data must be strings")
        return np.array([v.encode("utf-8") for v in data], dtype=np.object_).reshape(shape)
    dtype = triton_to_np_dtype(datatype)
    if dtype is None:
        raise ValueError(f"unknown datatype {datatype}")
    arr = np.asarray(data)
    if datatype == "BOOL":
        if arr.size and arr.dtype != np.bool_:
            raise ValueError("BOOL data must be true or false")
    elif arr.size and not (np.issubdtype(arr.dtype, np.number) and not np.issubdtype(arr.dtype, np.bool_)):
        raise ValueError(f"{datatype} data must be numbers")
    elif np.issubdtype(np.dtype(dtype), np.integer) and arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{datatype} data must be integers")
    out = arr.astype(dtype)
    if np.issubdtype(np.dtype(dtype), np.integer) and arr.size and not np.array_equal(out, arr):
        raise ValueError(f"values out of range for {datatype}")
    return out.reshape(shape)


def to_json(datatype: str, arr: np.ndarray) -> list:
    flat = arr.reshape(-1)
    if datatype == "BYTES":
        return [v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in flat]
    return flat.tolist()



class TritonClient:
    """Async Triton client. ``info`` is cached per model+version; ``infer`` runs one batch."""

    def __init__(self, settings: Settings, protocol: str | None = None):
        self.settings = settings
        self.protocol = protocol or settings.triton_protocol
        self.headers = headers(settings)
        self.timeout_s = settings.triton_timeout_s
        if self.protocol == "grpc":
            import tritonclient.grpc as module
            import tritonclient.grpc.aio as aio

            self._client = aio.InferenceServerClient(**grpc_kwargs(settings),
                                                     channel_args=grpc_channel_args())
        else:
            import tritonclient.http as module
            import tritonclient.http.aio as aio

            ctx = ssl_context(settings)
            self._client = aio.InferenceServerClient(settings.triton_url, ssl=ctx is not None,
                                                     ssl_context=ctx,
                                                     conn_timeout=self.timeout_s)
        self._module = module
        self._info: dict[tuple[str, str], ModelInfo] = {}

    async def close(self) -> None:
        await self._client.close()

    async def ready(self) -> bool:
        try:
            return bool(await self._client.is_server_ready(headers=self.headers))
        except Exception:
            return False

    async def info(self, model: str, version: str | None = None) -> ModelInfo:
        key = (model, version or "")
        if key not in self._info:
            try:
                if self.protocol == "grpc":
                    meta = await self._client.get_model_metadata(
                        model, version or "", headers=self.headers, as_json=True,
                        client_timeout=self.timeout_s)
                    config = await self._client.get_model_config(
                        model, version or "", headers=self.headers, as_json=True,
                        client_timeout=self.timeout_s)
                else:
                    meta = await asyncio.wait_for(self._client.get_model_metadata(
                        model, version or "", headers=self.headers), self.timeout_s)
                    config = await asyncio.wait_for(self._client.get_model_config(
                        model, version or "", headers=self.headers), self.timeout_s)
            except Exception as exc:
                err = classify(exc)
                if isinstance(err, TritonRejected) and not await self.ready():
                    # a server still loading its models knows none of them yet: not a bad request
                    raise TritonUnavailable(f"Triton is not ready: {err}") from exc
                if isinstance(err, TritonRejected):
                    raise TritonRejected(f"model {model!r} version {version or 'latest'}: "
                                         f"{err}", err.code) from exc
                raise err from exc
            self._info[key] = model_info(meta, config)
        return self._info[key]

    def forget(self, model: str, version: str | None = None) -> None:
        """Drop cached metadata, so the next ``info`` asks Triton again."""
        self._info.pop((model, version or ""), None)

    async def infer(self, info: ModelInfo, inputs: dict[str, np.ndarray],
                    outputs: list[str] | None = None, version: str | None = None,
                    priority: int = 0) -> dict[str, np.ndarray]:
        """One Triton request for a whole batch (arrays carry the batch dimension)."""
        m = self._module
        tensors = []
        try:  # a failure here is the input's fault, never Triton's: it must not look transient
            for name, arr in inputs.items():
                t = m.InferInput(name, list(arr.shape), info.inputs[name].datatype)
                t.set_data_from_numpy(arr)
                tensors.append(t)
            wanted = outputs or list(info.outputs)
            requested = [m.InferRequestedOutput(n) for n in wanted]
        except Exception as exc:
            raise TritonRejected(f"cannot build the request: {exc}",
                                 StatusCode.INVALID_ARGUMENT) from exc
        try:
            if self.protocol == "grpc":
                result = await self._client.infer(info.name, tensors, model_version=version or "",
                                                  outputs=requested, headers=self.headers,
                                                  client_timeout=self.timeout_s)
            else:
                result = await asyncio.wait_for(self._client.infer(
                    info.name, tensors, model_version=version or "", outputs=requested,
                    headers=self.headers), self.timeout_s)
        except Exception as exc:
            err = classify(exc)
            if err.code is StatusCode.NOT_FOUND:
                # Triton knew this model (we hold its metadata): it is restarting or reloading it,
                # or was unloaded. Its metadata stays cached, so the worker keeps treating its
                # requests as valid and they wait (or go to the fallback) instead of being
                # dead-lettered as "unknown model" by the thousand.
                raise TritonUnavailable(str(err), err.code) from exc
            if err.code is StatusCode.INVALID_ARGUMENT:
                # Triton refused inputs our cached metadata accepted: the model may have been
                # reloaded with a new signature, so the next look-up asks Triton again.
                self.forget(info.name, version)
            raise err from exc
        return {n: result.as_numpy(n) for n in wanted}


class TritonModel:
    """One Triton model, called synchronously from any thread, through the same connection
    settings as the batch inference worker (gRPC or HTTP, TLS, auth header). What it takes and
    gives is learned from Triton (``info``); ``infer`` splits a batch at the model's limit."""

    def __init__(self, settings: Settings, model: str):
        self.settings, self.name = settings, model
        self.headers = headers(settings)
        self.timeout_s = settings.triton_timeout_s
        self._local = threading.local()
        if settings.triton_protocol == "grpc":
            import tritonclient.grpc as module

            self._grpc = module.InferenceServerClient(**grpc_kwargs(settings))
            meta = self._grpc.get_model_metadata(model, headers=self.headers, as_json=True,
                                                 client_timeout=self.timeout_s)
            config = self._grpc.get_model_config(model, headers=self.headers, as_json=True,
                                                 client_timeout=self.timeout_s)
        else:
            import tritonclient.http as module

            client = self._http()
            meta = client.get_model_metadata(model, headers=self.headers)
            config = client.get_model_config(model, headers=self.headers)
        self._module = module
        self.info = model_info(meta, config)

    def _http(self):
        """tritonclient.http runs on gevent, whose hub belongs to one thread: each thread that
        calls gets its own client."""
        import tritonclient.http as module

        client = getattr(self._local, "client", None)
        if client is None:
            ctx = ssl_context(self.settings)
            client = self._local.client = module.InferenceServerClient(
                self.settings.triton_url, ssl=ctx is not None,
                ssl_context_factory=(lambda: ctx) if ctx else None,
                network_timeout=self.timeout_s, connection_timeout=self.timeout_s)
        return client

    def infer(self, inputs: dict[str, np.ndarray], output: str) -> np.ndarray:
        """``output`` for a batch of any size: arrays carry the batch dimension first."""
        m = self._module
        rows = len(next(iter(inputs.values())))
        parts = []
        for start in range(0, rows, self.info.batch_limit):
            tensors = []
            for name, arr in inputs.items():
                part = arr[start:start + self.info.batch_limit]
                t = m.InferInput(name, list(part.shape), self.info.inputs[name].datatype)
                t.set_data_from_numpy(part)
                tensors.append(t)
            if self.settings.triton_protocol == "grpc":
                client, kw = self._grpc, {"client_timeout": self.timeout_s}
            else:
                client, kw = self._http(), {}
            result = client.infer(self.name, tensors, headers=self.headers,
                                  outputs=[m.InferRequestedOutput(output)], **kw)
            parts.append(result.as_numpy(output))
        return np.concatenate(parts) if parts else np.zeros(0)


def text_column(texts: list[str]) -> np.ndarray:
    """A batch of texts as one BYTES input of shape [n, 1]."""
    return np.array([t.encode("utf-8") for t in texts], dtype=np.object_).reshape(-1, 1)

