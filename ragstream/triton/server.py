"""Start the local Triton (``ragstream.triton.serve``) from its own venv, as a child process.

PyTriton pins numpy<2, so the server runs from ``.venv-triton`` (``make .venv-triton``), or the
interpreter in ``RAGSTREAM_TRITON_PYTHON``. PyTriton needs the interpreter's libpython on
``LD_LIBRARY_PATH``, or every model fails to load (see ../shared/NOTES.md). The server runs in its
own process group, so ``stop`` ends tritonserver and PyTriton's model processes with it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import urllib.request
from pathlib import Path

from ragstream.stack import ManagedProcess, free_port

REPO = Path(__file__).resolve().parents[2]


def triton_python() -> str:
    python = os.environ.get("RAGSTREAM_TRITON_PYTHON") or str(REPO / ".venv-triton/bin/python")
    if not Path(python).exists():
        raise FileNotFoundError(f"no Triton venv at {python}: run `make .venv-triton` "
                                "(or set RAGSTREAM_TRITON_PYTHON)")
    return python


def _libdir(python: str) -> str:
    return subprocess.run([python, "-c", "import sysconfig;print(sysconfig.get_config_var('LIBDIR'))"],
                          capture_output=True, text=True, check=True).stdout.strip()


def token_header(protocol: str) -> str:
    """The header Triton reads its access token from."""
    return ("triton-grpc-protocol-triton-access-token" if protocol == "grpc"
            else "triton-access-token")


class TritonServer(ManagedProcess):
    """PyTriton serving the project's models on loopback ports (free ones unless given)."""

    def __init__(self, data_dir: Path, *, http_port: int | None = None,
                 grpc_port: int | None = None, metrics_port: int | None = None,
                 max_batch_size: int = 64, max_queue_delay_us: int = 2000,
                 max_queue_size: int = 1024, models: str = "minilm,minilm_reranker",
                 access_token: str | None = None, protect: str = "",
                 extra_args: list[str] | None = None):
        python = triton_python()
        self.http_port = http_port or free_port()
        self.grpc_port = grpc_port or free_port()
        self.metrics_port = metrics_port or free_port()
        self.models = models.split(",")
        argv = [python, "-m", "ragstream.triton.serve", "--http-port", str(self.http_port),
                "--grpc-port", str(self.grpc_port), "--metrics-port", str(self.metrics_port),
                "--max-batch-size", str(max_batch_size),
                "--max-queue-delay-us", str(max_queue_delay_us),
                "--max-queue-size", str(max_queue_size), "--models", models,
                "--protect", protect, *(extra_args or [])]
        self.access_token = access_token
        libdir = _libdir(python)
        ld = ":".join(p for p in (libdir, os.environ.get("LD_LIBRARY_PATH", "")) if p)
        pythonpath = ":".join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
        super().__init__("triton", argv, data_dir / "logs" / "triton.log",
                         env={"LD_LIBRARY_PATH": ld, "PYTHONPATH": pythonpath,
                              "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
                              "PYTRITON_HOME": str((data_dir / "pytriton").resolve()),
                              **({"RAGSTREAM_TRITON_ACCESS_TOKEN": access_token}
                                 if access_token else {})})

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def http_url(self) -> str:
        return f"127.0.0.1:{self.http_port}"

    def worker_env(self, protocol: str = "grpc") -> dict[str, str]:
        """RAGSTREAM_* settings that point a worker at this server (with its access token)."""
        env = {"RAGSTREAM_TRITON_URL": self.grpc_url if protocol == "grpc" else self.http_url,
               "RAGSTREAM_TRITON_PROTOCOL": protocol}
        if self.access_token:
            env["RAGSTREAM_TRITON_AUTH_HEADER_NAME"] = token_header(protocol)
            env["RAGSTREAM_TRITON_AUTH_HEADER"] = self.access_token
        return env

    def headers(self, protocol: str = "grpc") -> dict[str, str] | None:
        return {token_header(protocol): self.access_token} if self.access_token else None

    def ready(self) -> bool:
        for model in self.models:
            url = f"http://{self.http_url}/v2/models/{model}/ready"
            req = urllib.request.Request(url, headers=self.headers("http") or {})
            with urllib.request.urlopen(req, timeout=1) as r:  # raises until it is
                if r.status != 200:
                    return False
        return True

    def start(self, timeout: float = 120) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")
        try:
            self.process = subprocess.Popen(
                self.argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env={**os.environ, **self.env}, start_new_session=True)
        finally:
            log.close()
        self.wait_ready(self.ready, timeout)

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM the whole group (PyTriton, tritonserver, model proxies), SIGKILL if slow."""
        if self.process is None:
            return None
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            pass
        try:
            os.killpg(self.process.pid, signal.SIGKILL)  # stragglers in the group
        except ProcessLookupError:
            pass
        self.process.wait()
        return self.process.returncode
