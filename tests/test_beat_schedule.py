"""Celery beat with RedBeat on a real FalkorDB (Redis) broker: the schedule comes from config,
every scheduled task exists, and two beat processes fire each task exactly once per period."""

from __future__ import annotations

import importlib
import json
import signal
import sys
import time
from collections import defaultdict
from typing import NamedTuple

from ragstream.celery_app import TASK_MODULES, app
from ragstream.config import Settings
from ragstream.schedule import ENTRIES, beat_schedule
from ragstream.stack import ManagedProcess

# A fire's send can lag its stamp by seconds on a loaded machine (CI runs two test processes),
# which shortens the next gap the watcher sees; 3 s periods left too little room for that
PERIOD_S = 6.0
LOCK_TIMEOUT_S = 8.0


def test_every_scheduled_task_is_registered_and_periods_come_from_config(monkeypatch):
    for module in TASK_MODULES:
        importlib.import_module(module)
    assert {task for task, _ in ENTRIES.values()} <= set(app.tasks)
    monkeypatch.setenv("RAGSTREAM_SCHEDULE_GCN_RETRAIN", "30 4 * * *")
    monkeypatch.setenv("RAGSTREAM_SCHEDULE_GCN_INCREMENTAL", "120")
    schedule = beat_schedule(Settings().schedule)
    assert schedule["gcn-incremental-refresh"]["schedule"] == 120.0
    assert str(schedule["gcn-full-retrain"]["schedule"]).startswith("<crontab: 30 4 * * *")


def test_two_beats_fire_each_task_once_per_period(env, falkordb, redis_client, tmp_path):
    env = {**env, "RAGSTREAM_SCHEDULE_MAX_LOOP_INTERVAL_S": "0.5",
           "RAGSTREAM_SCHEDULE_LOCK_TIMEOUT_S": str(LOCK_TIMEOUT_S),
           **{f"RAGSTREAM_SCHEDULE_{field.upper()}": str(PERIOD_S)
              for _, field in ENTRIES.values()}}
    queue = f"{env['RAGSTREAM_GROUP_PREFIX']}.celery"  # no worker consumes it: fires pile up
    beats = [ManagedProcess(f"beat{i}", [sys.executable, "-m", "ragstream", "beat"],
                            tmp_path / f"beat{i}.log", env=env) for i in range(2)]
    polled = time.monotonic()  # no fire before this
    for beat in beats:
        beat.start()
    fires: dict[str, list[Fire]] = defaultdict(list)
    try:
        polled = _watch(redis_client, queue, fires, beats, polled,
                        until=lambda: _rounds(fires) >= 4)
        leaders = {f.origin for times in fires.values() for f in times}
        assert len(leaders) == 1, f"more than one beat fired: {leaders}"
        # the leader dies: the other beat takes over once its lock expires, without a burst
        leader = next(b for b in beats if f"gen{b.pid}@" in next(iter(leaders)))
        leader.signal(signal.SIGKILL)
        killed_at = time.monotonic()
        beats.remove(leader)
        _watch(redis_client, queue, fires, beats, polled,
               until=lambda: all(t > killed_at + LOCK_TIMEOUT_S for t in _lasts(fires)))
    finally:
        for beat in beats:
            beat.stop()

    assert set(fires) == {task for task, _ in ENTRIES.values()}
    for task, times in fires.items():
        assert len(times) >= 5, (task, times)
        # The watcher sees a fire between two of its polls, and a loaded machine can delay a
        # poll by seconds: bound each gap from both sides (earliest and latest possible) and
        # assert only what the bounds prove, so a slow watcher can never fail the test
        pairs = list(zip(times, times[1:]))
        # no fire twice: a second leader or a burst after the takeover sends within one beat
        # loop (0.5 s). Beat stamps a fire's time before it sends it, so on a loaded machine a
        # send that lags its stamp shortens the gap after it (seen under 1.5 s for a 3 s period):
        # half a period tells the two apart, measured on the longest the gap can have been
        assert all(b.by - a.after >= PERIOD_S / 2 for a, b in pairs), (task, times)
        # none skipped while a leader lived: a skipped period makes a gap of two periods at least
        before = [(a, b) for a, b in pairs if b.by < killed_at]
        assert before and all(b.after - a.by < 2 * PERIOD_S for a, b in before), (task, before)
        # the successor fires once the dead leader's lock expires, and on schedule from there
        assert max(b.after - a.by for a, b in pairs) <= PERIOD_S + LOCK_TIMEOUT_S + 2 * PERIOD_S
        assert len({f.origin for f in times}) == 2  # the successor carried on


class Fire(NamedTuple):
    after: float  # the watcher's poll before it saw the fire, and the one that saw it
    by: float
    origin: str


def _watch(client, queue, fires, beats, polled: float, until, timeout: float = 90.0) -> float:
    """Record every message the beats put on the queue: between which polls it appeared (the
    first poll's "after" is ``polled``), and who sent it. Returns the time of the last poll."""
    deadline = time.monotonic() + timeout
    seen = sum(len(v) for v in fires.values())
    while not until():
        assert time.monotonic() < deadline, f"fires so far: {dict(fires)}"
        for beat in beats:
            assert beat.alive(), beat.tail()
        total = client.llen(queue)
        now = time.monotonic()
        if total > seen:
            for raw in reversed(client.lrange(queue, 0, total - seen - 1)):  # LPUSH: newest first
                headers = json.loads(raw)["headers"]
                fires[headers["task"]].append(Fire(polled, now, headers["origin"]))
            seen = total
        polled = now
        time.sleep(0.1)
    return polled


def _rounds(fires) -> int:
    return min((len(v) for v in fires.values()), default=0) if len(fires) == len(ENTRIES) else 0


def _lasts(fires) -> list[float]:
    return [times[-1].after for times in fires.values()]
