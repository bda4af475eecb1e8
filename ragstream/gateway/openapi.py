"""The gateway's OpenAPI document, generated from the code and committed beside it.

``python -m ragstream.gateway.openapi`` rewrites it; ``--check`` fails when it is stale.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from schemas.generate import dump_json

SPEC = Path(__file__).with_name("openapi.json")


def generate() -> str:
    from ragstream.gateway.app import create_app
    from ragstream.config import Settings

    return dump_json(create_app(Settings(api_keys="[]")).openapi())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args(argv)
    text = generate()
    if args.check:
        if not SPEC.exists() or SPEC.read_text() != text:
            print(f"{SPEC} is stale: run `python -m ragstream.gateway.openapi`")
            return 1
        return 0
    SPEC.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
