"""The audit queue, kept in the repository (`queue/queue.yaml`) so that the site can show it.

Each item is a model pinned to a commit, in one of these states:

    pending -> running -> done | failed | skipped

`failed` and `skipped` carry a reason `code` (a `Failure`, from `auditor.errors`) and a `message`.
Items that failed for a passing reason (`download_error`, `crashed`, `killed`) go back to pending until they
have been tried `run.max_attempts` times; those the runner's own disk stopped (`no_space`, `not_writable`)
go back to pending without using up an attempt. Done items leave the queue: their record is in the index.

Requests go before discovered models; discovered ones are ordered by the configured priority. The file is
written atomically after every change, so a run killed at any point leaves a consistent queue, and an item
found `running` by the next run (the run that owned it died) is put back to pending.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Annotated, Literal

import msgspec
from msgspec import Meta

from .. import clock, yamlio
from ..errors import AuditorError, Failure
from ..fileio import atomic_write
from ..models import Count, DataError, Model, ModelId, Sha40, Sha256, Text, Time, from_data, to_data

State = Literal["pending", "running", "done", "failed", "skipped"]
MAX_QUEUE_BYTES = 64 * 1024 * 1024
HEADER = (
    "# Written by superweight's scheduler: do not edit by hand. Models waiting for an audit, and those\n"
    "# that could not be audited, with the reason. To ask for an audit, add a file under requests/.\n"
)
MAX_MESSAGE = 4000
RequestFile = Annotated[str, Meta(pattern="^requests/[^/]+$")]


def now() -> str:
    return clock.stamp()


class QueueError(AuditorError):
    code = Failure.QUEUE


class Item(Model):
    model: ModelId
    revision: Sha40 | None
    """The commit sha; None only for a request whose model could not be found."""
    origin: Literal["request", "discovered"]
    state: State
    added: Time
    updated: Time
    attempts: Count = 0
    code: Failure | None = None
    message: Text(MAX_MESSAGE) | None = None
    requested_by: Text(MAX_MESSAGE) | None = None
    request_reason: Text(MAX_MESSAGE) | None = None
    request_files: list[RequestFile] = msgspec.field(default_factory=list)
    """The request files that asked for it (gone from requests/ once taken), for the status comments."""
    created_at: Time | None = None
    downloads: Count = 0
    likes: Count = 0
    base_model: bool = True
    weights_sha256: dict[str, Sha256] | None = None
    weight_bytes: Count | None = None
    """The weight files' size as the Hub lists it: a download that would not fit is put off (`no_space`)."""
    run: Text(MAX_MESSAGE) | None = None

    def __post_init__(self) -> None:
        if self.message is not None and len(self.message) > MAX_MESSAGE:  # an exception can say a lot
            msgspec.structs.force_setattr(self, "message", self.message[: MAX_MESSAGE - 1] + "…")

    @property
    def key(self) -> tuple[str, str | None]:
        return (self.model.lower(), self.revision)


@dataclass
class Queue:
    items: list[Item] = field(default_factory=list)

    def find(self, model: str, revision: str | None) -> Item | None:
        return next((i for i in self.items if i.key == (model.lower(), revision)), None)

    def add(self, item: Item) -> bool:
        """Add unless the same model and commit is already queued."""
        if self.find(item.model, item.revision):
            return False
        self.items.append(item)
        return True

    def set(
        self, item: Item, state: State, *, code: Failure | None = None, message: str | None = None, **changes
    ) -> Item:
        """Move an item to `state`; done items leave the queue."""
        new = msgspec.structs.replace(item, state=state, code=code, message=message, updated=now(), **changes)
        self.items = [i for i in self.items if i.key != item.key]
        if state != "done":
            self.items.append(new)
        return new

    def prune(self, keep_skipped: int) -> None:
        """Keep every request and every pending, running or failed item, but only the newest `keep_skipped`
        skipped discovered models: the cursor never examines those again, so the rest only fill the file."""
        skipped = sorted(
            (i for i in self.items if i.state == "skipped" and i.origin == "discovered"),
            key=lambda i: i.updated,
            reverse=True,
        )
        dropped = {i.key for i in skipped[keep_skipped:]}
        self.items = [i for i in self.items if i.key not in dropped]

    def pending(self, priority: list[str]) -> list[Item]:
        """Pending items, best first: requests, then discovered models by `priority`, then oldest added."""

        def rank(i: Item) -> tuple:
            created = datetime.fromisoformat(i.created_at.replace("Z", "+00:00")).timestamp() if i.created_at else 0
            keys = {"base_models": not i.base_model, "downloads": -i.downloads, "likes": -i.likes, "newest": -created}
            return (i.origin != "request", *(keys[p] for p in priority), i.added)

        return sorted((i for i in self.items if i.state == "pending"), key=rank)


class QueueFile(Model, omit_defaults=False):
    """queue/queue.yaml."""

    schema_version: Literal[1]
    items: list[Item]


def load_queue(path: Path) -> Queue:
    if not path.exists():
        return Queue()
    try:
        data = yamlio.load(path.read_text(encoding="utf-8"), str(path), max_bytes=MAX_QUEUE_BYTES)
        queue = Queue(from_data(data, QueueFile).items)
    except (yamlio.YamlError, DataError, OSError, UnicodeDecodeError) as e:
        raise QueueError(e if isinstance(e, yamlio.YamlError) else f"{path}: {e}") from e
    keys = [i.key for i in queue.items]
    if len(set(keys)) != len(keys):
        twice = next(k for k in keys if keys.count(k) > 1)
        raise QueueError(f"{path}: {twice[0]} at {twice[1]} is listed twice")
    return queue


def save_queue(path: Path, queue: Queue) -> None:
    items = sorted(queue.items, key=lambda i: (i.state, i.added, i.model.lower()))
    atomic_write(path, HEADER + yamlio.dump(to_data(QueueFile(1, items))))
