"""Discovery: new open checkpoints on the Hub, newest first, resuming where the last run stopped.

The Hub lists models by creation time, newest first, a page at a time (huggingface_hub follows the Link
headers). A run examines at most `limit` models it has not examined before; the cursor (`queue/cursor.yaml`)
records the creation-time spans already examined, so the next run first takes what appeared since, then
carries on further back from where this one stopped. `since` bounds how far back discovery ever goes.

New commits to models already in the index are found the same way in a second listing, by last
modification, with spans of its own (`modified`; the first run only marks everything before it as seen).
It examines at most `limit` changed models of the index, and lists at most 20 times as many models it has
not seen, so that a busy day on the Hub costs a bounded number of pages.

Each examined model is checked from its metadata (`eligibility`): refused ones are queued as `skipped` with
their reason; a model already audited at that commit by this tool version is left alone; one whose weight
files have the same sha256 (the Hub's LFS oids) as an audited model gets a `same_weights` record in the index
without any download; the rest are queued, pinned to their commit.

A derivative of a model the index has audited (its card's `base_model`) is screened first, by range reads
at the base model's super weights (`auditor.derivatives`), up to `discover.screens` a run: a GGUF repo gets
a `screened` record and is not queued (GGUF files are not audited); a fine-tune gets one too, and is queued
for a full audit only when its values changed (one whose values are inherited is skipped as `inherited`).
A fine-tune of a model not in the index is queued as any other.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import partial
from pathlib import Path
from typing import Literal

import msgspec

from .. import __version__, hub, yamlio
from ..derivatives import Base, check_gguf, gguf_file, gguf_groups, record_of, safetensors_files, screen
from ..errors import AuditorError, Failure, debugging, first_line
from ..fileio import atomic_write
from ..hub import RemoteFile
from ..index import Index, MeasuredRecord, ModelRef, SameWeightsRecord, append_record, load_index, lookup
from ..models import DataError, Model, Time, from_data, to_data
from ..source import SHARD_INDEX, read_config, weights_to_load
from .config import Config
from .eligibility import Candidate, Ineligible, card_dict, check_model
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


class CursorError(AuditorError):
    code = Failure.CURSOR


class Span(Model):
    """Models created in (after, until] have been examined; `after` None means since the beginning."""

    until: Time
    after: Time | None = None


@dataclass
class Spans:
    """Time spans of a newest-first listing already walked."""

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


@dataclass
class Cursor(Spans):
    """Discovery's place: creation-time spans examined (`spans`), and last-modification ones (`modified`)."""

    modified: Spans = field(default_factory=Spans)


