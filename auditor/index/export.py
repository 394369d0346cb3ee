"""One full dump of the index, for consumers who want a single file: JSON, JSON Lines or CSV.

Every format carries `schema_version` and `generated_at`. JSON holds the files' own shape under `models`
(compact: one model per line);
JSON Lines has one record per line; CSV has one row per super weight (a record without any gets one row
with empty coordinates), which is what a spreadsheet or a quantizer's allow-list wants. A CSV text cell that
starts with = + - @ (a citation, say) gets a leading ' so that a spreadsheet shows it instead of running it
as a formula.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from typing import Any

from .. import clock
from .entries import SCHEMA_VERSION, MeasuredRecord, ReportedRecord, SameWeightsRecord
from .store import Index

FORMATS = ("json", "jsonl", "csv")
CSV_COLUMNS = (
    "model",
    "source",
    "revision",
    "date",
    "verdict",
    "layer",
    "row",
    "col",
    "expert",
    "value",
    "activation",
    "tensor",
    "index",
    "perplexity_original",
    "perplexity_ablated",
    "perplexity_control",
    "tool_version",
    "architecture",
    "citation",
    "same_weights_as",
    "schema_version",
    "generated_at",
)


def ordered(index: Index) -> list[str]:
    return sorted(index.payloads, key=lambda key: key)


def cell(value: Any) -> Any:
    """A CSV cell: empty for None; text a spreadsheet would run as a formula, defused."""
    if value is None:
        return ""
    return "'" + value if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r") else value


def csv_rows(index: Index, generated_at: str) -> Iterator[dict[str, Any]]:
    for entry in (index.get(key) for key in ordered(index)):
        for record in entry.records:
            base = {
                "model": entry.model,
                "source": record.source,
                "revision": record.revision or "",
                "date": record.date,
                "verdict": record.verdict or "",
                "schema_version": SCHEMA_VERSION,
                "generated_at": generated_at,
            }
            if isinstance(record, MeasuredRecord):
                a = record.ablation
                base |= {
                    "perplexity_original": a.perplexity_original,
                    "perplexity_ablated": a.perplexity_ablated,
                    "perplexity_control": a.perplexity_control,
                    "tool_version": record.tool_version,
                    "architecture": record.architecture,
                }
            elif isinstance(record, ReportedRecord):
                base |= {"citation": record.citation, "architecture": record.architecture}
            elif isinstance(record, SameWeightsRecord):
                ref = record.same_weights_as
                base |= {"same_weights_as": f"{ref.model}@{ref.revision}", "tool_version": record.tool_version}
            weights = getattr(record, "super_weights", []) or [None]
            for w in weights:
                row = dict(base)
                if w is not None:
                    row |= {
                        "layer": w.layer,
                        "row": w.row,
                        "col": w.col,
                        "expert": w.expert,
                        "value": w.value,
                        "activation": w.activation,
                        "tensor": w.tensor,
                        "index": " ".join(map(str, w.index)) if w.index else None,
                    }
                yield {c: cell(row.get(c)) for c in CSV_COLUMNS}


def export(index: Index, fmt: str, *, generated_at: str | None = None) -> str:
    """The whole index as text in `fmt` (json, jsonl or csv)."""
    generated_at = generated_at or clock.stamp()
    if fmt == "json":
        # The cache already holds each file's validated data as JSON: splice it in rather than rebuild it.
        models = ",\n".join(index.payloads[key][1] for key in ordered(index))
        head = json.dumps({"schema_version": SCHEMA_VERSION, "generated_at": generated_at})[:-1]
        return f'{head}, "models": [\n{models}\n]}}\n'
    if fmt == "jsonl":
        lines = []
        for key in ordered(index):
            model, payload = index.payloads[key]
            for record in json.loads(payload)["records"]:
                line = {
                    "schema_version": SCHEMA_VERSION,
                    "generated_at": generated_at,
                    "model": model,
                    "record": record,
                }
                lines.append(json.dumps(line, allow_nan=False) + "\n")
        return "".join(lines)
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.DictWriter(out, CSV_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(csv_rows(index, generated_at))
        return out.getvalue()
    raise ValueError(f"unknown format {fmt!r}; one of {', '.join(FORMATS)}")
