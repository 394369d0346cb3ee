"""`superweight run`: the scheduled job.

One run at a time per clone (`lock.repo_lock`). A run:

1. settles any item a dead run left `running`: done if its record reached the index, recorded now if its
   worker had finished (its result file is kept until the record is written), else back to pending (or
   failed after `max_attempts`); then clears the dead runs' job files;
2. takes the request files (`requests/*.yaml`): each is checked and pinned to a commit, queued (or queued
   as skipped with its reason), noted in the run's manifest, and only then removed; a malformed file stays,
   and the summary says why;
3. discovers new models on the Hub (`discover`);
4. audits pending items, requests first, each in its own process with a timeout, until `max_models` or the
   time budget; results go to the index through its safe writer, failures into the queue with a reason;
5. writes a Markdown summary of the run.

The manifest (`runs/<id>.json`, what `publish` reads) is written when the run starts and after every step,
each state change before the action it records: a run killed at any point leaves work the next run
finishes, and `publish` answers the dead run's requests too. Nothing is lost, and nothing is audited or
recorded twice (the index writer drops an identical record, and an item already in the index at that
commit is not audited again).

A full or read-only disk is the runner's trouble, not the model's: an audit that hits it goes back to
pending without using up an attempt (`no_space`, `not_writable`) and the run starts no other; a download
that would not fit is put off before it starts; and a state file that cannot be written stops the run with
one line naming it, having consumed nothing.
"""

from __future__ import annotations

import json
import logging
import shutil
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from .. import clock
from ..errors import RESOURCE, TRANSIENT, AuditorError, Failure, ResourceError, UsageError, resource_error
from ..fileio import atomic_write, git_blob_sha
from ..index import MeasuredRecord, ModelRef, append_record
from ..models import from_data
from ..source import resolve
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
from .lock import repo_lock
from .queue import Item, Queue, load_queue, now, save_queue
from .report import RequestUpdate, RunReport, manifest_of, write_manifest
from .requestfiles import check_request, read_request, request_files
from .summary import render
from .worker import job_of, read_result, run_worker


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
    """Run the scheduled job in the repository at `root` (see the module docstring).

    Raises:
        ResourceError: a state file could not be written (disk full, read-only): the run stopped there.
    """
    paths = RepoPaths.of(root, config)
    budget = parse_duration(time_budget or config.run.time_budget)  # a bad value fails before anything changes
    with repo_lock(root):
        report = RunReport(run_id=new_run_id(paths.work / "runs"), started=now())
        try:
            queue = load_queue(paths.queue)
            step = Recorder(paths, config, report, queue)
            step()  # the run is on disk before it changes anything
            recover(queue, config, report, paths, step)
            step()  # what recovery found is in the manifest before the queue forgets it
            save_queue(paths.queue, queue)
            clear_jobs(paths)
            take_requests(paths, config, queue, report, api, log, step)
            if discover_models and config.discover.limit > 0:
                cursor = load_cursor(paths.cursor)
                report.discovery = discover(config, queue=queue, cursor=cursor, index_root=paths.index, api=api)
                queue.prune(config.run.keep_skipped)
                save_queue(paths.queue, queue)  # queue before cursor: a crash in between re-examines, never skips
                save_cursor(paths.cursor, cursor)
                step()
                d = report.discovery
                log(f"discovery: {d.examined} examined, {len(d.queued)} queued, {len(d.screened)} screened")
            executor = executor_for(config) if queue.pending(config.priority) else None
            try:
                audit_pending(paths, config, queue, report, max_models, budget, log, step, executor)
            finally:
                if executor is not None:
                    executor.close()
            report.finished = now()
            summary = step()
            atomic_write(paths.work / "runs" / f"{report.run_id}.md", summary)
        except OSError as e:
            if (disk := resource_error(e)) is None:
                raise
            raise ResourceError(disk, "; the run stopped there, and what it had taken is kept for the next") from e
        return report


