"""One audit in its own process: `python -m auditor.scheduler.worker JOB.json RESULT.json`.

The runner starts one per model so that a crash, a hang or an out-of-memory kill takes down that audit
only, and so a timeout can end it for sure. JOB holds the model, its commit and the settings; RESULT
receives `{"record": ...}` (an index record) or `{"error": {"code": ..., "message": ...}}`.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import msgspec

from .. import __version__
from ..errors import RESOURCE_ERRNOS, Failure, resource_error, resource_message
from ..fileio import atomic_write

DISK_STATUS = {75: Failure.NO_SPACE, 77: Failure.NOT_WRITABLE}
"""Exit statuses of a worker that could not write its result (EX_TEMPFAIL, EX_NOPERM), to the run's code."""


def run_job(job: dict) -> dict:
    from ..audit import audit
    from ..errors import AuditorError, OutOfMemoryError
    from ..index import MeasuredRecord
    from ..index.entries import record_to_dict
    from ..settings import AuditSettings

    try:
        import torch

        result = audit(
            job["model"],
            revision=job["revision"],
            settings=AuditSettings(**job["settings"]),
            cache_dir=job["cache_dir"],
            progress=False,
        )
        return {"record": record_to_dict(MeasuredRecord.from_audit(result))}
    except torch.OutOfMemoryError:
        return {"error": {"code": OutOfMemoryError.code, "message": "ran out of GPU memory"}}
    except Exception as e:
        if (disk := resource_error(e)) is not None:  # the runner's disk, wrapped by whichever library hit it
            return {"error": {"code": RESOURCE_ERRNOS[disk.errno], "message": resource_message(disk)}}
        if isinstance(e, AuditorError):
            return {"error": {"code": e.code, "message": str(e)}}
        return {"error": {"code": Failure.ERROR, "message": f"{type(e).__name__}: {e}"}}  # a bug: the run goes on


def main(argv: list[str]) -> int:
    job_path, result_path = map(Path, argv)
    from ..cli.common import quiet_libraries

    quiet_libraries(progress=False)
    outcome = run_job(json.loads(job_path.read_text(encoding="utf-8")))
    try:
        atomic_write(result_path, json.dumps(outcome, allow_nan=False))
    except OSError as e:
        if (disk := resource_error(e)) is None:
            raise
        print(f"superweight worker: {resource_message(disk)}", file=sys.stderr)
        return next(status for status, code in DISK_STATUS.items() if code == RESOURCE_ERRNOS[disk.errno])
    return 0


def job_of(item, config, cache_dir: Path | str | None) -> dict:
    """What a worker needs to audit one queue item: plain data, the same for a local process or a Ray task
    (whose `cache_dir` may be None: the task picks a folder of its node)."""
    return {
        "model": item.model,
        "revision": item.revision,
        "settings": msgspec.structs.asdict(config.audit),
        "cache_dir": None if cache_dir is None else str(cache_dir),
        "tool_version": __version__,
    }


def die_with_parent() -> None:
    """In the worker: be killed if its parent dies, so no orphan keeps the GPU (Linux; elsewhere a no-op)."""
    with contextlib.suppress(OSError, AttributeError):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def read_result(path: Path) -> dict | None:
    """A worker's result file, or None when there is none (or it is not one: the audit runs again)."""
    try:
        outcome = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return outcome if isinstance(outcome, dict) and ("record" in outcome or "error" in outcome) else None


def run_worker(job: dict, job_path: Path, result_path: Path, timeout: float, cwd: Path | None = None) -> dict:
    """Run one audit in a worker process and return its outcome (the result file stays: the caller removes
    it once recorded). A timeout kills the worker's whole process group; the worker dies with its parent."""
    result_path.unlink(missing_ok=True)
    atomic_write(job_path, json.dumps(job))
    proc = subprocess.Popen(
        [sys.executable, "-m", "auditor.scheduler.worker", str(job_path), str(result_path)],
        cwd=cwd,
        start_new_session=True,
        preexec_fn=die_with_parent,
    )
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        return {"error": {"code": Failure.TIMEOUT, "message": f"stopped after {timeout:g} s"}}
    finally:
        job_path.unlink(missing_ok=True)
    outcome = read_result(result_path)
    if outcome is not None:
        return outcome
    if proc.returncode == -signal.SIGKILL:  # the kernel's OOM killer, or someone: worth another try
        killed = "the audit was killed (SIGKILL): out of memory, or by hand"
        return {"error": {"code": Failure.KILLED, "message": killed}}
    if (code := DISK_STATUS.get(proc.returncode)) is not None:
        where = result_path.parent
        return {"error": {"code": code, "message": f"the audit could not write its result in {where} ({code})"}}
    return {"error": {"code": Failure.CRASHED, "message": f"the audit process exited with status {proc.returncode}"}}


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
