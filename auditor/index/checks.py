"""Validation of index files: YAML, the JSON Schema, and the rules a schema cannot express.

Every problem names its file and, where it has one, its record. Checked per file:
- strict YAML (`auditor.yamlio`) and `schema.json`; no control, bidirectional-override or non-characters in
  any string (they corrupt terminals, feeds and pages, or hide what a text says);
- the path is `<model>.yaml`; the header comment is there; the text is the tool's canonical rendering
  (so a hand edit shows up, and rewriting unchanged data gives an empty diff);
- dates parse and are not in the future; records are in date order (the file is append-only);
- coordinates: layer < num_layers, row and col inside the matrix `shape`, the stored `index` addressing the
  same scalar, no weight listed twice;
- ablation: the verdict agrees with the perplexities and thresholds it records, the control zeroes as many
  weights of each matrix as it has super weights, inside it, and the per-weight figures match;
- no duplicate records.
And across files (`check_links`, from each file's `Links`): one file per model (Hub ids are
case-insensitive), and every `same_weights_as` pointing at a measured record that exists and whose weight
files have the same hashes.
"""

from __future__ import annotations

import functools
import json
import math
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from importlib import resources
from typing import Any

from msgspec import structs

from .. import clock, yamlio
from ..errors import AuditorError, Failure
from ..models import PATTERN_WORDS, DataError
from ..verdict import judge
from .entries import (
    HEADER,
    MeasuredRecord,
    ModelEntry,
    Record,
    SameWeightsRecord,
    ScreenedRecord,
    entry_from_dict,
    render_entry,
)
from .migrations import migrate


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

    code = Failure.INVALID_INDEX

    def __init__(self, problems: list[Problem]):
        self.problems = problems
        more = f" (and {len(problems) - 1} more problem(s))" if len(problems) > 1 else ""
        super().__init__(f"{problems[0]}{more}")


@functools.cache
def validator():
    import jsonschema_rs

    schema = json.loads(resources.files(__package__).joinpath("schema.json").read_text(encoding="utf-8"))
    return jsonschema_rs.validator_for(schema)


def schema_problems(data: Any, path: str) -> list[Problem]:
    problems = []
    for error in sorted(validator().iter_errors(data), key=lambda e: list(map(str, e.instance_path))):
        record, where = locate(error.instance_path)
        message = error.message
        if type(error.kind).__name__ == "Type" and "string" in message and error.instance is not None:
            kind = "a boolean" if isinstance(error.instance, bool) else "a number"
            message += f" (quote it, or YAML reads it as {kind})" if not isinstance(error.instance, str) else ""
        if type(error.kind).__name__ == "Pattern":
            message = f"{error.instance!r} is not {PATTERN_WORDS.get(error.kind.pattern, 'in the expected form')}"
        problems.append(Problem(path, f"{where}: {message}", record))
    return problems


def locate(location: Sequence) -> tuple[int | None, str]:
    """(record number or None, field) for a place in a file's data: ("records", 0, "a", 1) -> (0, "a[1]")."""
    record = location[1] if len(location) > 1 and location[0] == "records" else None
    inside = location[2:] if record is not None else location
    field = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in inside).lstrip(".")
    return record, field or ("record" if record is not None else "file")


# C0 and C1 controls but tab and newline; zero-width space; bidi marks, embeddings, overrides and isolates;
# BOM; non-characters.
UNSAFE_CHARACTERS = re.compile(
    "[\x00-\x08\x0b-\x1f\x7f-\x9f\u200b\u200e\u200f\u202a-\u202e\u2066-\u2069\ufeff\ufffe\uffff]"
)


def strings(data: Any, where: tuple = ()) -> Iterator[tuple[tuple, str]]:
    """Every string of plain data, keys included, with where it is."""
    if isinstance(data, dict):
        for key, value in data.items():
            yield (*where, key), key
            yield from strings(value, (*where, key))
    elif isinstance(data, list):
        for i, value in enumerate(data):
            yield from strings(value, (*where, i))
    elif isinstance(data, str):
        yield where, data