def parse(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def stamp(t: datetime) -> str:
    return t.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class CursorFile(Model):
    """queue/cursor.yaml."""

    schema_version: Literal[1]
    examined: list[Span]
    modified: list[Span] = msgspec.field(default_factory=list)


def load_cursor(path: Path) -> Cursor:
    """Raises: CursorError, naming the file and what is wrong (delete the file to start over)."""
    if not path.exists():
        return Cursor()
    try:
        data = from_data(yamlio.load(path.read_text(encoding="utf-8"), str(path)), CursorFile)
    except (yamlio.YamlError, OSError, UnicodeDecodeError) as e:
        raise CursorError(f"{e} (delete {path} to start discovery over)") from e
    except DataError as e:
        raise CursorError(f"{path}: {e} (delete the file to start discovery over)") from e
    return Cursor(data.examined, Spans(data.modified))


def save_cursor(path: Path, cursor: Cursor) -> None:
    atomic_write(path, CURSOR_HEADER + yamlio.dump(to_data(CursorFile(1, cursor.spans, cursor.modified.spans))))


@dataclass
class Discovery:
    examined: int = 0
    """New models examined, and models of the index with a new commit."""
    queued: list[Item] = field(default_factory=list)
    skipped: list[Item] = field(default_factory=list)
    already_audited: list[str] = field(default_factory=list)
    same_weights: list[tuple[str, str, ModelRef]] = field(default_factory=list)
    screened: list[tuple[str, str]] = field(default_factory=list)
    """(model, outcome) of each derivative screened."""


def audited_index(root: Path) -> tuple[set[tuple[str, str]], dict[frozenset, ModelRef]]:
    """(model, revision) pairs audited by this tool version, and audited weight-file hashes -> record."""
    return audited(load_index(root)) if root.is_dir() else (set(), {})


def audited(index: Index) -> tuple[set[tuple[str, str]], dict[frozenset, ModelRef]]:
    done, weights = set(), {}
    for entry in index:
        for r in entry.records:
            if isinstance(r, MeasuredRecord):
                if r.tool_version == __version__:
                    done.add((entry.model.lower(), r.revision))
                if r.weights_sha256:
                    weights.setdefault(frozenset(r.weights_sha256.values()), ModelRef(entry.model, r.revision))
    return done, weights


def weight_hashes(model: str, revision: str, api=None) -> dict[str, str]:
    """sha256 of the weight files an audit would load (the Hub's LFS oids), as `auditor.source` records them."""
    info = hub.model_info(model, revision=revision, files_metadata=True, api=api)
    files = {s.rfilename: s for s in info.siblings or [] if "/" not in s.rfilename}

    def read_index() -> dict:
        return read_config(hub.download(model, SHARD_INDEX, revision=revision))

    return {n: files[n].lfs.sha256 for n in weights_to_load(list(files), read_index, model) if files[n].lfs}


def indexed_record(index_root: Path, model: str, revision: str | None) -> MeasuredRecord | None:
    """This tool version's record of `model` at `revision`, if the index has one (reads that file only)."""
    if not index_root.is_dir():
        return None
    mine = [
        r
        for r in lookup(model, revision, root=index_root)
        if isinstance(r, MeasuredRecord) and r.tool_version == __version__
    ]
    return mine[-1] if mine else None


def known_weight_hashes(model: str, revision: str, api=None) -> dict[str, str]:
    """`weight_hashes`, or {} when the Hub cannot tell: the model is queued anyway, only the identical-weights
    shortcut is lost."""
    try:
        return weight_hashes(model, revision, api)
    except Exception as e:
        log.warning("%s: cannot read its weight hashes (%s); queued without them", model, e)
        return {}


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
    api = hub.client(api)
    limit = config.discover.limit if limit is None else limit
    since_bound = parse(since or config.discover.since) if (since or config.discover.since) else None
    if since_bound and since_bound.tzinfo is None:
        since_bound = since_bound.replace(tzinfo=timezone.utc)
    index = load_index(index_root) if index_root.is_dir() else Index(index_root)
    done, weights = audited(index)
    found = Discovery()
    bases = screenable_bases(index)
    examine = partial(
        _examine,
        done=done,
        weights=weights,
        config=config,
        queue=queue,
        index_root=index_root,
        api=api,
        found=found,
        bases=bases,
    )
    tag = config.discover.pipeline_tag
    listing = hub.list_models(api=api, pipeline_tag=tag, sort="created_at", expand=EXPAND)
    walk(listing, cursor, lambda info: info.created_at, since=since_bound, limit=limit, handle=examine)

    listing = hub.list_models(api=api, pipeline_tag=tag, sort="last_modified", expand=[*EXPAND, "lastModified"])
    if not cursor.modified.spans:  # the first run: changes from the newest one on (the Hub's clock, not ours)
        newest = next((info.last_modified for info in listing if info.last_modified), None)
        if newest is not None:
            cursor.modified.add(None, newest)
        return found
    indexed = {model.lower() for model in index.models()}

    def changed(info) -> bool:
        """A model of the index at a commit not yet audited or queued."""
        key = (info.id.lower(), info.sha)
        if key[0] not in indexed or key in done or queue.find(info.id, info.sha):
            return False
        examine(info)
        return True

    walk(listing, cursor.modified, lambda info: info.last_modified, limit=limit, max_seen=20 * limit, handle=changed)
    return found


def walk(listing, spans: Spans, when, *, limit: int, handle, since: datetime | None = None, max_seen=None) -> None:
    """Go down a newest-first listing through what `spans` does not cover yet, handing each model to
    `handle` (which says whether it examined it) until `limit` were examined or `max_seen` were listed; then
    add the stretch walked to `spans`, so the next run takes what is newer, then carries on below."""
    floor = spans.floor(since)
    newest = stopped_at = None
    examined = seen = 0
    for info in listing:
        t = when(info)
        if t is None:
            continue
        newest = newest or t
        if (since and t < since) or (floor and t <= floor):
            break
        if spans.covers(t):
            continue
        if examined == limit or seen == max_seen:
            stopped_at = t
            break
        seen += 1
        examined += bool(handle(info))
    if newest is not None:
        spans.add(stopped_at if stopped_at is not None else since, newest)


def screenable_bases(index: Index) -> dict[str, Base]:
    """Models of the index whose newest measured record has super weights, by lower-cased id."""
    bases = {entry.model.lower(): Base.of(entry) for entry in index}
    return {key: base for key, base in bases.items() if base is not None and base.weights}


def base_of(info, bases: dict[str, Base]) -> Base | None:
    """The indexed base model a listed model's card names, if any."""
    named = card_dict(info).get("base_model")
    names = named if isinstance(named, list) else [named]
    return next((bases[n.lower()] for n in names if isinstance(n, str) and n.lower() in bases), None)


def screen_derivative(info, base: Base, index_root: Path, found: Discovery, *, gguf: bool) -> str | None:
    """Screen a derivative of `base` and record it; its outcome, or None when it could not be screened (a
    layout the readers do not know, a Hub failure): it is then handled as any other model."""
    try:
        if gguf:
            groups = gguf_groups(s.rfilename for s in info.siblings or [] if s.rfilename.endswith(".gguf"))
            reader = partial(RemoteFile, info.id, revision=info.sha)
            checks = [(g[0], check_gguf(reader(g[0]), base, shards=[reader(n) for n in g[1:]])) for g in groups]
            files = [gguf_file(check, n) for n, check in checks]
        else:
            files = safetensors_files(screen(info.id, base, revision=info.sha))
        record = record_of(info.sha, base, files)
    except AuditorError as e:
        log.warning("%s: not screened against %s (%s)", info.id, base.model, e)
        return None
    except Exception as e:  # a screen is a shortcut: a bug met on one hostile repo must not end the run
        why = f"{type(e).__name__}: {first_line(e)}"
        log.warning("%s: not screened against %s (%s)", info.id, base.model, why, exc_info=debugging())
        return None
    append_record(info.id, record, root=index_root)
    found.screened.append((info.id, record.outcome))
    return record.outcome


def is_gguf_repo(info) -> bool:
    files = [s.rfilename for s in info.siblings or []]
    return any(f.endswith(".gguf") for f in files) and not any(f.endswith(".safetensors") for f in files)


def _examine(
    info, *, done, weights, config: Config, queue: Queue, index_root: Path, api, found: Discovery, bases
) -> bool:
    """Check one listed model and queue it, skip it with its reason, record identical weights, or screen
    it as a derivative of an indexed model (True: it was examined, whatever came of it)."""
    found.examined += 1
    base = base_of(info, bases) if len(found.screened) < config.discover.screens else None
    if base is not None and is_gguf_repo(info) and screen_derivative(info, base, index_root, found, gguf=True):
        return True
    try:
        c = check_model(info, config)
    except Ineligible as e:
        item = Item(info.id, info.sha, "discovered", "skipped", now(), now(), code=e.code, message=str(e))
        if queue.add(item):
            found.skipped.append(item)
        return True
    if (c.model.lower(), c.revision) in done:
        found.already_audited.append(c.model)
        return True
    if queue.find(c.model, c.revision):
        return True
    hashes = known_weight_hashes(c.model, c.revision, api)
    original = weights.get(frozenset(hashes.values()))
    if original is not None and hashes:
        record_same_weights(index_root, c, hashes, original)
        found.same_weights.append((c.model, c.revision, original))
        return True
    if base is not None and screen_derivative(info, base, index_root, found, gguf=False) == "inherited":
        message = f"a screen found {base.model}'s super weights inherited within 1 %: screened, not audited"
        item = Item(c.model, c.revision, "discovered", "skipped", now(), now(), code=Failure.INHERITED, message=message)
        if queue.add(item):
            found.skipped.append(item)
        return True
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
        weight_bytes=c.weight_bytes,
    )
    queue.add(item)
    found.queued.append(item)
    return True
