"""What each page shows, worked out from the index: plain dataclasses for the templates.

Pure functions of the records; no I/O. The templates only lay these out (and escape them).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

from ..index import MeasuredRecord, ModelEntry, Record, SameWeightsRecord
from ..records import WEIGHT_VERDICT_LABELS, Ablation, SuperWeight
from ..settings import AuditSettings

VERDICT_LABELS = {
    "confirmed": "confirmed",
    "not_confirmed": "not confirmed",
    "none_found": "none found",
    "reported": "reported",
    "same_weights": "same weights",
}


def attribute_path(dotted: str) -> str:
    """`model.layers.2.mlp.down_proj` -> `model.layers[2].mlp.down_proj`: Python that reaches the module."""
    return re.sub(r"\.(\d+)(?=\.|$)", r"[\1]", dotted)


def read_snippet(w: SuperWeight) -> str | None:
    """The expression that reads the weight from a loaded transformers model called `model`."""
    if w.tensor and w.index:
        return f"model.{attribute_path(w.tensor)}[{', '.join(map(str, w.index))}]"
    if w.module:
        return f"model.{attribute_path(w.module)}.weight[{w.row}, {w.col}]"
    return None


def coordinates(weights: list[SuperWeight], limit: int = 3) -> list[str]:
    """`L2 [3968, 7003]`, `L1 e3 [7, 33]`...: the table cell's items for a record's weights (each kept on
    one line by the template), the first `limit` of them, then how many more."""
    if not weights:
        return ["none"]
    shown = [
        f"L{w.layer}" + (f" e{w.expert}" if w.expert is not None else "") + f" [{w.row}, {w.col}]"
        for w in weights[:limit]
    ]
    return shown + ([f"+{len(weights) - limit} more"] if len(weights) > limit else [])


def damage(ablation: Ablation) -> float | None:
    return math.inf if "ablated" in ablation.diverged else ablation.damage


def sort_value(number: float | None) -> str:
    """A number as the table script's parseFloat reads it: 0 for none, Infinity for inf."""
    return "0" if number is None else "Infinity" if number == math.inf else repr(number)


def size(parameters: int | None) -> str:
    if not parameters:
        return ""
    for unit, scale in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if parameters >= scale:
            return f"{parameters / scale:.3g}{unit}"
    return str(parameters)


def model_path(model: str) -> str:
    """The site path of a model's page, relative to the base: `models/org/name/`."""
    return f"models/{model}/"


@dataclass(frozen=True)
class Row:
    """One model in the home table."""

    model: str
    path: str
    architecture: str
    parameters: int | None
    size: str
    coordinates: list[str]
    count: int
    verdict: str
    """confirmed, not_confirmed, none_found, reported or same_weights."""
    damage: float | None
    """Perplexity ablated over original: inf where zeroing broke the model outright, None if not measured."""
    date: str
    source: str


def row(entry: ModelEntry, lookup) -> Row:
    """The home table's row: the model's newest measured record, else its newest record."""
    record = entry.latest()
    shown = resolve(record, lookup)
    measured = shown if isinstance(shown, MeasuredRecord) else None
    weights = getattr(shown, "super_weights", []) or []
    verdict = (
        measured.verdict if measured else ("same_weights" if isinstance(record, SameWeightsRecord) else "reported")
    )
    return Row(
        model=entry.model,
        path=model_path(entry.model),
        architecture=getattr(shown, "architecture", "") or "",
        parameters=measured.num_parameters if measured else None,
        size=size(measured.num_parameters if measured else None),
        coordinates=coordinates(weights),
        count=len(weights),
        verdict=verdict,
        damage=damage(measured.ablation) if measured else None,
        date=record.date[:10],
        source="audited" if isinstance(record, MeasuredRecord) else record.source.replace("_", " "),
    )


def resolve(record: Record | None, lookup) -> Record | None:
    """A same-weights record stands for the audit it points at (when that is in the index)."""
    if isinstance(record, SameWeightsRecord):
        target = lookup(record.same_weights_as.model, record.same_weights_as.revision)
        return next((r for r in reversed(target) if isinstance(r, MeasuredRecord)), record)
    return record


@dataclass(frozen=True)
class WeightView:
    weight: SuperWeight
    snippet: str | None
    alone: float | None
    """Perplexity with this weight zeroed alone (records with several weights)."""


