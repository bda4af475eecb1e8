"""``POST /v1/embeddings``: OpenAI's embeddings API, so the official ``openai`` client (or any
tool built on it) pointed at the gateway's ``/v1`` with a ragstream API key gets the
deployment's vectors unchanged.

Request and response have OpenAI's shapes: ``input`` a text or a list of texts, ``model``,
``encoding_format`` ``float`` or ``base64`` (little-endian float32, what the client asks for by
default), ``usage`` in the model's own word pieces. ``model`` is the deployment's model id or a
short name of it (``all-MiniLM-L6-v2``); another model is a 404, as OpenAI answers. The vectors
are the ones the index stores (``Embedder.embed``), so a client can compare them with stored
chunks. Texts longer than the model's window are truncated to it (256 word pieces for MiniLM).
The scope and the charge are ``/v1/embed``'s: ``infer``, a token per text past the first.
"""

from __future__ import annotations

import asyncio
import base64

import numpy as np
from fastapi import APIRouter, HTTPException, Response

from ragstream.embedders import Embedder
from ragstream.gateway.body import StrictJSONRoute
from ragstream.gateway.dependencies import Caller, GatewayState, charge, require
from ragstream.gateway.models import (EmbeddingItem, EmbeddingsIn, EmbeddingsOut,
                                      EmbeddingsUsage, Problem)

router = APIRouter(tags=["infer"], dependencies=[require("infer")],
                   route_class=StrictJSONRoute)


def model_names(embedder: Embedder) -> set[str]:
    """The names a client may use: the full id and its shorter forms."""
    full = embedder.model_id
    repo = full.split("@", 1)[0]
    return {full, repo, repo.rsplit("/", 1)[-1]}


def word_pieces(embedder: Embedder, texts: list[str]) -> int:
    """What the model reads of ``texts``: its tokens, special ones included, up to its window."""
    window = getattr(embedder.model, "max_seq_length", 256)
    ids = embedder.model.tokenizer(texts, truncation=True, max_length=window)["input_ids"]
    return sum(len(i) for i in ids)


def _encode(vector: np.ndarray, encoding: str) -> list[float] | str:
    if encoding == "base64":
        return base64.b64encode(vector.astype("<f4").tobytes()).decode()
    return vector.tolist()


@router.post("/v1/embeddings", response_model=EmbeddingsOut,
             responses={404: {"model": Problem}})
async def embeddings(body: EmbeddingsIn, gateway: GatewayState, key: Caller) -> Response:
    texts = [body.input] if isinstance(body.input, str) else body.input
    embedder = await gateway.embedder()
    if body.model not in model_names(embedder):
        raise HTTPException(404, f"the model {body.model!r} does not exist here; this "
                                 f"deployment serves {embedder.model_id!r}")
    if body.dimensions is not None and body.dimensions != embedder.dimension:
        raise HTTPException(422, [{"loc": ["body", "dimensions"], "type": "value_error",
                                   "msg": f"the model gives {embedder.dimension} dimensions "
                                          "and cannot shorten them"}])
    await charge(gateway, key, len(texts) - 1, f"{len(texts)} texts")
    vectors, tokens = await asyncio.to_thread(
        lambda: (embedder.embed(texts), word_pieces(embedder, texts)))
    out = EmbeddingsOut(
        model=embedder.model_id,
        data=[EmbeddingItem(index=i, embedding=_encode(v, body.encoding_format))
              for i, v in enumerate(vectors)],
        usage=EmbeddingsUsage(prompt_tokens=tokens, total_tokens=tokens))
    return Response(out.model_dump_json(), media_type="application/json")
