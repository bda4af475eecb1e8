"""Bulk publishing: JSON lines of envelopes, or a folder of text files, resumable."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator
from pathlib import Path

from pydantic import ValidationError
from rich.console import Console
from rich.progress import Progress

from producers.events import document_upserted
from ragstream.publisher import Publisher, encode
from ragstream.config import Settings
from schemas.catalogue import DecodeError
from schemas.envelope import Envelope

CHUNK = 500
TEXT_SUFFIXES = {".txt", ".md", ".rst", ".html", ".htm"}


def parse_line(line: str) -> Envelope:
    try:
        return Envelope.model_validate_json(line)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        where = ".".join(str(x) for x in first["loc"]) or "(root)"
        raise DecodeError("invalid_envelope", f"{where}: {first['msg']}") from exc


async def publish_lines(settings: Settings, lines: Iterable[str],
                        topic_name: str | None = None) -> tuple[int, list[tuple[int, str]]]:
    """Publish valid lines in chunks; return (sent, [(line number, reason)] for the invalid)."""
    sent, errors, chunk = 0, [], []
    async with Publisher(settings) as pub:
        for n, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                chunk.append(encode(parse_line(line), topic_name, settings.max_event_bytes))
            except DecodeError as exc:
                errors.append((n, str(exc)))
            if len(chunk) >= CHUNK:
                await pub.send_raw(chunk)
                sent, chunk = sent + len(chunk), []
        await pub.send_raw(chunk)
    return sent + len(chunk), errors


def _items(path: Path, version: int) -> Iterator[tuple[str, Envelope | DecodeError]]:
    """(where, envelope or the reason it is invalid), in a stable order."""
    if path.is_dir():
        for file in sorted(p for p in path.rglob("*") if p.suffix.lower() in TEXT_SUFFIXES):
            doc_id = file.relative_to(path).as_posix()
            try:
                yield doc_id, document_upserted(doc_id, file.read_text(encoding="utf-8"),
                                                version=version, title=file.stem,
                                                source="ragstream/backfill")
            except (UnicodeDecodeError, ValidationError) as exc:
                yield doc_id, DecodeError("invalid_document", str(exc)[:300])
        return
    with path.open(encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if line.strip():
                try:
                    yield f"{path.name}:{n}", parse_line(line)
                except DecodeError as exc:
                    yield f"{path.name}:{n}", exc


def _checkpoint_path(settings: Settings, path: Path) -> Path:
    digest = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:16]
    return settings.data_dir / "backfill" / f"{digest}.json"


async def backfill(settings: Settings, path: Path, *, resume: bool = True, version: int = 1,
                   console: Console | None = None) -> tuple[int, int, list[tuple[str, str]]]:
    """Publish everything under ``path``. A checkpoint after every acknowledged chunk lets a rerun
    skip what is done; a chunk re-sent after a crash carries the same event ids (a replay)."""
    checkpoint = _checkpoint_path(settings, path)
    done = json.loads(checkpoint.read_text())["done"] if resume and checkpoint.exists() else 0
    items = list(_items(path, version))
    sent, errors, chunk = 0, [], []
    checkpoint.parent.mkdir(parents=True, exist_ok=True)

    async with Publisher(settings) as pub:
        with Progress(console=console or Console(stderr=True), transient=True) as progress:
            task = progress.add_task(f"backfill {path.name}", total=len(items), completed=done)

            async def flush(position: int) -> None:
                nonlocal sent, chunk
                await pub.send_raw(chunk)
                sent += len(chunk)
                chunk = []
                checkpoint.write_text(json.dumps({"path": str(path.resolve()), "done": position}))
                progress.update(task, completed=position)

            for position, (where, item) in enumerate(items[done:], done + 1):
                if isinstance(item, DecodeError):
                    errors.append((where, str(item)))
                    continue
                try:
                    chunk.append(encode(item, None, settings.max_event_bytes))
                except DecodeError as exc:
                    errors.append((where, str(exc)))
                if len(chunk) >= CHUNK:
                    await flush(position)
            await flush(len(items))
    return sent, done, errors
