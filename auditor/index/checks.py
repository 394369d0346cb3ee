"""Validation of index files: YAML, the JSON Schema, and the rules a schema cannot express.

Every problem names its file and, where it has one, its record. Checked per file:
- strict YAML (`auditor.yamlio`) and `schema.json`;
- the path is `<model>.yaml`; the header comment is there; the text is the tool's canonical rendering
  (so a hand edit shows up, and rewriting unchanged data gives an empty diff);
- dates parse and are not in the future; records are in date order (the file is append-only);
- coordinates: layer < num_layers, row and col inside the matrix `shape`, the stored `index` addressing the
  same scalar, no weight listed twice;
- ablation: the verdict agrees with the perplexities and thresholds it records, the control and the
  per-weight figures match the super weights;
- no duplicate records.
And across files (`check_index`): one file per model (Hub ids are case-insensitive), and every
`same_weights_as` pointing at a measured record that exists.
"""

from __future__ import annotations

import functools
import json
import math
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from importlib import resources
from typing import Any

from .. import yamlio
from ..errors import AuditorError
from ..verdict import judge
from .entries import (
    HEADER,
    MeasuredRecord,
    ModelEntry,
    Record,
    ReportedRecord,
    SameWeightsRecord,
    render_entry,
)
from .entries import entry_from_dict as _entry_from_dict


@dataclass(frozen=True)
class Problem:
    path: str
    message: str
    record: int | None = None

    def __str__(self) -> str:
        where = self.path if self.record is None else f"{self.path}: records[{self.record}]"
        return f"{where}: {self.message}"


class IndexValidationError(AuditorError):
    """An index file (or the index as a whole) breaks the schema or its rules."""

    code = "invalid_index"

    def __init__(self, problems: list[Problem]):
        self.problems = problems
        more = f" (and {len(problems) - 1} more problem(s))" if len(problems) > 1 else ""
        super().__init__(f"{problems[0]}{more}")


# The schema's patterns, in words (keyed by the pattern strings of schema.json's $defs).
DATE_PATTERN = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}(T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?Z)?$"
PATTERNS = {
    "^[0-9a-f]{40}$": "a 40-character commit sha",
    "^[0-9a-f]{64}$": "a 64-character sha256",
    DATE_PATTERN: "a date (YYYY-MM-DD) or a UTC time (YYYY-MM-DDTHH:MM:SSZ)",
    "^[A-Za-z0-9][A-Za-z0-9._-]{0,95}/[A-Za-z0-9][A-Za-z0-9._-]{0,95}$": "a Hub model id (org/name)",
}


@functools.cache
def validator():
    import jsonschema_rs

    schema = json.loads(resources.files(__package__).joinpath("schema.json").read_text(encoding="utf-8"))
    return jsonschema_rs.validator_for(schema)


def schema_problems(data: Any, path: str) -> list[Problem]:
    problems = []
    for error in sorted(validator().iter_errors(data), key=lambda e: list(map(str, e.instance_path))):
        location = list(error.instance_path)
        record = location[1] if len(location) > 1 and location[0] == "records" else None
        inside = location[2:] if record is not None else location
        field = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in inside)
        message = error.message
        if type(error.kind).__name__ == "Type" and "string" in message and not isinstance(error.instance, str):
            message += " (quote it, or YAML reads it as a number)"
        if type(error.kind).__name__ == "Pattern":
            message = f"{error.instance!r} is not {PATTERNS.get(error.kind.pattern, 'in the expected form')}"
        where = field.lstrip(".") or ("record" if record is not None else "file")
        problems.append(Problem(path, f"{where}: {message}", record))
    return problems


def parse_date(text: str) -> datetime:
    if "T" in text:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    return datetime.combine(date.fromisoformat(text), datetime.min.time(), timezone.utc)


def identity(record: Record) -> tuple:
    """What makes two records the same audit (the writer skips an exact repeat)."""
    if isinstance(record, MeasuredRecord):
        a = record.ablation
        settings = json.dumps(vars(record.detection.settings), sort_keys=True)
        return (
            "measured",
            record.revision,
            record.tool_version,
            record.dtype,
            settings,
            a.eval_sha256,
            a.tokens,
            a.seq_len,
            a.min_damage,
            a.min_margin,
        )
    if isinstance(record, SameWeightsRecord):
        return (
            "same_weights",
            record.revision,
            record.same_weights_as.model,
            record.same_weights_as.revision,
        )
    return ("reported", record.citation, record.revision)


def record_problems(record: Record, num_layers: int | None) -> list[str]:
    out = []
    try:
        when = parse_date(record.date)
        if when > datetime.now(timezone.utc) + timedelta(days=1):
            out.append(f"date {record.date} is in the future")
    except ValueError:
        out.append(f"date {record.date!r} is not a valid date")
    weights = getattr(record, "super_weights", [])
    seen = set()
    for i, w in enumerate(weights):
        at = f"super_weights[{i}]"
        if num_layers is not None and w.layer >= num_layers:
            out.append(f"{at}: layer {w.layer} is not below num_layers {num_layers}")
        rows, cols = w.shape
        if w.row >= rows or w.col >= cols:
            out.append(f"{at}: [{w.row}, {w.col}] is outside the {rows} x {cols} matrix")
        if w.index is not None:
            expected = {(w.row, w.col), (w.col, w.row)}
            if tuple(w.index[-2:]) not in expected or (len(w.index) == 3) != (w.expert is not None):
                out.append(f"{at}: index {list(w.index)} does not address [{w.row}, {w.col}]")
            elif w.expert is not None and w.index[0] != w.expert:
                out.append(f"{at}: index {list(w.index)} does not address expert {w.expert}")
        if w.ref() in seen:
            out.append(f"{at}: layer {w.layer} [{w.row}, {w.col}] is listed twice")
        seen.add(w.ref())
    if isinstance(record, MeasuredRecord):
        out += measured_problems(record, seen)
    return out