def character_problems(data: Any, path: str) -> list[Problem]:
    """A problem for each string holding a character that has no place in index text."""
    problems = []
    for where, text in strings(data):
        if found := UNSAFE_CHARACTERS.search(text):
            record, field = locate(where)
            message = f"{field}: character U+{ord(found.group()):04X} is not allowed in index text"
            problems.append(Problem(path, message, record))
    return problems


def parse_date(text: str) -> datetime:
    if "T" in text:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    return datetime.combine(date.fromisoformat(text), datetime.min.time(), timezone.utc)


def identity(record: Record) -> tuple:
    """What makes two records the same audit (the writer skips an exact repeat)."""
    if isinstance(record, MeasuredRecord):
        a = record.ablation
        settings = record.detection.settings  # frozen: hashable, compared field by field
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
    if isinstance(record, ScreenedRecord):
        return ("screened", record.revision, record.base.model, record.base.revision, record.tool_version)
    if isinstance(record, SameWeightsRecord):
        return (
            "same_weights",
            record.revision,
            record.same_weights_as.model,
            record.same_weights_as.revision,
        )
    return ("reported", record.citation, record.revision)


def record_problems(record: Record, num_layers: int | None, latest: datetime | None = None) -> list[str]:
    """The rules on one record. `latest`: the last acceptable date (a day after now, by default)."""
    out = []
    try:
        if parse_date(record.date) > (latest or clock.now() + timedelta(days=1)):
            out.append(f"date {record.date} is in the future")
    except ValueError:
        out.append(f"date {record.date!r} is not a valid date")
    weights = getattr(record, "super_weights", [])
    seen = set()
    listed = [(f"super_weights[{i}]", w) for i, w in enumerate(weights)]
    listed += [(f"rejected_candidates[{i}]", w) for i, w in enumerate(getattr(record, "rejected_candidates", []))]
    for at, w in listed:
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
            out.append(f"{at}: {w.ref().label} is listed twice")
        seen.add(w.ref())
    if isinstance(record, MeasuredRecord):
        out += measured_problems(record, {w.ref() for w in weights})
    return out


def control_problems(record: MeasuredRecord, together: list) -> list[str]:
    """The control zeroes, in each matrix holding a weight of `together`, as many other weights of it."""
    shapes = {(w.layer, w.expert): w.shape for w in together}
    wanted = {m: sum((w.layer, w.expert) == m for w in together) for m in shapes}
    got = {m: 0 for m in shapes}
    for i, c in enumerate(record.ablation.control_weights):
        matrix = (c.layer, c.expert)
        if matrix not in shapes:
            return [f"ablation: control_weights[{i}] is not in a matrix that holds a weight it stands for"]
        rows, cols = shapes[matrix]
        if c.row >= rows or c.col >= cols:
            return [f"ablation: control_weights[{i}]: [{c.row}, {c.col}] is outside the {rows} x {cols} matrix"]
        got[matrix] += 1
    if got != wanted:
        return ["ablation: control_weights must zero as many weights of each matrix as it stands for"]
    return []


