"""Test and benchmark tooling: the chaos harness, synthetic graphs, inference request builders.

Not part of the installed package (it needs the dev extra, e.g. hypothesis): ``tests/`` and
``bench/`` import it from the repository root."""
