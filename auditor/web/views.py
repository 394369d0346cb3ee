"""What each page shows, worked out from the index: plain dataclasses for the templates.

Pure functions of the records; no I/O. The templates only lay these out (and escape them).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

from ..index import MeasuredRecord, ModelEntry, Record, SameWeightsRecord, ScreenedRecord
from ..index.entries import ScreenedFile, ScreenedWeight
from ..records import WEIGHT_VERDICT_LABELS, Ablation, Quantization, QuantRow, SuperWeight
from ..settings import AuditSettings

VERDICT_LABELS = {
    "confirmed": "confirmed",
    "not_confirmed": "not confirmed",
    "none_found": "none found",
    "reported": "reported",
    "same_weights": "same weights",
    "screened": "screened",
}

OUTCOME_LABELS = {
    "intact": "screen: intact",
    "broken": "screen: broken",
    "inherited": "screen: inherited",
    "changed": "screen: changed",
}
"""A screened derivative's outcome, as its verdict cell shows it: a screen's reading, not an ablation's verdict."""


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


def coordinate(w: SuperWeight | ScreenedWeight) -> str:
    """`L2 [3968, 7003]`, `L1 e3 [7, 33]`: one weight's layer, expert and place in its matrix."""
    return f"L{w.layer}" + (f" e{w.expert}" if w.expert is not None else "") + f" [{w.row}, {w.col}]"


def coordinates(weights: list[SuperWeight], limit: int = 3) -> list[str]:
    """`L2 [3968, 7003]`, `L1 e3 [7, 33]`...: the table cell's items for a record's weights (each kept on
    one line by the template), the first `limit` of them, then how many more."""
    if not weights:
        return ["none"]
    shown = [coordinate(w) for w in weights[:limit]]
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
    """confirmed, not_confirmed, none_found, reported, same_weights or screened."""
    damage: float | None
    """Perplexity ablated over original: inf where zeroing broke the model outright, None if not measured."""
    date: str
    source: str
    quantized: QuantHeadline | None = None
    """4-bit round-to-nearest at 256-block (or the nearest block measured), from the newest measured record
    with quantization figures."""
    outcome: str | None = None
    """A screened derivative's outcome (intact, broken, inherited or changed): what its verdict cell shows."""


