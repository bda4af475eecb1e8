"""Where the shared public datasets live: $RAGSTREAM_SHARED_DATA, else ../shared/data beside the repo."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def shared_data_dir() -> Path:
    env = os.environ.get("RAGSTREAM_SHARED_DATA")
    path = Path(env) if env else REPO_ROOT.parent / "shared" / "data"
    if not path.is_dir():
        raise FileNotFoundError(
            f"shared datasets not found at {path}; set RAGSTREAM_SHARED_DATA to the data folder")
    return path
