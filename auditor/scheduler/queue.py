"""The audit queue, kept in the repository (`queue/queue.yaml`) so that the site can show it.

Each item is a model pinned to a commit, in one of these states:

    pending -> running -> done | failed | skipped

`failed` and `skipped` carry a reason `code` (a `Failure`, from `auditor.errors`) and a `message`.
Items that failed for a passing reason (`download_error`, `crashed`, `killed`) go back to pending until they
have been tried `run.max_attempts` times. Done items leave the queue: their record is in the index.

Requests go before discovered models; discovered ones are ordered by the configured priority. The file is
written atomically after every change, so a run killed at any point leaves a consistent queue, and an item
found `running` by the next run (the run that owned it died) is put back to pending.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Literal

from .. import clock, yamlio
from ..errors import AuditorError, Failure
from ..fileio import atomic_write
from ..ids import MODEL_ID
from ..records import from_dict, to_dict

State = Literal["pending", "running", "done", "failed", "skipped"]
MAX_QUEUE_BYTES = 64 * 1024 * 1024
HEADER = (
    "# Written by superweight's scheduler: do not edit by hand. Models waiting for an audit, and those\n"
    "# that could not be audited, with the reason. To ask for an audit, add a file under requests/.\n"
)
TIME = "^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\\.[0-9]+)?(Z|[+-][0-9]{2}:[0-9]{2})$"
MAX_MESSAGE = 4000
TEXT = {"type": ["string", "null"], "maxLength": MAX_MESSAGE}
COUNT = {"type": "integer", "minimum": 0}
QUEUE_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "required": ["schema_version", "items"],
    "properties": {
        "schema_version": {"const": 1},
        "items": {
            "type": "array",
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["model", "revision", "origin", "state", "added", "updated"],
                "properties": {
                    "model": {"type": "string", "pattern": MODEL_ID},
                    "revision": {"type": ["string", "null"], "pattern": "^[0-9a-f]{40}$"},
                    "origin": {"enum": ["request", "discovered"]},
                    "state": {"enum": ["pending", "running", "failed", "skipped"]},
                    "added": {"type": "string", "pattern": TIME},
                    "updated": {"type": "string", "pattern": TIME},
                    "attempts": COUNT,
                    "code": {"enum": [*(f.value for f in Failure), None]},
                    "message": TEXT,
                    "requested_by": TEXT,
                    "request_reason": TEXT,
                    "request_files": {"type": "array", "items": {"type": "string", "pattern": "^requests/[^/]+$"}},
                    "created_at": {"type": ["string", "null"], "pattern": TIME},
                    "downloads": COUNT,
                    "likes": COUNT,
                    "base_model": {"type": "boolean"},
                    "weights_sha256": {
                        "type": ["object", "null"],
                        "additionalProperties": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
                    },
                    "run": TEXT,
                },
            },
        },
    },
}


def now() -> str:
    return clock.stamp()


class QueueError(AuditorError):
    code = Failure.QUEUE


@dataclass(frozen=True)
class Item:
    model: str
    revision: str | None
    """The commit sha; None only for a request whose model could not be found."""
    origin: Literal["request", "discovered"]
    state: State
    added: str
    updated: str
    attempts: int = 0
    code: Failure | None = None
    message: str | None = None
    requested_by: str | None = None
    request_reason: str | None = None
    request_files: list[str] = field(default_factory=list)
    """The request files that asked for it (gone from requests/ once taken), for the status comments."""
    created_at: str | None = None
    downloads: int = 0
    likes: int = 0
    base_model: bool = True
    weights_sha256: dict[str, str] | None = None
    run: str | None = None

    def __post_init__(self) -> None:
        if self.message is not None and len(self.message) > MAX_MESSAGE:  # an exception can say a lot
            object.__setattr__(self, "message", self.message[: MAX_MESSAGE - 1] + "…")

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
        new = replace(item, state=state, code=code, message=message, updated=now(), **changes)
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


def load_queue(path: Path) -> Queue:
    import jsonschema_rs

    if not path.exists():
        return Queue()
    try:
        data = yamlio.load(path.read_text(encoding="utf-8"), str(path), max_bytes=MAX_QUEUE_BYTES)
        errors = list(jsonschema_rs.validator_for(QUEUE_SCHEMA).iter_errors(data))
        if errors:
            where = ".".join(map(str, errors[0].instance_path)) or "file"
            raise QueueError(f"{path}: {where}: {errors[0].message}")
        queue = Queue([from_dict(Item, i) for i in data["items"]])
    except (yamlio.YamlError, ValueError, TypeError, OSError) as e:
        raise QueueError(f"{path}: {e}") from e
    keys = [i.key for i in queue.items]
    if len(set(keys)) != len(keys):
        twice = next(k for k in keys if keys.count(k) > 1)
        raise QueueError(f"{path}: {twice[0]} at {twice[1]} is listed twice")
    return queue


def save_queue(path: Path, queue: Queue) -> None:
    items = sorted(queue.items, key=lambda i: (i.state, i.added, i.model.lower()))
    data = {"schema_version": 1, "items": [to_dict(i, omit_none=True) for i in items]}
    atomic_write(path, HEADER + yamlio.dump(json.loads(json.dumps(data))))
