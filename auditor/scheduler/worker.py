"""One audit in its own process: `python -m auditor.scheduler.worker JOB.json RESULT.json`.

The runner starts one per model so that a crash, a hang or an out-of-memory kill takes down that audit
only, and so a timeout can end it for sure. JOB holds the model, its commit and the settings; RESULT
receives `{"record": ...}` (an index record) or `{"error": {"code": ..., "message": ...}}`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from ..errors import RESOURCE_ERRNOS, Failure, resource_error, resource_message

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
    from ..fileio import atomic_write

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


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
