"""What each page shows, worked out from the index: plain dataclasses for the templates.

Pure functions of the records; no I/O. The templates only lay these out (and escape them).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

from ..index import MeasuredRecord, ModelEntry, Record, SameWeightsRecord
from ..records import WEIGHT_VERDICT_LABELS, Ablation, Quantization, QuantRow, SuperWeight
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
    quantized: QuantHeadline | None = None
    """4-bit round-to-nearest at 256-block (or the nearest block measured), from the newest measured record
    with quantization figures."""


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
        quantized=headline(quantized_record(entry, lookup)),
    )


def resolve(record: Record | None, lookup) -> Record | None:
    """A same-weights record stands for the audit it points at (when that is in the index)."""
    if isinstance(record, SameWeightsRecord):
        target = lookup(record.same_weights_as.model, record.same_weights_as.revision)
        return next((r for r in reversed(target) if isinstance(r, MeasuredRecord)), record)
    return record


# -- quantization ------------------------------------------------------------------------------------

HEADLINE_BITS, HEADLINE_BLOCK = 4, 256
"""The scheme the home table quotes: 4-bit round-to-nearest at 256-input blocks (the nearest block measured
when 256 is not)."""


def times(ratio: float | None) -> str:
    """A perplexity ratio as the quantization figures show it: `×1.05` (two decimals, since they sit near 1),
    `diverged` for inf, `–` for none."""
    if ratio is None:
        return "–"
    if ratio == math.inf:
        return "diverged"
    return f"×{ratio:,.2f}" if ratio < 100 else f"×{ratio:,.1f}" if ratio < 1000 else f"×{ratio:,.0f}"


@dataclass(frozen=True)
class QuantFigure:
    """One perplexity of a quantized model and its ratio to the original."""

    perplexity: float | None
    """inf: diverged (the loss was not finite); None: not measured."""
    ratio: float | None

    @property
    def text(self) -> str:
        return times(self.ratio)


def quant_figure(q: Quantization, r: QuantRow, name: str) -> QuantFigure:
    """`rtn`, `rtn_sw` or `rtn_sw_clip` of a row. A stored None is a loss that was not finite, except where the
    figure was not measured: `rtn_sw*` without super weights held out, `rtn_sw_clip` without clipping tried.
    (Where clipping helped at no threshold, `clip_z` is None and `rtn_sw_clip` is `rtn_sw`.)"""
    value = getattr(r, name)
    if value is None:
        measured = name == "rtn" or (bool(q.held_out) and (name == "rtn_sw" or bool(q.settings.clip_z)))
        value = math.inf if measured else None
    return QuantFigure(value, None if value is None else value / q.perplexity_original)


@dataclass(frozen=True)
class QuantRowView:
    label: str
    """`4-bit, 256-block` or `8-bit, per-channel`."""
    bits: int
    block: int | None
    rtn: QuantFigure
    kept: QuantFigure
    """The super weights held out of the quantization, then restored."""
    clipped: QuantFigure
    """The same, with the other outliers clipped at `clip_z`."""
    clip_z: float | None


@dataclass(frozen=True)
class QuantHeadline:
    """What the home table quotes: 4-bit RTN at 256-block, then with the super weights kept."""

    label: str
    block: int | None
    rtn: QuantFigure
    kept: QuantFigure

    @property
    def text(self) -> str:
        """`×1.80 → ×1.05`, or only `×1.80` where no super weight was held out."""
        return self.rtn.text + (f" → {self.kept.text}" if self.kept.ratio is not None else "")

    @property
    def helps(self) -> bool:
        """Whether keeping the super weights lowers perplexity measurably (by more than 1%) at this scheme."""
        rtn, kept = self.rtn.ratio, self.kept.ratio
        return rtn is not None and kept is not None and kept < math.inf and kept * 1.01 < rtn

    @property
    def block_label(self) -> str:
        return "per-channel" if self.block is None else f"{self.block}-block"

    @property
    def fallback(self) -> bool:
        """Whether the block is not the one the column names (256 was not measured)."""
        return self.block != HEADLINE_BLOCK


def sorted_rows(q: Quantization) -> list[QuantRow]:
    """Fewest bits first; within a width, blocks smallest first, per-channel last."""
    return sorted(q.rows, key=lambda r: (r.bits, r.block is None, r.block or 0))


def quant_row_view(q: Quantization, r: QuantRow) -> QuantRowView:
    return QuantRowView(
        r.scheme.label,
        r.bits,
        r.block,
        quant_figure(q, r, "rtn"),
        quant_figure(q, r, "rtn_sw"),
        quant_figure(q, r, "rtn_sw_clip"),
        r.clip_z,
    )


def headline(record: MeasuredRecord | None) -> QuantHeadline | None:
    """4-bit RTN at 256-block, else at the nearest 4-bit block measured (per-channel last), or None."""
    q = record.quantization if record is not None else None
    if q is None:
        return None
    rows = [r for r in q.rows if r.bits == HEADLINE_BITS]
    if not rows:
        return None

    def distance(r: QuantRow) -> tuple[float, int]:
        if r.block is None:
            return (math.inf, 0)
        return (abs(math.log2(r.block / HEADLINE_BLOCK)), r.block)

    best = quant_row_view(q, min(rows, key=distance))
    return QuantHeadline(best.label, best.block, best.rtn, best.kept)


def quantized_record(entry: ModelEntry, lookup) -> MeasuredRecord | None:
    """The newest measured record with quantization figures (a same-weights record standing for its audit)."""
    for record in reversed(entry.records):
        shown = resolve(record, lookup)
        if isinstance(shown, MeasuredRecord) and shown.quantization is not None:
            return shown
    return None


@dataclass(frozen=True)
class QuantView:
    """The model page's Quantization section."""

    record: MeasuredRecord
    quantization: Quantization
    rows: list[QuantRowView]
    headline: QuantHeadline | None
    kept: bool
    """Whether super weights were held out (`rtn_sw` measured)."""
    clipped: bool
    """Whether clipping was tried too (`rtn_sw_clip`)."""
    current: bool
    """Whether the figures come from the record the page is about (else from an older audit)."""


