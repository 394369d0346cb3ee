"""What a run did (`RunReport`, in memory), and what it leaves for `superweight publish` (`RunManifest`).

The runner fills a `RunReport`; at the end it writes the Markdown summary (`summary.render`) and the
manifest, `.superweight/runs/<run id>.json`, the only thing `publish` reads of a run. Both sides use the
types below, so a field the runner writes is a field publish knows (an unknown one is an error, not a
silent drop).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import msgspec

from ..errors import AuditorError, Failure
from ..fileio import atomic_write
from ..index import MeasuredRecord, ModelRef
from ..models import Model, from_data
from .queue import Item, Queue

if TYPE_CHECKING:  # discover imports huggingface_hub, which `publish` (the base install) must not need
    from .discover import Discovery


@dataclass
class RunReport:
    run_id: str
    started: str
    finished: str | None = None
    recovered: list[Item] = field(default_factory=list)
    requests: list[tuple[str, str]] = field(default_factory=list)
    """(request file, what became of it)."""
    taken: list[tuple[str, str]] = field(default_factory=list)
    """(request file, git blob sha of the content taken): publishing deletes exactly these."""
    discovery: Discovery | None = None
    audited: list[tuple[Item, MeasuredRecord]] = field(default_factory=list)
    same_weights: list[tuple[str, str, ModelRef]] = field(default_factory=list)
    answered: dict[str, RequestUpdate] = field(default_factory=dict)
    """Request files answered without an audit (identical weights to an audited model)."""
    failed: list[Item] = field(default_factory=list)
    retrying: list[Item] = field(default_factory=list)
    pending: int = 0
    stopped: str | None = None
    """Why no further audit was started (a full or read-only disk)."""


class RequestUpdate(Model):
    """What became of one request file, for the status comment on its pull request."""

    state: Literal["pending", "running", "failed", "skipped", "done", "not_queued", "same_weights"]
    model: str | None = None
    revision: str | None = None
    code: Failure | None = None
    message: str | None = None
    verdict: str | None = None
    super_weights: list[list[int | None]] | None = None
    """[layer, row, col, expert] of each weight found (done only)."""
    perplexity: list[float | None] | None = None
    """Original, zeroed, control (done only)."""


class PublishedRef(Model, omit_defaults=False):
    pull: int | None
    url: str | None
    commit: str | None


class RunManifest(Model, frozen=False):
    run_id: str
    started: str
    finished: str | None
    summary: str
    """The run's Markdown summary: the body of its pull request."""
    audited: int
    failed: int
    requests_taken: dict[str, str] = msgspec.field(default_factory=dict)
    """Request file -> git blob sha of the content this run took: publishing deletes exactly these."""
    request_updates: dict[str, RequestUpdate] = msgspec.field(default_factory=dict)
    published: PublishedRef | None = None
    """Set by `publish` once the run's pull request is open."""


class ManifestError(AuditorError):
    code = Failure.MANIFEST


def manifest_of(report: RunReport, queue: Queue, summary: str) -> RunManifest:
    """The manifest of a finished run: its summary, and what became of each request it touched."""

    def state(item: Item) -> RequestUpdate:
        return RequestUpdate(item.state, item.model, item.revision, item.code, item.message)

    updates: dict[str, RequestUpdate] = {}
    queued = {f: i for i in queue.items for f in i.request_files}
    taken = dict(report.taken)
    for path, outcome in report.requests:
        if path in queued:
            updates[path] = state(queued[path])
        elif path in taken:
            updates[path] = RequestUpdate("not_queued", message=outcome)
    for item in report.failed + report.retrying:
        for file in item.request_files:
            updates[file] = state(item)
    for item, record in report.audited:
        for file in item.request_files:
            a = record.ablation
            updates[file] = RequestUpdate(
                "done",
                item.model,
                item.revision,
                verdict=a.verdict,
                super_weights=[[w.layer, w.row, w.col, w.expert] for w in record.super_weights],
                perplexity=[a.perplexity_original, a.perplexity_ablated, a.perplexity_control],
            )
    updates.update(report.answered)
    return RunManifest(
        report.run_id, report.started, report.finished, summary, len(report.audited), len(report.failed), taken, updates
    )


def write_manifest(path: Path, manifest: RunManifest) -> None:
    atomic_write(path, msgspec.json.encode(manifest).decode())


def read_manifest(path: Path) -> RunManifest:
    """A run's manifest; a damaged one is one clear error that names it."""
    try:
        return from_data(json.loads(path.read_text(encoding="utf-8")), RunManifest)
    except (ValueError, OSError) as e:
        raise ManifestError(f"{path}: not a run manifest this version can read ({e})") from e