@dataclass(frozen=True)
class CandidateView:
    """One candidate's lone ablation, as the model page's table shows it."""

    name: str
    zeroed: float | None
    """Perplexity with it zeroed alone (inf: diverged; None: screened out, see `screened`)."""
    screened: float | None
    """Its damage on the screening slice, over the original there, when it was not measured in full."""
    control: float | None
    verdict: str


@dataclass(frozen=True)
class RecordView:
    record: Record
    kind: str
    weights: list[WeightView]
    hub_commit_url: str | None
    reproduce: str | None
    settings: list[tuple[str, str]] = field(default_factory=list)
    candidates: list[CandidateView] = field(default_factory=list)


def candidate_views(record: MeasuredRecord) -> list[CandidateView]:
    a = record.ablation

    views = []
    for w in a.per_weight:
        label = w.ref().label
        name = label + (f" expert {w.expert}" if w.expert is not None else "")
        screened = w.screened / a.screen_original if w.perplexity is None and w.screened and a.screen_original else None
        views.append(
            CandidateView(
                name,
                a.seen(label, w.perplexity),
                screened,
                a.seen(f"control of {label}", w.perplexity_control),
                WEIGHT_VERDICT_LABELS[w.verdict],
            )
        )
    return views


def record_view(model: str, record: Record) -> RecordView:
    alone = {}
    if isinstance(record, MeasuredRecord):
        alone = {(w.layer, w.row, w.col, w.expert): w.perplexity for w in record.ablation.per_weight}
    weights = [
        WeightView(w, read_snippet(w), alone.get((w.layer, w.row, w.col, w.expert)))
        for w in getattr(record, "super_weights", []) or []
    ]
    commit = f"https://huggingface.co/{model}/commit/{record.revision}" if record.revision else None
    candidates = candidate_views(record) if isinstance(record, MeasuredRecord) else []
    return RecordView(record, record.source, weights, commit, reproduce(model, record), settings_of(record), candidates)


def reproduce(model: str, record: Record) -> str | None:
    """The command that reruns a measured audit with its settings (non-default ones spelled out)."""
    if not isinstance(record, MeasuredRecord):
        return None
    d, a, default = record.detection.settings, record.ablation, AuditSettings()
    args = [f"superweight audit {model} --revision {record.revision}"]
    options = {
        "--prompt": (d.prompt, default.prompt),
        "--min-output-ratio": (d.min_output_ratio, default.min_output_ratio),
        "--min-input-ratio": (d.min_input_ratio, default.min_input_ratio),
        "--min-share": (d.min_share, default.min_share),
        "--max-super-weights": (d.max_super_weights, default.max_super_weights),
        "--module-pattern": (d.module_pattern, default.module_pattern),
        "--seq-len": (a.seq_len, default.seq_len),
        "--min-damage": (a.min_damage, default.min_damage),
        "--min-margin": (a.min_margin, default.min_margin),
        "--dtype": (record.dtype, None),
    }
    for flag, (value, usual) in options.items():
        if value is not None and value != usual:
            args.append(f"{flag} {shell_quote(str(value))}")
    if a.tokens < default.max_tokens:
        args.append(f"--max-tokens {a.tokens}")
    if a.eval_text.startswith("file:"):
        args.append(f"--eval-text {shell_quote(a.eval_text.removeprefix('file:'))}")
    return " ".join(args)


def shell_quote(text: str) -> str:
    return text if re.fullmatch(r"[\w@%+=:,./-]+", text) else "'" + text.replace("'", "'\\''") + "'"


def settings_of(record: Record) -> list[tuple[str, str]]:
    if not isinstance(record, MeasuredRecord):
        return []
    d, a = record.detection.settings, record.ablation
    return [
        ("detection prompt", d.prompt),
        ("spike thresholds", f"output x{d.min_output_ratio:g}, input x{d.min_input_ratio:g}, share {d.min_share:g}"),
        (
            "forward passes",
            f"{record.detection.passes}" + (" (stopped at the limit)" if record.detection.truncated else ""),
        ),
        ("evaluation text", f"{a.eval_text}, {a.tokens:,} tokens in windows of {a.seq_len}"),
        ("eval text sha256", a.eval_sha256),
        ("verdict thresholds", f"damage x{a.min_damage:g}, margin over control x{a.min_margin:g}"),
        ("dtype, device", f"{record.dtype}, {record.device}"),
        (
            "software",
            f"superweight {record.tool_version}, torch {record.software.torch}, "
            f"transformers {record.software.transformers}",
        ),
    ]