def measured_problems(record: MeasuredRecord, refs: set) -> list[str]:
    """The ablation agrees with itself: each candidate's verdict with its figures, the lists of proven and
    rejected weights with those verdicts, the overall verdict with the overall figures."""
    out = []
    a = record.ablation
    rejected = {w.ref(): w for w in record.rejected_candidates}
    candidates = {w.ref(): w for w in record.super_weights} | rejected

    def clears(zeroed: float | None, control: float | None) -> bool:
        return judge(a.perplexity_original, zeroed, control, min_damage=a.min_damage, min_margin=a.min_margin) == (
            "confirmed"
        )

    figures = [a.perplexity_original, a.perplexity_ablated, a.perplexity_control, a.group_perplexity]
    figures += [a.group_control, *(f for w in a.per_weight for f in (w.perplexity, w.perplexity_control, w.screened))]
    if any(f is not None and not math.isfinite(f) for f in figures):
        return ["ablation: perplexities must be finite (a diverged one is null and named in diverged)"]
    if set(refs) & set(rejected):
        out.append("a weight is both a super weight and a rejected candidate")
    per = {w.ref(): w for w in a.per_weight}
    if per.keys() != candidates.keys() or len(per) != len(a.per_weight):
        return [*out, "ablation: per_weight lists each candidate (super weight or rejected) once"]
    judged = [w for w in a.per_weight if w.verdict is not None]
    if judged and len(judged) != len(a.per_weight):
        out.append("ablation: per_weight gives every candidate a verdict, or none (records before schema 3)")
    if not judged and rejected:
        out.append("rejected_candidates need per-weight verdicts")
    for i, w in enumerate(judged):
        at, name = f"ablation: per_weight[{i}]", w.ref().label
        alone, control = a.seen(name, w.perplexity), a.seen(f"control of {name}", w.perplexity_control)
        if (w.verdict == "rejected") != (w.ref() in rejected):
            listed = "super weights" if w.verdict == "rejected" else "rejected candidates"
            out.append(f"{at}: {name} is {w.verdict} but listed among the {listed}")
        if w.verdict == "super_weight" and not (alone is not None and control is not None and clears(alone, control)):
            out.append(f"{at}: {name} is a super_weight but its figures do not clear the bar")
        if w.verdict == "rejected" and alone is not None and control is not None and clears(alone, control):
            out.append(f"{at}: {name} is rejected but its figures clear the bar")
        if alone is None and (w.screened is None or w.verdict == "super_weight"):
            out.append(f"{at}: {name} has no perplexity (only a candidate the screen left out has none)")
        if w.control is not None:
            shape = candidates[w.ref()].shape
            if (w.control.layer, w.control.expert) != (w.layer, w.expert) or w.control in candidates:
                out.append(f"{at}: its control is not another weight of the same matrix")
            elif w.control.row >= shape[0] or w.control.col >= shape[1]:
                out.append(f"{at}: its control [{w.control.row}, {w.control.col}] is outside the matrix")
    grouped = [w for w in judged if w.verdict == "in_group"]
    group, group_control = a.seen("group", a.group_perplexity), a.seen("group control", a.group_control)
    if grouped and (len(grouped) < 2 or group is None or group_control is None or not clears(group, group_control)):
        out.append("ablation: in_group weights are two or more whose group figures clear the bar")
    ablated, control = a.seen("ablated", a.perplexity_ablated), a.seen("control", a.perplexity_control)
    if not candidates:
        if a.verdict != "none_found" or a.perplexity_ablated is not None or a.perplexity_control is not None:
            out.append("ablation: with no candidates the verdict is none_found and nothing is zeroed")
    elif ablated is None or control is None:
        out.append("ablation: perplexity_ablated and perplexity_control are required with candidates")
    else:
        verdict = judge(a.perplexity_original, ablated, control, min_damage=a.min_damage, min_margin=a.min_margin)
        if verdict != a.verdict:
            out.append(f"ablation: verdict {a.verdict} disagrees with its figures and thresholds ({verdict})")
    together = list(refs) or list(candidates)  # zeroed together: the super weights, else every candidate
    weights = {w.ref(): w for w in record.super_weights} if refs else candidates
    chosen = set(a.control_weights)
    if chosen & candidates.keys() or len(chosen) != len(a.control_weights) or len(chosen) != len(together):
        out.append(
            "ablation: control_weights must be as many distinct weights as those zeroed together, none a candidate"
        )
    elif candidates:
        out += control_problems(record, [weights[r] for r in together])
    if record.profile.layer and max(record.profile.layer) >= record.num_layers:
        out.append("profile: a layer is not below num_layers")
    return out