def quant_view(entry: ModelEntry) -> QuantView | None:
    """The entry's own newest measured record with quantization figures, laid out for the model page."""
    record = next(
        (r for r in reversed(entry.records) if isinstance(r, MeasuredRecord) and r.quantization is not None), None
    )
    if record is None or record.quantization is None:
        return None
    q = record.quantization
    kept = bool(q.held_out)
    return QuantView(
        record,
        q,
        [quant_row_view(q, r) for r in sorted_rows(q)],
        headline(record),
        kept,
        kept and bool(q.settings.clip_z),
        record is entry.latest(),
    )


def quant_series(view: QuantView) -> tuple[int, list[str], list[tuple[str, str, list[float | None]]]]:
    """What the quantization chart draws: (bits, x labels, [(name, kind, ratios)]), for the blocks of one
    width (4-bit, else the width measured at the most blocks); ratios inf where diverged, None where not
    measured. No labels when fewer than two blocks were measured."""
    widths = {r.bits for r in view.rows}
    if not widths:
        return 0, [], []
    bits = (
        HEADLINE_BITS
        if HEADLINE_BITS in widths
        else max(widths, key=lambda b: (sum(r.bits == b for r in view.rows), -b))
    )
    rows = [r for r in view.rows if r.bits == bits]
    if len(rows) < 2:
        return bits, [], []
    labels = ["per-channel" if r.block is None else str(r.block) for r in rows]
    series = [("RTN", "rtn", [r.rtn.ratio for r in rows])]
    if view.kept:
        series.append(("RTN + super weights kept", "kept", [r.kept.ratio for r in rows]))
    if view.clipped:
        series.append(("RTN + super weights kept + clipping", "clipped", [r.clipped.ratio for r in rows]))
    return bits, labels, series


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
