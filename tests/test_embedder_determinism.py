"""A chunk's vector depends on its text alone, not on the batch it was embedded in: a replay,
a crash or a cache flush re-embeds chunks in other batches, and the index must end up with the
same bytes as a clean run (the chaos suite compares the index by hash)."""

from __future__ import annotations

import random

from producers import reuters


def test_vectors_do_not_depend_on_batch_mates(minilm):
    # long, medium and short texts, so every length bucket and partly filled calls are exercised
    texts = [t for d in reuters.load(limit=40) for t in (d.text[:1500], d.text[:200], d.title)]
    whole = minilm.embed(texts)
    rng = random.Random(7)
    for size in (1, 2, 5, 17, 33, 64, 100):
        picked = rng.sample(range(len(texts)), size)
        part = minilm.embed([texts[i] for i in picked])
        assert [part[j].tobytes() for j in range(size)] == [whole[i].tobytes() for i in picked]


def test_a_query_vector_is_the_stored_vector_of_the_same_text(minilm):
    """Queries take the fast unpadded path; they must still land where ``embed`` puts the text."""
    import numpy as np

    for query in ("oil prices", "What did the Fed say about interest rates in March 1987?"):
        fast, stored = minilm.embed_query(query), minilm.embed([query])[0]
        assert fast.dtype == np.float32 and fast.shape == stored.shape
        assert np.abs(fast - stored).max() < 1e-6
        assert fast.tobytes() != np.zeros_like(fast).tobytes()


def test_the_spare_row_fallback_stores_the_same_bytes(minilm):
    """Where a vector would depend on the row count, every call is padded to ``rows`` rows; here
    it does not (so a lone text costs one row), and both ways give the same bytes."""
    texts = [d.text[:n] for d in reuters.load(limit=12) for n in (90, 400, 1200)]
    free = minilm.embed(texts)
    assert minilm._pad_rows is False, "this machine's vectors depend on the row count"
    minilm._pad_rows = True
    try:
        padded = minilm.embed(texts)
    finally:
        minilm._pad_rows = False
    assert [v.tobytes() for v in padded] == [v.tobytes() for v in free]
