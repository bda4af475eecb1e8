"""Gateway pods share one index volume (snapshots from the Celery worker's compaction). Each
reader keeps its own working copy there; cleaning up after killed readers must not delete a live
copy of another pod, whose pids mean nothing in this pod's pid namespace."""

from __future__ import annotations

import os

from ragstream.index import replica
from ragstream.index.replica import IndexReplica


def _dead_pid() -> int:
    pid = 999_999
    while replica._pid_alive(pid):
        pid -= 1
    return pid


def test_cleanup_takes_only_this_hosts_dead_copies(tmp_path):
    host, dead = replica._host(), _dead_pid()
    reader = IndexReplica.__new__(IndexReplica)  # only the working-copy bookkeeping is exercised
    reader.root = tmp_path
    copies = tmp_path / "replicas"
    names = {
        "other_pod": f"{dead}-gateway-7d9f-x2x-0a1b2c3d",   # another host: must stay
        "mine_dead": f"{dead}-{host}-1a2b3c4d",            # this host, reader gone: removed
        "old_format": f"{dead}-5e6f7a8b",                   # before host names: removed
        "mine_alive": f"{os.getpid()}-{host}-9c8d7e6f",    # this process: stays
    }
    for name in names.values():
        (copies / name).mkdir(parents=True)
    workdir = reader._new_workdir()
    left = {p.name for p in copies.iterdir()}
    assert left == {names["other_pod"], names["mine_alive"], workdir.name}
    assert workdir.name.startswith(f"{os.getpid()}-{host}-")
