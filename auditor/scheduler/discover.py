"""Discovery: new open checkpoints on the Hub, newest first, resuming where the last run stopped.

The Hub lists models by creation time, newest first, a page at a time (huggingface_hub follows the Link
headers). A run examines at most `limit` models it has not examined before; the cursor (`queue/cursor.yaml`)
records the creation-time spans already examined, so the next run first takes what appeared since, then
carries on further back from where this one stopped. `since` bounds how far back discovery ever goes.

Each examined model is checked from its metadata (`eligibility`): refused ones are queued as `skipped` with
their reason; a model already audited at that commit by this tool version is left alone; one whose weight
files have the same sha256 (the Hub's LFS oids) as an audited model gets a `same_weights` record in the index
without any download; the rest are queued, pinned to their commit.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from .. import __version__, yamlio
from ..fileio import atomic_write
from ..index import MeasuredRecord, ModelRef, SameWeightsRecord, append_record, load_index
from ..records import from_dict, to_dict
from ..source import with_retries
from .config import Config
from .eligibility import Candidate, Ineligible, check_model
from .queue import Item, Queue, now

log = logging.getLogger(__name__)

EXPAND = [
    "createdAt",
    "sha",
    "private",
    "gated",
    "disabled",
    "cardData",
    "config",
    "safetensors",
    "siblings",
    "downloads",
    "likes",
    "pipeline_tag",
    "tags",
]
CURSOR_HEADER = "# Written by superweight's scheduler: the creation times of Hub models already examined.\n"


@dataclass(frozen=True)
class Span:
    """Models created in (after, until] have been examined; `after` None means since the beginning."""

    until: str
    after: str | None = None


@dataclass
class Cursor:
    spans: list[Span] = field(default_factory=list)

    def covers(self, t: datetime) -> bool:
        return any((s.after is None or t > parse(s.after)) and t <= parse(s.until) for s in self.spans)

    def floor(self, since: datetime | None = None) -> datetime | None:
        """Everything created at or before this time (and after `since`, if given) has been examined."""
        return next(
            (parse(s.until) for s in self.spans if s.after is None or (since is not None and parse(s.after) <= since)),
            None,
        )

    def add(self, after: datetime | None, until: datetime) -> None:
        spans = sorted(
            [(parse(s.after) if s.after else None, parse(s.until)) for s in self.spans] + [(after, until)],
            key=lambda s: s[0] or datetime.min.replace(tzinfo=timezone.utc),
        )
        merged: list[list] = []
        for lo, hi in spans:
            if merged and (lo is None or merged[-1][1] >= lo):
                merged[-1][1] = max(merged[-1][1], hi)
            else:
                merged.append([lo, hi])
        self.spans = [Span(until=stamp(hi), after=stamp(lo) if lo else None) for lo, hi in reversed(merged)]


def parse(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def stamp(t: datetime) -> str:
    return t.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def load_cursor(path: Path) -> Cursor:
    if not path.exists():
        return Cursor()
    data = yamlio.load(path.read_text(encoding="utf-8"), str(path))
    return Cursor([from_dict(Span, s) for s in data.get("examined", [])])


def save_cursor(path: Path, cursor: Cursor) -> None:
    data = {"schema_version": 1, "examined": [to_dict(s, omit_none=True) for s in cursor.spans]}
    atomic_write(path, CURSOR_HEADER + yamlio.dump(data))


@dataclass
class Discovery:
    examined: int = 0
    queued: list[Item] = field(default_factory=list)
    skipped: list[Item] = field(default_factory=list)
    already_audited: list[str] = field(default_factory=list)
    same_weights: list[tuple[str, str, ModelRef]] = field(default_factory=list)


def audited_index(root: Path) -> tuple[set[tuple[str, str]], dict[frozenset, ModelRef]]:
    """(model, revision) pairs audited by this tool version, and audited weight-file hashes -> record."""
    done, weights = set(), {}
    if not root.is_dir():
        return done, weights
    for entry in load_index(root):
        for r in entry.records:
            if isinstance(r, MeasuredRecord):
                if r.tool_version == __version__:
                    done.add((entry.model.lower(), r.revision))
                if r.weights_sha256:
                    weights.setdefault(frozenset(r.weights_sha256.values()), ModelRef(entry.model, r.revision))
    return done, weights


def weight_hashes(model: str, revision: str, api) -> dict[str, str]:
    info = with_retries(lambda: api.model_info(model, revision=revision, files_metadata=True), what=model)
    return {
        s.rfilename: s.lfs.sha256
        for s in info.siblings or []
        if "/" not in s.rfilename and s.rfilename.endswith(".safetensors") and s.lfs
    }


def record_same_weights(index_root: Path, c: Candidate, hashes: dict[str, str], original: ModelRef) -> None:
    record = SameWeightsRecord(c.revision, now(), __version__, original, hashes)
    append_record(c.model, record, root=index_root)


def discover(
    config: Config,
    *,
    queue: Queue,
    cursor: Cursor,
    index_root: Path,
    limit: int | None = None,
    since: str | None = None,
    api=None,
) -> Discovery:
    """Examine up to `limit` new models; update `queue`, `cursor` and the index (same-weights records)."""
    from huggingface_hub import HfApi

    api = api or HfApi()
    limit = config.discover.limit if limit is None else limit
    since_bound = parse(since or config.discover.since) if (since or config.discover.since) else None
    if since_bound and since_bound.tzinfo is None:
        since_bound = since_bound.replace(tzinfo=timezone.utc)
    done, weights = audited_index(index_root)
    found = Discovery()
    newest = stopped_at = None
    floor = cursor.floor(since_bound)
    listing = api.list_models(pipeline_tag=config.discover.pipeline_tag, sort="created_at", expand=EXPAND)
    for info in listing:
        t = info.created_at
        newest = newest or t
        if (since_bound and t < since_bound) or (floor and t <= floor):
            break
        if cursor.covers(t):
            continue
        if found.examined == limit:
            stopped_at = t
            break
        found.examined += 1
        try:
            c = check_model(info, config)
        except Ineligible as e:
            item = Item(info.id, info.sha, "discovered", "skipped", now(), now(), code=e.code, message=str(e))
            if queue.add(item):
                found.skipped.append(item)
            continue
        if (c.model.lower(), c.revision) in done:
            found.already_audited.append(c.model)
            continue
        if queue.find(c.model, c.revision):
            continue
        try:
            hashes = weight_hashes(c.model, c.revision, api)
        except Exception as e:  # queue it anyway: only the identical-weights shortcut is lost
            log.warning("%s: cannot read its weight hashes (%s); queued without them", c.model, e)
            hashes = {}
        original = weights.get(frozenset(hashes.values()))
        if original is not None and hashes:
            record_same_weights(index_root, c, hashes, original)
            found.same_weights.append((c.model, c.revision, original))
            continue
        item = Item(
            c.model,
            c.revision,
            "discovered",
            "pending",
            now(),
            now(),
            created_at=c.created_at,
            downloads=c.downloads,
            likes=c.likes,
            base_model=c.base_model,
            weights_sha256=hashes or None,
        )
        queue.add(item)
        found.queued.append(item)
    if newest is not None:
        # Everything from the newest model down to where we stopped has now been examined.
        lower = stopped_at if stopped_at is not None else since_bound
        cursor.add(lower, newest)
    return found
