"""One lock per repository clone, held by whatever changes its state (`run`, `discover`, `sync`, `publish`).

It lives at the clone's root, not in the work dir, so two runs configured with different `run.work_dir`
still exclude each other. The operating system releases it when the holder dies, even by kill -9, so a
crashed run never blocks the next.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from ..errors import AuditorError, Failure, ResourceError, resource_error

LOCK_FILE = ".superweight-run.lock"


class RunInProgressError(AuditorError):
    code = Failure.RUN_IN_PROGRESS


@contextlib.contextmanager
def repo_lock(root: Path):
    from filelock import FileLock, Timeout

    path = Path(root).resolve() / LOCK_FILE
    lock = FileLock(path)
    try:
        lock.acquire(timeout=0)
    except Timeout as e:
        raise RunInProgressError(f"another run holds {path}; one run at a time") from e
    except OSError as e:
        if resource_error(e):
            raise ResourceError(resource_error(e), " (the run lock)") from e
        raise
    try:
        yield
    finally:
        lock.release()