class Recorder:
    """`step()` writes the run's manifest as things stand (and returns its summary): called after every
    change of state, before the next action, so that a killed run's work is published by the next."""

    def __init__(self, paths: RepoPaths, config: Config, report: RunReport, queue: Queue):
        self.path = paths.work / "runs" / f"{report.run_id}.json"
        self.config, self.report, self.queue = config, report, queue

    def __call__(self) -> str:
        self.report.pending = len(self.queue.pending(self.config.priority))
        summary = render(self.report)
        write_manifest(self.path, manifest_of(self.report, self.queue, summary))
        return summary


def recover(queue: Queue, config: Config, report: RunReport, paths: RepoPaths, step) -> None:
    """Items left `running` belong to a run that died. If it died after the record reached the index, the
    audit is done (and reported now); if its worker had finished, its result is recorded now; otherwise
    try again, or give up after max_attempts."""
    for item in [i for i in queue.items if i.state == "running"]:
        record = indexed_record(paths.index, item.model, item.revision)
        if record is not None:
            queue.set(item, "done")
            report.audited.append((item, record))
            drop_download(paths, item)
            continue
        result = job_files(paths, item.run or "", item.model)[1]
        outcome = read_result(result)
        if outcome is not None:
            settle(paths, config, queue, report, item, outcome, step, log=lambda message: None)
            continue
        message = f"the run auditing it (run {item.run}) stopped before it finished"
        state = "pending" if item.attempts < config.run.max_attempts else "failed"
        report.recovered.append(queue.set(item, state, code=Failure.CRASHED, message=message))
        if state == "failed":
            drop_download(paths, item)


def clear_jobs(paths: RepoPaths) -> None:
    """What dead runs left: job and result files (their items were settled just before), and the temp files
    of writes they were killed in. Under the lock, no live run has any."""
    jobs = paths.work / "jobs"
    leftovers = list(jobs.iterdir()) if jobs.is_dir() else []
    for folder in (paths.requests, paths.queue.parent, paths.work / "runs"):
        leftovers += folder.glob(".*.tmp") if folder.is_dir() else []
    for leftover in leftovers:
        if leftover.is_file() and not leftover.is_symlink():
            leftover.unlink(missing_ok=True)


def downloaded(paths: RepoPaths, item: Item) -> int:
    """Bytes of the model already in the runner's Hub cache (a retried audit keeps its partial download)."""
    folder = paths.hub_cache / f"models--{item.model.replace('/', '--')}"
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file() and not f.is_symlink())


def drop_download(paths: RepoPaths, item: Item) -> None:
    """The model's files in the runner's Hub cache: gone once it is done or given up on, so the disk does
    not fill (a model that will be retried keeps its partial download)."""
    shutil.rmtree(paths.hub_cache / f"models--{item.model.replace('/', '--')}", ignore_errors=True)


def take_requests(paths: RepoPaths, config: Config, queue: Queue, report: RunReport, api, log, step) -> None:
    """Queue each request file, note it in the manifest, then remove it. A file that cannot be read, or a
    model the Hub could not be asked about (a passing outage), stays for the next run: a request is never
    dropped. A full disk stops the run before the request is consumed."""
    for path in request_files(paths.requests) if paths.requests.is_dir() else []:
        rel = path.relative_to(paths.root).as_posix()
        try:
            outcome = take_request(path, rel, config, queue, paths, api)
        except Ineligible as e:
            why = "left in place, the Hub could not be asked" if e.code == "download_error" else "left in place"
            report.requests.append((rel, f"{why}: {e}"))
            continue
        except Exception as e:  # anything unforeseen: this request waits, the run goes on
            if resource_error(e):
                raise
            report.requests.append((rel, f"left in place, it could not be checked: {type(e).__name__}: {e}"))
            continue
        save_queue(paths.queue, queue)  # the request is safe in the queue before its file goes...
        report.taken.append((rel, git_blob_sha(path.read_bytes())))
        report.requests.append((rel, outcome))
        step()  # ...and in the manifest, so publishing deletes it on GitHub even if this run dies
        path.unlink()
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
        weight_bytes=c.weight_bytes,
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


