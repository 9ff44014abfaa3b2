"""Sequence-mixing operators shared by model families, each a fast path with its reference oracle
beside it (as state-spaces/mamba keeps `selective_scan_ref` next to its kernel)."""
