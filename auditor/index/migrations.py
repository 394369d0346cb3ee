"""Index files of older schema versions, brought up to date when read: one function per version step.

A file says its `schema_version`. Reading migrates its plain data step by step to `SCHEMA_VERSION` before it
is validated and typed, so the rest of the code knows one shape only; `superweight index migrate` rewrites
the files themselves. A change to the record shape is a change to its model plus one step here (and a test
of that step in tests/test_index.py).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..models import DataError

SCHEMA_VERSION = 5


def v1_to_v2(data: dict[str, Any]) -> dict[str, Any]:
    """v2: `ablation.per_weight` lists the super weight also when there is only one. Zeroing it alone is
    zeroing the set, so its figure is `perplexity_ablated` (and it diverged if that did)."""
    records = []
    for record in data.get("records") or []:
        ablation = record.get("ablation") if isinstance(record, dict) else None
        weights = record.get("super_weights") if isinstance(record, dict) else None
        if (
            record.get("source") == "measured"
            and isinstance(ablation, dict)
            and ablation.get("per_weight") == []
            and isinstance(weights, list)
            and len(weights) == 1
            and isinstance(weights[0], dict)
        ):
            w = weights[0]
            alone = {k: w.get(k) for k in ("layer", "row", "col")}
            alone["perplexity"] = ablation.get("perplexity_ablated")
            if w.get("expert") is not None:
                alone["expert"] = w["expert"]
            diverged = list(ablation.get("diverged") or [])
            if "ablated" in diverged:
                diverged.append(f"layer {w.get('layer')} [{w.get('row')}, {w.get('col')}]")
            record = {**record, "ablation": {**ablation, "per_weight": [alone], "diverged": diverged}}
        records.append(record)
    return {**data, "schema_version": 2, "records": records}


def v2_to_v3(data: dict[str, Any]) -> dict[str, Any]:
    """v3: each candidate has its own verdict (`ablation.per_weight[].verdict`, with its control), and a
    measured record lists the candidates zeroing disproved as `rejected_candidates`. Records before it
    were judged as a set: their weights keep no per-weight verdict (null), none is invented, and all stay
    in `super_weights`. Reported records never had per-weight figures. So the data is unchanged."""
    return {**data, "schema_version": 3}


def v3_to_v4(data: dict[str, Any]) -> dict[str, Any]:
    """v4: a measured record may hold `quantization` (perplexity under round-to-nearest quantization, with
    and without its super weights kept). Older audits did not measure it: none is invented, the data is
    unchanged."""
    return {**data, "schema_version": 4}


def v4_to_v5(data: dict[str, Any]) -> dict[str, Any]:
    """v5: a file may hold `screened` records (a derivative read at its base model's super weights). Files
    before it hold none: the data is unchanged."""
    return {**data, "schema_version": 5}


STEPS: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] = {1: v1_to_v2, 2: v2_to_v3, 3: v3_to_v4, 4: v4_to_v5}
"""version -> the function taking a file's data from that version to the next."""


def version_of(data: Any) -> int:
    """The file's schema version, if it is one this tool can read.

    Raises:
        DataError: missing, not a version number, or newer than this tool.
    """
    version = data.get("schema_version") if isinstance(data, dict) else None
    if version is None:
        raise DataError("file", "schema_version is missing")
    if type(version) is not int or not 1 <= version <= SCHEMA_VERSION:
        newer = " (written by a newer superweight? upgrade it)" if type(version) is int and version > 0 else ""
        raise DataError(
            "schema_version", f"{version!r} is not a version this tool reads (1 to {SCHEMA_VERSION}){newer}"
        )
    return version


def migrate(data: Any) -> dict[str, Any]:
    """An index file's data at the current schema version (a new object; the input is left as it was)."""
    version = version_of(data)
    while version < SCHEMA_VERSION:
        data = STEPS[version](data)
        version += 1
    return data