def audit_pending(paths, config, queue, report, max_models, budget: float, log, step, executor=None) -> None:
    """Start audits, best first, as the executor has room (one at a time locally, as many as fit on a Ray
    cluster), and record each result as it comes back: the runner is the only writer of queue and index."""
    executor = executor or Local(config)
    limit = config.run.max_models if max_models is None else max_models
    deadline = time.monotonic() + budget
    done, weights = audited_index(paths.index)
    started, stop = 0, None
    waiting = queue.pending(config.priority)
    while True:
        while stop is None and started < limit and time.monotonic() <= deadline and executor.has_room():
            if not waiting:
                break
            item = waiting.pop(0)
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
                same = f"{original.model} at {original.revision}"
                for file in item.request_files:  # its requesters hear of it too
                    report.answered[file] = RequestUpdate("same_weights", item.model, item.revision, message=same)
                queue.set(item, "done")
                step()
                save_queue(paths.queue, queue)
                continue
            if executor.downloads_here and (short := lacks_space(paths, config, item)) is not None:
                report.retrying.append(queue.set(item, "pending", code=Failure.NO_SPACE, message=short))
                save_queue(paths.queue, queue)
                step()
                log(f"put off {item.model}: {short}")
                continue
            started += 1
            item = queue.set(item, "running", attempts=item.attempts + 1, run=report.run_id)
            save_queue(paths.queue, queue)
            step()
            log(f"auditing {item.model} at {item.revision} (attempt {item.attempts})")
            upcoming = next((i for i in waiting if (i.model.lower(), i.revision) not in done), None)
            if (  # the next model downloads while this one is audited, if it is audited in this run and fits
                config.run.prefetch
                and upcoming is not None
                and started < limit
                and lacks_space(paths, config, upcoming, also=item) is None
            ):
                executor.prefetch(upcoming, paths)
            executor.submit(item, paths, report.run_id)
        if not executor.busy():
            return
        item, outcome = executor.next()
        result = job_files(paths, report.run_id, item.model)[1]
        if not result.exists():  # from another machine: on disk before it is recorded, as a local worker's is
            atomic_write(result, json.dumps(outcome, allow_nan=False))
        record, why = settle(paths, config, queue, report, item, outcome, step, log)
        result.unlink(missing_ok=True)  # recorded: not needed any more
        if record is not None:
            done.add((item.model.lower(), item.revision))
            if record.weights_sha256:
                weights.setdefault(frozenset(record.weights_sha256.values()), ModelRef(item.model, item.revision))
        if why is not None and stop is None:
            stop = report.stopped = why
            log(f"stopping: {why} (audits already started finish)")


def executor_for(config: Config):
    if config.run.executor == "local":
        return Local(config)
    try:
        from .rayexec import RayExecutor
    except ModuleNotFoundError as e:
        if e.name != "ray":
            raise
        raise UsageError("run.executor ray needs Ray: pip install 'superweight-index[ray]'") from e
    return RayExecutor(config)


class Local:
    """The default executor: one audit at a time, in a process of its own on this machine, while the next
    model downloads (`prefetch`)."""

    downloads_here = True  # into the work dir: the runner checks its disk before each download

    def __init__(self, config: Config):
        self.config = config
        self.finished: list[tuple[Item, dict]] = []

    def prefetch(self, item: Item, paths: RepoPaths) -> None:
        """Download what the audit of `item` will need, in the background: its worker then finds it in the
        cache (or waits on huggingface_hub's lock for a file still coming). A failure here is the audit's to
        report, so it is only logged."""

        def fetch() -> None:
            try:
                resolve(item.model, revision=item.revision, cache_dir=paths.hub_cache)
            except Exception as e:
                logging.getLogger(__name__).info("prefetching %s: %s", item.model, e)

        threading.Thread(target=fetch, name=f"prefetch {item.model}", daemon=True).start()

    def has_room(self) -> bool:
        return not self.finished

    def submit(self, item: Item, paths: RepoPaths, run_id: str) -> None:
        self.finished.append((item, audit_in_worker(item, self.config, paths, run_id)))

    def busy(self) -> bool:
        return bool(self.finished)

    def next(self) -> tuple[Item, dict]:
        return self.finished.pop(0)

    def close(self) -> None:
        pass


