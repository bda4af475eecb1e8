"""Gateway pods share one index volume (snapshots from the Celery worker's compaction). Each
reader keeps its own working copy there; cleaning up after killed readers must not delete a live
copy of another pod, whose pids mean nothing in this pod's pid namespace."""

from __future__ import annotations

import os
import time

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


def test_another_hosts_copy_goes_once_its_reader_stops_touching_it(tmp_path):
    reader = IndexReplica.__new__(IndexReplica)
    reader.root = tmp_path
    copies = tmp_path / "replicas"
    live, left = copies / "12-gateway-a-0a1b2c3d", copies / "12-gateway-b-1a2b3c4d"
    for path in (live, left):
        path.mkdir(parents=True)
    old = time.time() - replica.STALE_S - 60
    os.utime(left, (old, old))  # its pod died a while ago: nothing touches it any more
    workdir = reader._new_workdir()
    assert {p.name for p in copies.iterdir()} == {live.name, workdir.name}


def test_an_open_replica_keeps_touching_its_copy(settings, monkeypatch):
    monkeypatch.setattr(replica, "HEARTBEAT_S", 0.05)
    reader = IndexReplica(settings)
    try:
        with reader.lock:
            workdir = reader.refresh().workdir
        old = time.time() - replica.STALE_S - 60
        os.utime(workdir, (old, old))
        deadline = time.monotonic() + 10
        while replica._untouched_for(workdir) > replica.STALE_S:
            assert time.monotonic() < deadline, "the replica stopped touching its copy"
            time.sleep(0.05)
    finally:
        reader.close()
