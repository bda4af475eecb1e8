"""The worker runtime. Workers import what they need from here:

- batch.py: what a worker sees (``Worker``, ``Batch``, ``Event``) and ``DeadLetter``;
- worker_runtime.py: ``WorkerRuntime``, the lifecycle and the path of one batch;
- isolation.py: retry the whole batch, then bisect to the poison event;
- partitions.py: pause, seek, resume, commit offsets and lag;
- failpoints.py: a worker that kills itself at a named step (the chaos harness arms it);
- retry.py: the one backoff formula.
"""

from ragstream.context import WorkerContext
from ragstream.errors import PermanentError, SinkUnavailable, WiringError
from ragstream.runtime.batch import Batch, DeadLetter, Event, Rejection, Worker
from ragstream.runtime.worker_runtime import WorkerRuntime
from ragstream.sinks import Sink

__all__ = ["Batch", "DeadLetter", "Event", "PermanentError", "Rejection", "Sink",
           "SinkUnavailable", "WiringError", "Worker", "WorkerContext", "WorkerRuntime"]
