"""What every benchmark shares: its command line, the embedded services it runs on, its table and
its JSON last line. The format is /work/shared/BENCH.md's, restated in docs/benchmarks.md.

A script runs as ``.venv/bin/python bench/NAME.py``, so it puts the repository root on
``sys.path`` itself before importing this module.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from ragstream.config import Settings
from ragstream.stack import FalkorDB, Tansu

UNUSED_DATA = "unused: this benchmark makes its own events"


def parser(doc: str, quick: str, data: str = UNUSED_DATA, **data_options: Any
           ) -> argparse.ArgumentParser:
    """The options every benchmark takes: ``--quick`` (a run under 60 s) and ``--data``."""
    p = argparse.ArgumentParser(description=doc,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help=quick)
    p.add_argument("--data", type=Path, help=data, **data_options)
    return p


def table(columns: Sequence[tuple[str, str]], rows: Iterable[Sequence[Any]],
          sep: str = "") -> None:
    """Print a header and rows. A column is (title, format spec of its cells); the title takes
    the spec's alignment and width. Cells past the last column are notes, printed after it."""
    heads = [re.match(r"[<>^]?\d*", spec).group() for _, spec in columns]
    print(sep.join(f"{title:{head}}" for (title, _), head in zip(columns, heads)))
    for row in rows:
        cells = sep.join(f"{cell:{spec}}" for cell, (_, spec) in zip(row, columns))
        notes = [str(note) for note in row[len(columns):]]
        print("  ".join([cells, *notes]))


def report(bench: str, metric: str, baseline: Any, project: Any, ratio: Any, unit: str,
           **extra: Any) -> None:
    """The JSON last line: the fields every benchmark must give first, then its own."""
    print(json.dumps({"bench": bench, "metric": metric, "baseline": baseline,
                      "project": project, "ratio": ratio, "unit": unit, **extra}))


@contextlib.contextmanager
def workdir(path: Path | None = None, prefix: str = "ragstream-bench-") -> Iterator[Path]:
    """``path`` as it is, or a temporary folder removed at the end."""
    if path is not None:
        yield path
        return
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        yield Path(tmp)


@contextlib.contextmanager
def tansu(path: Path | None = None) -> Iterator[Tansu]:
    """A fresh embedded Tansu (memory storage), stopped at the end."""
    with workdir(path) as folder:
        broker = Tansu(folder)
        broker.start()
        try:
            yield broker
        finally:
            broker.stop()


@contextlib.contextmanager
def falkordb(path: Path | None = None) -> Iterator[FalkorDB]:
    """A fresh embedded FalkorDB, shut down at the end."""
    with workdir(path) as folder:
        server = FalkorDB(folder)
        server.start()
        try:
            yield server
        finally:
            server.stop()


def kafka_settings(broker: Tansu, **overrides: Any) -> Settings:
    """Settings for a benchmark on ``broker``: no idempotent producer (Tansu refuses aiokafka's
    InitProducerId v0), its own group prefix, quiet logs."""
    return Settings(**{"kafka_bootstrap": broker.bootstrap, "kafka_idempotence": False,
                       "group_prefix": "bench", "log_level": "WARNING", **overrides})
