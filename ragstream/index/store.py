"""The durable side of the hybrid index, in Redis: the current chunks, and a change log.

Keys (``p`` is the deployment's group prefix; the families are named in ragstream.stores.keys):

- ``p:index:chunk:<chunk id>``: a hash with the chunk's document, text, hash, model, vector and
  metadata (canonical JSON);
- ``p:index:doc:<doc id>``: the highest document version applied (older events are ignored);
- ``p:index:doc_chunks:<doc id>``: the document's chunk ids, for a tombstone;
- ``p:index:log``: a stream with one entry per change that took effect, in the order applied;
- ``p:index:log_floor``: log entries below this id were trimmed after a snapshot.

One Lua script applies a batch of changes atomically and appends to the log only what changed
the index, so replaying events appends nothing and leaves the index identical. Every reader
(the CLI, the gateway) holds a replica built from the newest snapshot plus this log's tail.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

# ARGV: prefix, then operations, each "upsert" + 9 fields or "delete" + doc, version, all, n, ids.
# Returns, per operation, how many chunks it changed (0 for a replay or an outdated version).
APPLY_CHANGES = """
local p = ARGV[1]
local log = p .. ':index:log'
local changed = {}
local i = 2
while i <= #ARGV do
  local op = ARGV[i]
  local doc_id, version = ARGV[i + 2], tonumber(ARGV[i + 3])
  local doc_key = p .. ':index:doc:' .. doc_id
  local members = p .. ':index:doc_chunks:' .. doc_id
  local current = tonumber(redis.call('HGET', doc_key, 'version') or '-1')
  local n = 0
  if op == 'upsert' then
    local cid, pos, text, hash, model, vec, meta =
      ARGV[i + 1], ARGV[i + 4], ARGV[i + 5], ARGV[i + 6], ARGV[i + 7], ARGV[i + 8], ARGV[i + 9]
    i = i + 10
    if version >= current then
      local key = p .. ':index:chunk:' .. cid
      local old = redis.call('HMGET', key, 'text_hash', 'model_id', 'vector', 'position',
                             'metadata')
      if old[1] ~= hash or old[2] ~= model or old[3] ~= vec or old[4] ~= pos
         or (old[5] or '{}') ~= meta then
        redis.call('HSET', key, 'doc_id', doc_id, 'doc_version', version, 'position', pos,
                   'text', text, 'text_hash', hash, 'model_id', model, 'vector', vec,
                   'metadata', meta)
        redis.call('SADD', members, cid)
        redis.call('XADD', log, '*', 'op', 'upsert', 'chunk_id', cid, 'doc_id', doc_id,
                   'position', pos, 'text', text, 'vector', vec, 'metadata', meta)
        n = 1
      end
      if version > current then redis.call('HSET', doc_key, 'version', version) end
    end
  else
    local all, count = ARGV[i + 4], tonumber(ARGV[i + 5])
    local ids = {}
    for j = 1, count do ids[j] = ARGV[i + 5 + j] end
    i = i + 6 + count
    if version >= current then
      if all == '1' then ids = redis.call('SMEMBERS', members) end
      for _, cid in ipairs(ids) do
        if redis.call('DEL', p .. ':index:chunk:' .. cid) == 1 then
          redis.call('XADD', log, '*', 'op', 'delete', 'chunk_id', cid)
          n = n + 1
        end
        redis.call('SREM', members, cid)
      end
      if version > current then redis.call('HSET', doc_key, 'version', version) end
    end
  end
  table.insert(changed, n)
end
return changed
"""


@dataclass(frozen=True, slots=True)
class ChunkRecord:
    chunk_id: str
    doc_id: str
    position: int
    text: str
    metadata: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Change:
    """One log entry: an upsert carries the chunk and its vector; a delete carries the id only."""

    chunk_id: str
    record: ChunkRecord | None = None
    vector: np.ndarray | None = None


def upsert_args(chunk_id: str, doc_id: str, doc_version: int, position: int, text: str,
                text_hash: str, model_id: str, vector: np.ndarray, metadata: str = "{}") -> list:
    """``metadata``: canonical JSON (ragstream.vectorstores.base.canonical_metadata)."""
    return ["upsert", chunk_id, doc_id, doc_version, position, text, text_hash, model_id,
            np.asarray(vector, dtype=np.float32).tobytes(), metadata]


def delete_args(doc_id: str, doc_version: int, chunk_ids: list[str], all_chunks: bool) -> list:
    return ["delete", "", doc_id, doc_version, "1" if all_chunks else "0", len(chunk_ids),
            *chunk_ids]


def parse_change(fields: dict[bytes, bytes]) -> Change:
    chunk_id = fields[b"chunk_id"].decode()
    if fields[b"op"] == b"delete":
        return Change(chunk_id)
    return Change(chunk_id, _record(chunk_id, fields),
                  np.frombuffer(fields[b"vector"], dtype=np.float32))


def parse_chunk(chunk_id: str, fields: dict[bytes, bytes]) -> tuple[ChunkRecord, np.ndarray]:
    return _record(chunk_id, fields), np.frombuffer(fields[b"vector"], dtype=np.float32)


def _record(chunk_id: str, fields: dict[bytes, bytes]) -> ChunkRecord:
    # entries written before chunks carried metadata have none
    return ChunkRecord(chunk_id, fields[b"doc_id"].decode(), int(fields[b"position"]),
                       fields[b"text"].decode(), json.loads(fields.get(b"metadata", b"{}")))


def stream_id(raw: bytes | str) -> tuple[int, int]:
    """A stream id as a comparable pair: b'1700000000000-3' -> (1700000000000, 3)."""
    text = raw.decode() if isinstance(raw, bytes) else raw
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)


def format_id(pair: tuple[int, int]) -> str:
    return f"{pair[0]}-{pair[1]}"
