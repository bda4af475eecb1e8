"""The production model repository (infra/triton/model_repository) loaded by a real
tritonserver: every committed config.pbtxt, with --strict-model-config as compose runs it, the
ensemble, the tokenizer model and the BLS reranker. infra/triton/check_repository.py does the
work (the ONNX encoder is swapped for a Python-backend stand-in there: this server has no ONNX
Runtime backend and no GPU, so KIND_GPU and the ONNX graph itself are not tested here)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "infra/triton/check_repository.py"


def test_the_production_model_repository_loads_and_answers_like_local_minilm():
    result = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    diffs = dict(re.findall(r"(grpc|http): minilm \(ensemble\) vs local MiniLM, max abs diff "
                            r"(\S+)", result.stdout))
    assert set(diffs) == {"grpc", "http"}, result.stdout
    assert all(float(d) <= 1e-5 for d in diffs.values()), diffs
    assert "minilm_reranker scores" in result.stdout
    assert result.stdout.rstrip().endswith("repository OK")
