"""`superweight run`: the scheduled job.

One run at a time: a lock file that the operating system releases when the holder dies (even by
`kill -9`), so a crashed run never blocks the next. A run:

1. settles any item a dead run left `running`: done if its record reached the index, else back to pending
   (or failed after `max_attempts`);
2. takes the request files (`requests/*.yaml`): each is checked and pinned to a commit, queued (or queued
   as skipped with its reason), and only then removed; a malformed file stays, and the summary says why;
3. discovers new models on the Hub (`discover`);
4. audits pending items, requests first, each in its own process with a timeout, until `max_models` or the
   time budget; results go to the index through its safe writer, failures into the queue with a reason;
5. writes a Markdown summary of the run.

Every step writes its state atomically before the next begins, so a run killed at any point leaves work the
next run finishes: nothing is lost, and nothing is audited or recorded twice (the index writer drops an
identical record, and an item already in the index at that commit is not audited again).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import msgspec

from .. import __version__, clock
from ..errors import TRANSIENT, AuditorError, Failure
from ..fileio import atomic_write, git_blob_sha
from ..index import MeasuredRecord, ModelRef, append_record
from ..models import from_data
from .config import Config, parse_duration
from .discover import (
    audited_index,
    discover,
    indexed_record,
    known_weight_hashes,
    load_cursor,
    record_same_weights,
    save_cursor,
)
from .eligibility import Candidate, Ineligible
from .queue import Item, Queue, load_queue, now, save_queue
from .report import RunReport, manifest_of, write_manifest
from .requestfiles import check_request, read_request, request_files
from .summary import render


@dataclass(frozen=True)
class RepoPaths:
    root: Path
    work: Path

    @classmethod
    def of(cls, root: Path, config: Config) -> RepoPaths:
        return cls(root, root / config.run.work_dir)

    index = property(lambda self: self.root / "index")
    queue = property(lambda self: self.root / "queue" / "queue.yaml")
    cursor = property(lambda self: self.root / "queue" / "cursor.yaml")
    requests = property(lambda self: self.root / "requests")
    hub_cache = property(lambda self: self.work / "hub")


class RunInProgressError(AuditorError):
    code = Failure.RUN_IN_PROGRESS


@contextlib.contextmanager
def run_lock(paths: RepoPaths):
    """Held by whatever writes the queue (`run`, `discover`): the operating system releases it when the
    holder dies, even by kill -9, so a crashed run never blocks the next."""
    from filelock import FileLock, Timeout

    paths.work.mkdir(parents=True, exist_ok=True)
    lock = FileLock(paths.work / "run.lock")
    try:
        lock.acquire(timeout=0)
    except Timeout as e:
        raise RunInProgressError(f"another run holds {paths.work / 'run.lock'}; one run at a time") from e
    try:
        yield
    finally:
        lock.release()


def new_run_id(runs: Path) -> str:
    """The start time, UTC; a suffix keeps two runs in one second apart."""
    base = clock.now().strftime("%Y%m%dT%H%M%SZ")
    suffixes = ("", *(f"-{n}" for n in range(2, 1000)))
    return next(base + s for s in suffixes if not (runs / f"{base}{s}.json").exists())


def run(
    root: Path,
    config: Config,
    *,
    max_models: int | None = None,
    time_budget: str | None = None,
    discover_models: bool = True,
    api=None,
    log=lambda message: print(message, file=sys.stderr),
) -> RunReport:
    """Run the scheduled job in the repository at `root` (see the module docstring)."""
    paths = RepoPaths.of(root, config)
    budget = parse_duration(time_budget or config.run.time_budget)  # a bad value fails before anything changes
    with run_lock(paths):
        report = RunReport(run_id=new_run_id(paths.work / "runs"), started=now())
        queue = load_queue(paths.queue)
        recover(queue, config, report, paths)
        save_queue(paths.queue, queue)
        take_requests(paths, config, queue, report, api, log)
        if discover_models and config.discover.limit > 0:
            cursor = load_cursor(paths.cursor)
            report.discovery = discover(config, queue=queue, cursor=cursor, index_root=paths.index, api=api)
            queue.prune(config.run.keep_skipped)
            save_queue(paths.queue, queue)  # queue before cursor: a crash in between re-examines, never skips
            save_cursor(paths.cursor, cursor)
            log(f"discovery: {report.discovery.examined} examined, {len(report.discovery.queued)} queued")
        audit_pending(paths, config, queue, report, max_models, budget, log)
        report.pending = len(queue.pending(config.priority))
        report.finished = now()
        summary = render(report)
        atomic_write(paths.work / "runs" / f"{report.run_id}.md", summary)
        write_manifest(paths.work / "runs" / f"{report.run_id}.json", manifest_of(report, queue, summary))
        return report


def recover(queue: Queue, config: Config, report: RunReport, paths: RepoPaths) -> None:
    """Items left `running` belong to a run that died. If it died after the record reached the index, the
    audit is done (and reported now); otherwise try again, or give up after max_attempts."""
    for item in [i for i in queue.items if i.state == "running"]:
        record = indexed_record(paths.index, item.model, item.revision)
        if record is not None:
            queue.set(item, "done")
            report.audited.append((item, record))
            drop_download(paths, item)
            continue
        message = f"the run auditing it (run {item.run}) stopped before it finished"
        state = "pending" if item.attempts < config.run.max_attempts else "failed"
        report.recovered.append(queue.set(item, state, code=Failure.CRASHED, message=message))
        if state == "failed":
            drop_download(paths, item)


def drop_download(paths: RepoPaths, item: Item) -> None:
    """The model's files in the runner's Hub cache: gone once it is done or given up on, so the disk does
    not fill (a model that will be retried keeps its partial download)."""
    shutil.rmtree(paths.hub_cache / f"models--{item.model.replace('/', '--')}", ignore_errors=True)


def take_requests(paths: RepoPaths, config: Config, queue: Queue, report: RunReport, api, log) -> None:
    """Queue each request file, then remove it. A file that cannot be read, or a model the Hub could not be
    asked about (a passing outage), stays for the next run: a request is never dropped."""
    for path in request_files(paths.requests) if paths.requests.is_dir() else []:
        rel = path.relative_to(paths.root).as_posix()
        try:
            outcome = take_request(path, rel, config, queue, paths, api)
        except Ineligible as e:
            why = "left in place, the Hub could not be asked" if e.code == "download_error" else "left in place"
            report.requests.append((rel, f"{why}: {e}"))
            continue
        except Exception as e:  # anything unforeseen: this request waits, the run goes on
            report.requests.append((rel, f"left in place, it could not be checked: {type(e).__name__}: {e}"))
            continue
        save_queue(paths.queue, queue)  # the request is safe in the queue before its file goes
        report.taken.append((rel, git_blob_sha(path.read_bytes())))
        path.unlink()
        report.requests.append((rel, outcome))
        log(f"request {rel}: {outcome}")


def take_request(path: Path, rel: str, config: Config, queue: Queue, paths: RepoPaths, api) -> str:
    """Put one request in the queue; what became of it, in words.

    Raises:
        Ineligible: the file stays (unreadable, or the Hub could not be asked).
    """
    request = read_request(path)
    base = dict(
        origin="request",
        added=now(),
        updated=now(),
        requested_by=request.requested_by,
        request_reason=request.reason,
        request_files=[rel],
    )
    try:
        c: Candidate = check_request(request, config, index_root=paths.index, api=api)
    except Ineligible as e:
        if e.code == "download_error":
            raise
        if e.code == "already_audited":
            return f"not queued: {e}"
        item = Item(request.model, e.revision, state="skipped", code=e.code, message=str(e), **base)
        if not queue.add(item):
            existing = queue.find(item.model, item.revision)
            queue.set(
                existing, existing.state, code=existing.code, message=existing.message, **asked(existing, rel, request)
            )
        return f"skipped ({e.code}): {e}"
    existing = queue.find(c.model, c.revision)
    if existing is not None:
        # Asked for again: it goes first now, and a model that failed gets another chance.
        state, code, message, attempts = existing.state, existing.code, existing.message, existing.attempts
        if state in ("failed", "skipped"):
            state, code, message, attempts = "pending", None, None, 0
        queue.set(existing, state, code=code, message=message, attempts=attempts, **asked(existing, rel, request))
        return f"queued {c.model} at {c.revision} (it was {existing.state} already)"
    hashes = known_weight_hashes(c.model, c.revision, api)  # identical weights to an audited one: no download
    item = Item(
        c.model,
        c.revision,
        state="pending",
        created_at=c.created_at,
        downloads=c.downloads,
        likes=c.likes,
        base_model=c.base_model,
        weights_sha256=hashes or None,
        **base,
    )
    queue.add(item)
    return f"queued {c.model} at {c.revision}"


def asked(item: Item, rel: str, request) -> dict:
    """The changes to a queued item that one more request for it makes."""
    return dict(
        origin="request",
        request_files=[*item.request_files, rel] if rel not in item.request_files else item.request_files,
        requested_by=item.requested_by or request.requested_by,
        request_reason=item.request_reason or request.reason,
    )


def audit_pending(paths, config, queue, report, max_models, budget: float, log) -> None:
    limit = config.run.max_models if max_models is None else max_models
    deadline = time.monotonic() + budget
    done, weights = audited_index(paths.index)
    started = 0
    for item in queue.pending(config.priority):
        if started >= limit or time.monotonic() > deadline:
            break
        if (item.model.lower(), item.revision) in done:
            queue.set(item, "done")
            save_queue(paths.queue, queue)
            drop_download(paths, item)
            continue
        original = weights.get(frozenset((item.weights_sha256 or {}).values()))
        if item.weights_sha256 and original is not None:
            c = Candidate(item.model, item.revision)
            record_same_weights(paths.index, c, item.weights_sha256, original)
            report.same_weights.append((item.model, item.revision, original))
            queue.set(item, "done")
            save_queue(paths.queue, queue)
            continue
        started += 1
        item = queue.set(item, "running", attempts=item.attempts + 1, run=report.run_id)
        save_queue(paths.queue, queue)
        log(f"auditing {item.model} at {item.revision} (attempt {item.attempts})")
        outcome = audit_in_worker(item, config, paths, report.run_id)
        if "record" in outcome:
            try:
                record = from_data(outcome["record"], MeasuredRecord)
                append_record(item.model, record, root=paths.index)
            except (AuditorError, ValueError, TypeError, KeyError) as e:  # never let one result stop the run
                outcome = {"error": {"code": Failure.INVALID_RESULT, "message": f"the index refused the result: {e}"}}
        if "record" in outcome:
            queue.set(item, "done")
            done.add((item.model.lower(), item.revision))
            if record.weights_sha256:
                weights.setdefault(frozenset(record.weights_sha256.values()), ModelRef(item.model, item.revision))
            report.audited.append((item, record))
            log(f"  {record.verdict}: {len(record.super_weights)} super weight(s)")
        else:
            code, message = Failure.of(outcome["error"]["code"]), outcome["error"]["message"]
            again = code in TRANSIENT and item.attempts < config.run.max_attempts
            new = queue.set(item, "pending" if again else "failed", code=code, message=message)
            (report.retrying if again else report.failed).append(new)
            log(f"  {'will retry' if again else 'failed'} ({code}): {message}")
        save_queue(paths.queue, queue)
        if "record" in outcome or not again:
            drop_download(paths, item)


def die_with_parent() -> None:
    """In the worker: be killed if the run dies, so no orphan keeps the GPU (Linux; elsewhere a no-op)."""
    with contextlib.suppress(OSError, AttributeError):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def audit_in_worker(item: Item, config: Config, paths: RepoPaths, run_id: str) -> dict:
    """Audit one model in a child process; the outcome as the worker wrote it, or an error."""
    jobs = paths.work / "jobs"
    name = f"{run_id}-{item.model.replace('/', '--')}"
    job, result = jobs / f"{name}.json", jobs / f"{name}.result.json"
    result.unlink(missing_ok=True)
    settings = msgspec.structs.asdict(config.audit)
    atomic_write(
        job,
        json.dumps(
            {
                "model": item.model,
                "revision": item.revision,
                "settings": settings,
                "cache_dir": str(paths.hub_cache),
                "tool_version": __version__,
            }
        ),
    )
    timeout = parse_duration(config.run.timeout)
    proc = subprocess.Popen(
        [sys.executable, "-m", "auditor.scheduler.worker", str(job), str(result)],
        cwd=paths.root,
        start_new_session=True,
        preexec_fn=die_with_parent,
    )
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        return {"error": {"code": Failure.TIMEOUT, "message": f"stopped after {config.run.timeout}"}}
    finally:
        job.unlink(missing_ok=True)
    if result.exists():
        outcome = json.loads(result.read_text(encoding="utf-8"))
        result.unlink()
        return outcome
    if proc.returncode == -signal.SIGKILL:  # the kernel's OOM killer, or someone: worth another try
        killed = "the audit was killed (SIGKILL): out of memory, or by hand"
        return {"error": {"code": Failure.KILLED, "message": killed}}
    return {"error": {"code": Failure.CRASHED, "message": f"the audit process exited with status {proc.returncode}"}}
