"""The version guard of a Qdrant collection: a batch of operations in, the writes that apply it out.

The semantics are the embedded index's script (ragstream.index.store.APPLY_CHANGES), operation by
operation: an operation older than its document's applied version changes nothing; an upsert at
that version or newer writes its chunk unless the stored one is identical (``same_chunk``); a
delete removes the listed chunks, or every chunk of the document; the document's version rises
to the newest seen. The batch is simulated in memory over what the store holds, and only the
net result is written:

1. ``document`` points: the raised versions (only where the stored one is not newer);
2. carry each raised version onto the document's existing chunks (``doc_version`` on a chunk is
   its document's applied version, so a server can guard every point on its own);
3. delete the chunks that are gone, and 4. upsert the ones that changed, each only where the
   stored point is not newer than the version being written;
5. a new generation token, when anything changed.

Writing the document version first keeps a retry safe: the batch is replayed at a version equal
to the stored one, which still applies, and writes what a crash left out.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

from ragstream.vectorstores.base import ChunkUpsert, DocumentDelete, Operation
from ragstream.vectorstores.qdrant.mapping import (COLLECTION_POINT_ID, IS_CHUNK, AtMost, Below,
                                                   Delete, HasIds, Match, Plan, SetPayload, Upsert,
                                                   chunk_payload, chunk_point, document_point,
                                                   point_id, same_chunk)


def plan(operations: Sequence[Operation], versions: Mapping[str, int],
         stored: Mapping[str, Mapping[str, Any]],
         members: Mapping[str, set[str]]) -> Plan:
    """``versions``: each document's applied version (absent: none yet); ``stored``: the compared
    payload of every stored chunk the batch names or deletes; ``members``: the stored chunk ids
    of every document the batch deletes whole."""
    applied = dict(versions)
    state: dict[str, Mapping[str, Any] | None] = dict(stored)
    members = {doc: set(ids) for doc, ids in members.items()}
    written: dict[str, ChunkUpsert] = {}
    deleted_by: dict[str, str] = {}  # chunk id -> the document whose delete removed it
    counts = []
    for op in operations:
        changed = 0
        if op.doc_version >= applied.get(op.doc_id, -1):
            if isinstance(op, ChunkUpsert):
                old = state.get(op.chunk_id)
                if old is None or not same_chunk(old, op):
                    state[op.chunk_id] = chunk_payload(op, op.doc_version)
                    written[op.chunk_id] = op
                    if op.doc_id in members:
                        members[op.doc_id].add(op.chunk_id)
                    changed = 1
            else:
                assert isinstance(op, DocumentDelete)
                ids = list(members[op.doc_id]) if op.all_chunks else list(op.chunk_ids)
                for chunk_id in ids:
                    if state.get(chunk_id) is not None:
                        state[chunk_id] = None
                        written.pop(chunk_id, None)
                        deleted_by[chunk_id] = op.doc_id
                        changed += 1
                    members.get(op.doc_id, set()).discard(chunk_id)
            applied[op.doc_id] = max(applied.get(op.doc_id, -1), op.doc_version)
        counts.append(changed)
    gone = [(chunk_id, applied[deleted_by[chunk_id]]) for chunk_id in stored
            if state.get(chunk_id) is None]
    return _writes(counts, versions, applied, gone, state, written)


def _writes(counts: list[int], before: Mapping[str, int], applied: Mapping[str, int],
            gone: list[tuple[str, int]], state: Mapping[str, Any],
            written: Mapping[str, ChunkUpsert]) -> Plan:
    out = Plan(counts)
    raised = {doc: v for doc, v in applied.items() if v > before.get(doc, -1)}
    for version, docs in _by_version(raised.items()).items():
        out.steps.append(Upsert(tuple(document_point(d, version) for d in docs),
                                (AtMost("doc_version", version),)))
    for doc, version in raised.items():
        if doc in before:  # a document new to the store has no chunks to carry forward
            out.steps.append(SetPayload({"doc_version": version}, (
                *IS_CHUNK, Match("doc_id", doc), Below("doc_version", version))))
    for version, chunk_ids in _by_version(gone).items():
        out.steps.append(Delete((HasIds(tuple(point_id(c) for c in chunk_ids)),
                                 AtMost("doc_version", version))))
    fresh = [((op, state[c]), applied[op.doc_id]) for c, op in written.items()
             if state.get(c) is not None]
    for version, ops in _by_version(fresh).items():
        out.steps.append(Upsert(tuple(chunk_point(op, version, payload) for op, payload in ops),
                                (AtMost("doc_version", version),)))
    if out.changed:
        out.steps.append(SetPayload({"generation": uuid.uuid4().hex},
                                    (HasIds((COLLECTION_POINT_ID,)),)))
    return out


def _by_version(pairs) -> dict[int, list]:
    grouped: dict[int, list] = defaultdict(list)
    for item, version in pairs:
        grouped[version].append(item)
    return grouped