def check_text(text: str, path: str, *, canonical: bool = True) -> tuple[ModelEntry | None, list[Problem]]:
    """Everything that can be checked from one file's text. `path` is relative to the index root."""
    try:
        data = yamlio.load(text, path)
    except yamlio.YamlError as e:  # "path (line 7): what" -> "line 7: what", under the path
        return None, [Problem(path, re.sub(r"^ \((line \d+)\)", r"\1", str(e).removeprefix(path)).removeprefix(": "))]
    entry, problems = check_data(data, path)
    if entry is not None and canonical:
        if not text.startswith(HEADER):
            problems.append(Problem(path, "the header comment is missing: files are written by superweight only"))
        elif text != render_entry(entry):
            problems.append(Problem(path, "not in the canonical format superweight writes (edited by hand?)"))
    return entry, problems


def check_data(data: Any, path: str) -> tuple[ModelEntry | None, list[Problem]]:
    """Everything that can be checked from one file's parsed data, of any schema version (migrated first):
    the schema, the characters of its strings, then the rules on the typed entry."""
    try:
        data = migrate(data)
    except DataError as e:
        return None, [Problem(path, str(e))]
    problems = schema_problems(data, path) or character_problems(data, path)
    if problems:
        return None, problems
    try:
        entry = entry_from_dict(data)
    except DataError as e:  # the schema and the model disagree: the model decides
        return None, [Problem(path, str(e))]
    return entry, entry_problems(entry, path)


def entry_problems(entry: ModelEntry, path: str, latest: datetime | None = None) -> list[Problem]:
    """The rules on one typed entry that the schema cannot express. `latest`: the last acceptable date (a
    day after now, by default)."""
    problems = []
    if path != f"{entry.model}.yaml":
        problems.append(Problem(path, f"model {entry.model} belongs in {entry.model}.yaml"))
    keys = set()
    previous = None
    latest = latest or clock.now() + timedelta(days=1)
    for i, record in enumerate(entry.records):
        if isinstance(record, MeasuredRecord) and len({len(c) for c in structs.astuple(record.profile)}) > 1:
            problems.append(Problem(path, "profile: its columns have different lengths", i))
        num_layers = getattr(record, "num_layers", None)
        problems += [Problem(path, m, i) for m in record_problems(record, num_layers, latest)]
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


def check_index(entries: dict[str, ModelEntry]) -> list[Problem]:
    """Rules across files. `entries` maps each file's path relative to the index root to its entry: one file
    per model (Hub ids are case-insensitive), and every `same_weights_as` pointing at a measured record that
    exists and whose weight files have the same hashes."""
    problems = []
    first: dict[str, str] = {}  # lower-cased model id -> its first file
    for path, entry in entries.items():
        other = first.setdefault(entry.model.lower(), path)
        if other != path:
            problems.append(Problem(path, f"same model as {other} (Hub ids are case-insensitive)"))
    for path, entry in entries.items():
        for i, r in enumerate(entry.records):
            if not isinstance(r, SameWeightsRecord):
                continue
            model, revision = r.same_weights_as.model, r.same_weights_as.revision
            target = entries[first[model.lower()]] if model.lower() in first else None
            measured = [m for m in (target.records if target else []) if isinstance(m, MeasuredRecord)]
            hashes = {m.revision: sorted((m.weights_sha256 or {}).values()) for m in measured}
            if revision not in hashes:
                problems.append(Problem(path, f"same_weights_as {model}@{revision} is not in the index", i))
            elif sorted(r.weights_sha256.values()) != hashes[revision]:
                problems.append(Problem(path, f"its weight files' sha256 differ from those of {model}@{revision}", i))
    return problems


__all__ = ["IndexValidationError", "Problem", "check_data", "check_index", "check_text", "identity"]