def measured_problems(record: MeasuredRecord, refs: set) -> list[str]:
    out = []
    a = record.ablation

    def value(name: str, figure: float | None) -> float | None:
        """A figure as the verdict saw it: inf where the record says the loss diverged."""
        return math.inf if figure is None and name in a.diverged else figure

    figures = [a.perplexity_original, a.perplexity_ablated, a.perplexity_control, *(w.perplexity for w in a.per_weight)]
    ablated, control = value("ablated", a.perplexity_ablated), value("control", a.perplexity_control)
    if any(f is not None and not math.isfinite(f) for f in figures):
        out.append("ablation: perplexities must be finite (a diverged one is null and named in diverged)")
    elif not refs:
        if a.verdict != "none_found" or a.perplexity_ablated is not None or a.perplexity_control is not None:
            out.append("ablation: with no super weights the verdict is none_found and nothing is zeroed")
    elif ablated is None or control is None:
        out.append("ablation: perplexity_ablated and perplexity_control are required with super weights")
    else:
        verdict = judge(a.perplexity_original, ablated, control, min_damage=a.min_damage, min_margin=a.min_margin)
        if verdict != a.verdict:
            out.append(f"ablation: verdict {a.verdict} disagrees with its figures and thresholds ({verdict})")
    control = set(a.control_weights)
    if control & refs or len(control) != len(a.control_weights) or len(control) != len(refs):
        out.append("ablation: control_weights must be as many distinct weights as the super weights, none of them")
    per = {(w.layer, w.row, w.col, w.expert) for w in a.per_weight}
    expected = {(r.layer, r.row, r.col, r.expert) for r in refs} if len(refs) > 1 else set()
    if per != expected or len(per) != len(a.per_weight):
        out.append("ablation: per_weight lists each super weight once when there are several, else nothing")
    columns = record.profile
    if any(p.layer >= record.num_layers for p in columns):
        out.append("profile: a layer is not below num_layers")
    return out


def entry_problems(entry: ModelEntry, path: str) -> list[Problem]:
    problems = []
    if path != f"{entry.model}.yaml":
        problems.append(Problem(path, f"model {entry.model} belongs in {entry.model}.yaml"))
    keys = set()
    previous = None
    for i, record in enumerate(entry.records):
        num_layers = getattr(record, "num_layers", None)
        problems += [Problem(path, m, i) for m in record_problems(record, num_layers)]
        if isinstance(record, SameWeightsRecord) and record.same_weights_as.model.lower() == entry.model.lower():
            problems.append(Problem(path, "same_weights_as points at the model itself", i))
        if identity(record) in keys:
            problems.append(Problem(path, "duplicates an earlier record", i))
        keys.add(identity(record))
        try:
            when = parse_date(record.date)
            if previous is not None and when < previous:
                problems.append(Problem(path, "is older than the record before it (records are appended)", i))
            previous = when
        except ValueError:
            pass
    return problems


def check_text(text: str, path: str, *, canonical: bool = True) -> tuple[ModelEntry | None, list[Problem]]:
    """Everything that can be checked from one file's text. `path` is relative to the index root."""
    try:
        data = yamlio.load(text, path)
    except yamlio.YamlError as e:
        return None, [Problem(path, str(e).removeprefix(f"{path}: "))]
    problems = schema_problems(data, path)
    if problems:
        return None, problems
    for i, record in enumerate(data["records"]):
        columns = record.get("profile") or {}
        if len({len(v) for v in columns.values()}) > 1:
            problems.append(Problem(path, "profile: its columns have different lengths", i))
    if problems:
        return None, problems
    entry = _entry_from_dict(data)
    problems = entry_problems(entry, path)
    if canonical:
        if not text.startswith(HEADER):
            problems.append(Problem(path, "the header comment is missing: files are written by superweight only"))
        elif text != render_entry(entry):
            problems.append(Problem(path, "not in the canonical format superweight writes (edited by hand?)"))
    return entry, problems


def check_index(entries: dict[str, ModelEntry]) -> list[Problem]:
    """Rules across files. `entries` maps each file's relative path to its entry."""
    problems = []
    by_id: dict[str, str] = {}
    for path, entry in entries.items():
        other = by_id.setdefault(entry.model.lower(), path)
        if other != path:
            problems.append(Problem(path, f"same model as {other} (Hub ids are case-insensitive)"))
    lookup = {e.model.lower(): e for e in entries.values()}
    for path, entry in entries.items():
        for i, record in enumerate(entry.records):
            if not isinstance(record, SameWeightsRecord):
                continue
            target = lookup.get(record.same_weights_as.model.lower())
            ok = target is not None and any(
                isinstance(r, MeasuredRecord) and r.revision == record.same_weights_as.revision for r in target.records
            )
            if not ok:
                ref = record.same_weights_as
                problems.append(Problem(path, f"same_weights_as {ref.model}@{ref.revision} is not in the index", i))
    return problems


__all__ = ["IndexValidationError", "Problem", "ReportedRecord", "check_index", "check_text", "identity"]
