"""Reuters-21578 (SGML, latin-1) as document events: the demo's and the tests' real corpus."""

from __future__ import annotations

import html
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ragstream.datasets import shared_data_dir

_DOC = re.compile(r"<REUTERS[^>]*NEWID=\"(\d+)\"[^>]*>(.*?)</REUTERS>", re.S)
_FIELD = {name: re.compile(rf"<{name}>(.*?)</{name}>", re.S) for name in ("TITLE", "BODY", "DATE")}
_TOPIC = re.compile(r"<D>(.*?)</D>")


@dataclass(frozen=True)
class ReutersDoc:
    doc_id: str
    title: str
    text: str
    date: str
    topics: tuple[str, ...]


def default_path() -> Path:
    return shared_data_dir() / "reuters21578"


def _clean(raw: str) -> str:
    text = html.unescape(raw)
    # strip the control characters the SGML carries (&#2;, &#3;, ...)
    return re.sub(r"[\x00-\x08\x0b-\x1f\x7f]", "", text).strip()


def load(path: Path | None = None, limit: int | None = None,
         with_body_only: bool = True) -> Iterator[ReutersDoc]:
    """Documents in file order; ``with_body_only`` skips the articles that have no body text."""
    path = path or default_path()
    files = sorted(path.glob("reut2-*.sgm")) if path.is_dir() else [path]
    count = 0
    for file in files:
        for match in _DOC.finditer(file.read_text(encoding="latin-1")):
            block = match.group(2)
            fields = {k: (m.group(1) if (m := rx.search(block)) else "") for k, rx in _FIELD.items()}
            body = _clean(fields["BODY"])
            if with_body_only and not body:
                continue
            topics_block = re.search(r"<TOPICS>(.*?)</TOPICS>", block, re.S)
            yield ReutersDoc(
                doc_id=f"reuters-{match.group(1)}",
                title=_clean(fields["TITLE"]),
                text=body,
                date=fields["DATE"].strip(),
                topics=tuple(_TOPIC.findall(topics_block.group(1))) if topics_block else (),
            )
            count += 1
            if limit is not None and count >= limit:
                return