def row(entry: ModelEntry, lookup) -> Row:
    """The home table's row: the model's newest measured record, else its newest record."""
    record = entry.latest()
    shown = resolve(record, lookup)
    measured = shown if isinstance(shown, MeasuredRecord) else None
    weights = getattr(shown, "super_weights", []) or []
    if measured:
        verdict = measured.verdict
    elif isinstance(record, (SameWeightsRecord, ScreenedRecord)):
        verdict = record.source
    else:
        verdict = "reported"
    screened = isinstance(shown, ScreenedRecord)
    return Row(
        model=entry.model,
        path=model_path(entry.model),
        architecture=getattr(shown, "architecture", "") or "",
        parameters=measured.num_parameters if measured else None,
        size=size(measured.num_parameters if measured else None),
        coordinates=["–"] if screened else coordinates(weights),
        count=len(weights),
        verdict=verdict,
        damage=damage(measured.ablation) if measured else None,
        date=record.date[:10],
        source="audited" if isinstance(record, MeasuredRecord) else record.source.replace("_", " "),
        quantized=headline(quantized_record(entry, lookup)),
        outcome=shown.outcome if screened else None,
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


def quantized_record(entry: ModelEntry, lookup=None) -> MeasuredRecord | None:
    """The newest measured record with quantization figures (with `lookup`, a same-weights record standing
    for its audit; without, the entry's own records only)."""
    for record in reversed(entry.records):
        shown = resolve(record, lookup) if lookup else record
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
    record = quantized_record(entry)
    if record is None:
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


# -- screened derivatives ----------------------------------------------------------------------------

QUANT_TAG = re.compile(r"(?<![A-Za-z0-9])(I?Q\d+_[A-Z0-9]+(?:_[A-Z0-9]+)?|BF16|F16|F32)(?![A-Za-z0-9])", re.IGNORECASE)
"""A quant type in a GGUF file's name: `model-Q4_K_M.gguf`, `model.IQ2_XS.gguf`, `model-f16.gguf`."""

BROKEN_STATES = ("not_finite", "sign_flipped", "zeroed", "clipped", "changed")
"""The states of a weight that a screen reports as damage, worst first."""


def percent(value: float, signed: bool = False) -> str:
    """`31 %`, `−0.4 %`, `+2.5 %`: one decimal under 10, none above; a real minus sign."""
    text = f"{abs(value):,.1f}" if abs(value) < 10 else f"{abs(value):,.0f}"
    sign = "−" if value < 0 and text.strip("0.,") else "+" if signed and value > 0 and text.strip("0.,") else ""
    return f"{sign}{text} %"


def change(w: ScreenedWeight) -> float | None:
    """The stored value's change from the base's, in % of the base's, signed as the magnitude moves (−69 %:
    31 % of the original left, of the same sign; −200 %: the sign flipped); None where either is not usable."""
    if w.value is None or not w.base or not math.isfinite(w.value):
        return None
    return (w.value - w.base) / w.base * 100


def quant_label(f: ScreenedFile) -> str:
    """What a screened file is called in a list: its quant type from the file name (`Q4_K_M`), else its
    qtype, else the file name."""
    found = QUANT_TAG.search(f.file.rsplit("/", 1)[-1])
    if found:
        return found.group(1).upper()
    return f.qtype or f.file.rsplit("/", 1)[-1]


def byte_size(n: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{n:,} B"


def worst(f: ScreenedFile) -> ScreenedWeight:
    """The weight a one-line summary quotes: the worst damaged, else the one that moved most."""

    def rank(w: ScreenedWeight) -> tuple[int, float]:
        severity = BROKEN_STATES.index(w.state) if w.state in BROKEN_STATES else len(BROKEN_STATES)
        moved = change(w)
        return (severity, -abs(moved) if moved is not None else -math.inf)

    return min(f.weights, key=rank)


def file_summary(f: ScreenedFile) -> str:
    """`intact, −0.4 %`, `clipped to 31 % of the original`, `inherited (within 1 %)`, `changed, +12 %`."""
    w = worst(f)
    moved = change(w)
    if w.state == "inherited":
        text = "inherited (within 1 %)"
    elif w.state == "intact":
        text = "intact" + (f", {percent(moved, signed=True)}" if moved is not None else "")
    elif w.value is None:
        text = "not a finite number"
    elif w.state in ("clipped", "zeroed"):
        text = f"{w.state} to {percent(100 + moved)} of the original" if moved is not None else w.state
    elif w.state == "sign_flipped":
        text = "sign flipped" + (f" ({percent(100 + moved)} of the original)" if moved is not None else "")
    else:
        text = w.state + (f", {percent(moved, signed=True)}" if moved is not None else "")
    damaged = sum(x.state in BROKEN_STATES for x in f.weights)
    if len(f.weights) > 1 and damaged:
        text += f" ({damaged} of {len(f.weights)} super weights)"
    return text


@dataclass(frozen=True)
class ScreenedWeightView:
    weight: ScreenedWeight
    coordinates: str
    """`L2 [3968, 7003]` or `L1 e3 [7, 33]`."""
    change: float | None

    @property
    def change_text(self) -> str:
        return "–" if self.change is None else percent(self.change, signed=True)


@dataclass(frozen=True)
class ScreenedFileView:
    file: ScreenedFile
    label: str
    summary: str
    size: str
    bytes_read: str
    weights: list[ScreenedWeightView]

    @property
    def broken(self) -> bool:
        """A GGUF file with a super weight not intact."""
        return self.file.format == "gguf" and any(w.weight.state != "intact" for w in self.weights)


@dataclass(frozen=True)
class ScreenView:
    """One screened record of a derivative, for its own page, its base's page and the broken-quants page."""

    model: str
    """The derivative."""
    record: ScreenedRecord
    files: list[ScreenedFileView]
    base_listed: bool
    """Whether the base model has a page in the index (to link to)."""

    @property
    def fine_tune(self) -> bool:
        return self.files[0].file.format == "safetensors"


def screen_view(model: str, record: ScreenedRecord, listed: set[str]) -> ScreenView:
    files = [
        ScreenedFileView(
            f,
            quant_label(f) if f.format == "gguf" else f.file.rsplit("/", 1)[-1],
            file_summary(f),
            byte_size(f.size),
            byte_size(f.bytes_read),
            [ScreenedWeightView(w, coordinate(w), change(w)) for w in f.weights],
        )
        for f in record.files
    ]
    return ScreenView(model, record, files, record.base.model in listed)


def screens_of(entry: ModelEntry, listed: set[str]) -> list[ScreenView]:
    """The entry's newest screened record against each base it names, newest first."""
    newest: dict[str, ScreenedRecord] = {}
    for record in entry.records:  # oldest first: a later screen of the same base replaces an earlier one
        if isinstance(record, ScreenedRecord):
            newest[record.base.model] = record
    views = [screen_view(entry.model, r, listed) for r in newest.values()]
    return sorted(views, key=lambda v: v.record.date, reverse=True)


def all_screens(entries: list[ModelEntry]) -> dict[str, list[ScreenView]]:
    """Each model's `screens_of`, by model, in the order of its name (case-insensitive)."""
    listed = {e.model for e in entries}
    return {e.model: screens_of(e, listed) for e in sorted(entries, key=lambda e: e.model.lower())}


def derivatives(screens: dict[str, list[ScreenView]]) -> dict[str, list[ScreenView]]:
    """Base model -> the screens that name it (each derivative's newest), by derivative name (`all_screens`)."""
    out: dict[str, list[ScreenView]] = {}
    for views in screens.values():
        for view in views:
            out.setdefault(view.record.base.model, []).append(view)
    return out


def broken_quants(screens: dict[str, list[ScreenView]]) -> list[tuple[ScreenView, ScreenedFileView]]:
    """Every GGUF file (of each derivative's newest screen, `all_screens`) that does not keep every super
    weight intact, newest screen first."""
    found = [(v, f) for views in screens.values() for v in views for f in v.files]
    return sorted([(v, f) for v, f in found if f.broken], key=lambda vf: vf[0].record.date, reverse=True)  # stable