def settle(
    paths, config, queue, report, item: Item, outcome: dict, step, log
) -> tuple[MeasuredRecord | None, str | None]:
    """Record what one audit gave: its record in the index, or its failure in the queue. The manifest says
    so before the queue does, since the queue is what the next run recovers from. Returns the record, and
    why the run should start no other audit (the disk is full or read-only), if it should not."""
    if "record" in outcome:
        try:
            record = from_data(outcome["record"], MeasuredRecord)
            append_record(item.model, record, root=paths.index)
        except (AuditorError, ValueError, TypeError, KeyError) as e:  # never let one result stop the run
            outcome = {"error": {"code": Failure.INVALID_RESULT, "message": f"the index refused the result: {e}"}}
    if "record" in outcome:
        queue.set(item, "done")
        report.audited.append((item, record))
        step()
        save_queue(paths.queue, queue)
        log(f"  {record.verdict}: {len(record.super_weights)} super weight(s)")
        drop_download(paths, item)
        return record, None
    code, message = Failure.of(outcome["error"]["code"]), outcome["error"]["message"]
    stop = None
    if code in RESOURCE:  # the runner's disk, not the model: no attempt used up, and the download freed
        seen = max(item.weight_bytes or 0, downloaded(paths, item))  # so the space check puts it off next time
        new = queue.set(item, "pending", code=code, message=message, attempts=item.attempts - 1, weight_bytes=seen)
        report.retrying.append(new)
        stop, again = f"{code}: {message}", False
        log(f"  put off ({code}): {message}")
    else:
        again = code in TRANSIENT and item.attempts < config.run.max_attempts
        new = queue.set(item, "pending" if again else "failed", code=code, message=message)
        (report.retrying if again else report.failed).append(new)
        log(f"  {'will retry' if again else 'failed'} ({code}): {message}")
    step()
    save_queue(paths.queue, queue)
    if not again:  # done with it, or the download is what filled the disk
        drop_download(paths, item)
    return None, stop


def lacks_space(paths: RepoPaths, config: Config, item: Item, also: Item | None = None) -> str | None:
    """Why the model's download would not fit on the work dir's disk (its size is known from the Hub), if
    it would not: better put off now than fail halfway. `also`: a download under way at the same time."""
    need = sum(max((i.weight_bytes or 0) - downloaded(paths, i), 0) for i in filter(None, (item, also)))
    need += config.run.min_free_gib * 2**30
    where = next(p for p in (paths.hub_cache, *paths.hub_cache.parents) if p.exists())
    free = shutil.disk_usage(where).free
    if free >= need:
        return None
    return f"its download needs {need / 2**30:,.1f} GiB free in {where}, and {free / 2**30:,.1f} GiB are"


def job_files(paths: RepoPaths, run_id: str, model: str) -> tuple[Path, Path]:
    """The job a worker reads and the result it writes: the result stays until its record is written."""
    name = f"{run_id}-{model.replace('/', '--')}"
    return paths.work / "jobs" / f"{name}.json", paths.work / "jobs" / f"{name}.result.json"


def audit_in_worker(item: Item, config: Config, paths: RepoPaths, run_id: str) -> dict:
    """Audit one model in a child process; the outcome as the worker wrote it, or an error."""
    job, result = job_files(paths, run_id, item.model)
    timeout = parse_duration(config.run.timeout)
    return run_worker(job_of(item, config, paths.hub_cache), job, result, timeout, cwd=paths.root)
