"""Entity recognition of long documents: in pieces, with bounded memory and exact offsets."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

from ragstream.nlp.recognise import PIECE_CHARS, _pieces


def test_pieces_cover_the_text_exactly_and_cut_at_paragraph_breaks():
    paragraphs = [f"Paragraph {i} " + "word " * (40 + i % 30) for i in range(400)]
    text = "\n\n".join(paragraphs)
    pieces = _pieces(text, 1_000)
    assert "".join(p for _, p in pieces) == text
    assert all(text[offset:offset + len(p)] == p for offset, p in pieces)
    assert all(len(p) <= 1_000 for _, p in pieces)
    assert all(p.endswith("\n\n") for _, p in pieces[:-1])  # never inside a paragraph
    # with no break at all, a piece still ends at the limit
    assert [len(p) for _, p in _pieces("x" * 2_500, 1_000)] == [1_000, 1_000, 500]
    assert _pieces("short", 1_000) == [(0, "short")]


def test_a_long_valid_document_is_recognised_within_bounded_memory():
    """A 400 kB document of Reuters articles (a 700 kB one took 2.2 GB in one piece, over the
    entity-linking worker's 2 GiB limit): its mentions reach its end, their offsets are exact,
    and recognising it adds well under the memory of one piece at a time."""
    script = textwrap.dedent("""
        import json
        from producers import reuters
        from ragstream.nlp.recognise import Recogniser

        def peak_mb():
            for line in open("/proc/self/status"):
                if line.startswith("VmHWM"):
                    return int(line.split()[1]) // 1024

        text = ""
        for doc in reuters.load():
            if len(text) > 400_000:
                break
            text += doc.text + "\\n\\n"
        recogniser = Recogniser(gazetteer=False)
        recogniser.recognise(["warm-up: Reuters reported from London."])
        before = peak_mb()
        mentions = recogniser.recognise([text])[0]
        print(json.dumps({"chars": len(text), "grew_mb": peak_mb() - before,
                          "last": max(m.end for m in mentions),
                          "wrong": sum(text[m.start:m.end] != m.text for m in mentions),
                          "mentions": len(mentions)}))
    """)
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=300, check=True)
    seen = json.loads(run.stdout.strip().splitlines()[-1])
    assert seen["chars"] > 20 * PIECE_CHARS and seen["mentions"] > 1_000
    assert seen["wrong"] == 0 and seen["last"] > seen["chars"] - PIECE_CHARS
    assert seen["grew_mb"] < 600, seen  # one piece at a time: about 1.3 GB before
