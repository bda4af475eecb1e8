"""Versioned model checkpoints under the data dir: ``<data_dir>/gcn/<graph>/models/<version>.pt``.

A version names one trained model for good; embeddings record the model version they came from,
so an incremental refresh always runs the exact model of the version it patches.
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

from ragstream.gcn.model import GcnEncoder


@dataclass(frozen=True)
class Checkpoint:
    version: str
    model: GcnEncoder
    meta: dict[str, Any]


class Checkpoints:
    def __init__(self, root: Path):
        self.root = root

    def save(self, model: GcnEncoder, meta: dict[str, Any]) -> str:
        """Store ``model`` under a new version (UTC time + content hash); returns the version."""
        buffer = io.BytesIO()
        config = {"in_dim": model.conv1.in_channels, "hidden_dim": model.conv1.out_channels,
                  "out_dim": model.conv2.out_channels}
        torch.save({"state": model.state_dict(), "config": config, "meta": meta}, buffer)
        digest = hashlib.sha256(buffer.getvalue()).hexdigest()[:8]
        version = f"gcn-{datetime.now(UTC):%Y%m%dT%H%M%S}-{digest}"
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.root / f"{version}.tmp"
        tmp.write_bytes(buffer.getvalue())
        tmp.replace(self.root / f"{version}.pt")
        (self.root / f"{version}.json").write_text(json.dumps({**config, **meta}, indent=2))
        return version

    def load(self, version: str) -> Checkpoint:
        data = torch.load(self.root / f"{version}.pt", weights_only=True)
        model = GcnEncoder(**data["config"])
        model.load_state_dict(data["state"])
        return Checkpoint(version, model.eval(), data["meta"])

    def exists(self, version: str) -> bool:
        return (self.root / f"{version}.pt").exists()
