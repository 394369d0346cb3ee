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

import msgspec

from .. import clock
from ..models import to_data
from ..records import SuperWeight
from .entries import SCHEMA_VERSION, MeasuredRecord, ModelEntry, ReportedRecord, SameWeightsRecord, ScreenedRecord
from .store import Index

FORMATS = ("json", "jsonl", "csv")
SUMMARY = ("model", "source", "revision", "date", "verdict")


def scalar_fields(cls: Any, prefix: str = "") -> list[str]:
    """The dotted names of a model's single-valued fields, nested models flattened (`ablation.tokens`);
    lists and mappings are left to the JSON formats. Coordinate tuples (`shape`, `index`) count as one."""
    names = []
    for f in msgspec.inspect.type_info(cls).fields:
        kinds = f.type.types if isinstance(f.type, msgspec.inspect.UnionType) else (f.type,)
        inner = next((k for k in kinds if not isinstance(k, msgspec.inspect.NoneType)), kinds[0])
        if isinstance(inner, msgspec.inspect.StructType):
            names += scalar_fields(inner.cls, f"{prefix}{f.name}.")
        elif not isinstance(inner, (msgspec.inspect.ListType, msgspec.inspect.DictType)):
            names.append(prefix + f.name)
    return names


def csv_columns() -> list[str]:
    """Follow from the models: a summary, each super weight's fields as `weight.*`, every record type's
    own fields in turn (each once), then the dump's version and time."""
    columns = [*SUMMARY, *(f"weight.{name}" for name in scalar_fields(SuperWeight))]
    for cls in (MeasuredRecord, ReportedRecord, SameWeightsRecord, ScreenedRecord):
        columns += [name for name in scalar_fields(cls) if name not in columns]
    return [*columns, "schema_version", "generated_at"]


CSV_COLUMNS = tuple(csv_columns())


def ordered(index: Index) -> list[ModelEntry]:
    """Models sorted by lower-cased id, whatever the order of their files."""
    return [index.entries[key] for key in sorted(index.entries)]


def cell(value: Any) -> Any:
    """A CSV cell: empty for None; coordinates as `4096 11008`; text a spreadsheet would run as a formula,
    defused."""
    if value is None:
        return ""
    if isinstance(value, (list, tuple)):
        return " ".join(map(str, value))
    return "'" + value if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r") else value


def flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out = {}
    for key, value in data.items():
        if isinstance(value, dict):
            out |= flatten(value, f"{prefix}{key}.")
        else:
            out[prefix + key] = value
    return out


def csv_rows(index: Index, generated_at: str) -> Iterator[dict[str, Any]]:
    stamp = {"schema_version": SCHEMA_VERSION, "generated_at": generated_at}
    for entry in ordered(index):
        for record in entry.records:
            base = flatten(to_data(record)) | {"model": entry.model, "verdict": record.verdict} | stamp
            for w in getattr(record, "super_weights", []) or [None]:
                row = base | ({} if w is None else flatten(to_data(w), "weight."))
                yield {c: cell(row.get(c)) for c in CSV_COLUMNS}


def export(index: Index, fmt: str, *, generated_at: str | None = None) -> str:
    """The whole index as text in `fmt` (json, jsonl or csv)."""
    generated_at = generated_at or clock.stamp()
    if fmt == "json":
        head = {"schema_version": SCHEMA_VERSION, "generated_at": generated_at}
        models = ",\n".join(msgspec.json.encode(entry).decode() for entry in ordered(index))
        return f'{json.dumps(head)[:-1]}, "models": [\n{models}\n]}}\n'
    if fmt == "jsonl":
        lines = []
        for entry in ordered(index):
            for record in entry.records:
                line = {"schema_version": SCHEMA_VERSION, "generated_at": generated_at, "model": entry.model}
                lines.append(json.dumps({**line, "record": to_data(record)}, allow_nan=False) + "\n")
        return "".join(lines)
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.DictWriter(out, CSV_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(csv_rows(index, generated_at))
        return out.getvalue()
    raise ValueError(f"unknown format {fmt!r}; one of {', '.join(FORMATS)}")
