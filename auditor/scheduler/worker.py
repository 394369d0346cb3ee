"""One audit in its own process: `python -m auditor.scheduler.worker JOB.json RESULT.json`.

The runner starts one per model so that a crash, a hang or an out-of-memory kill takes down that audit
only, and so a timeout can end it for sure. JOB holds the model, its commit and the settings; RESULT
receives `{"record": ...}` (an index record) or `{"error": {"code": ..., "message": ...}}`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def run_job(job: dict) -> dict:
    from ..audit import audit
    from ..errors import AuditorError, Failure, OutOfMemoryError
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
    except AuditorError as e:
        return {"error": {"code": e.code, "message": str(e)}}
    except Exception as e:  # a bug or an unexpected model: report it, the run goes on
        return {"error": {"code": Failure.ERROR, "message": f"{type(e).__name__}: {e}"}}


def main(argv: list[str]) -> int:
    job_path, result_path = map(Path, argv)
    from ..cli.common import quiet_libraries
    from ..fileio import atomic_write

    quiet_libraries(progress=False)
    outcome = run_job(json.loads(job_path.read_text(encoding="utf-8")))
    atomic_write(result_path, json.dumps(outcome, allow_nan=False))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
