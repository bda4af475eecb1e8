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


def test_every_model_call_has_the_configured_row_count(minilm):
    """No probe, no load or CPU decides the shape: a lone text and a partly filled call run with
    the same ``rows`` rows as a full one (an earlier per-process probe dropped the spare rows
    when it judged them harmless, and a loaded machine made it judge otherwise)."""
    shapes: list[tuple[int, int]] = []
    forward = minilm._forward

    def recording(texts, size):
        shapes.append((len(texts), size))
        return forward(texts, size)

    minilm._forward = recording
    try:
        for n in (1, 3, minilm.rows + 1):
            minilm.embed([d.text[:300] for d in reuters.load(limit=n)])
    finally:
        del minilm._forward
    assert shapes and {rows for rows, _ in shapes} == {minilm.rows}
