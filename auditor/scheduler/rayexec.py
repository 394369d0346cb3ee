"""Audits as Ray tasks (`superweight run --executor ray`): many at once, across a cluster.

The runner stays the only writer of queue, index and manifest. Each audit is a task that runs the same
worker process as the local executor, on whichever node Ray places it, and returns its outcome (plain data:
a record or an error) to the runner, which records it as it records a local one. Each task asks for its
share of the GPU resource by the model's memory over one device's (`memory_gib`), so small models share a
GPU and a big one gets several of one node; a model bigger than the biggest node is `too_large` at once.
Ray retries a task once when its worker or node dies; after that it is `killed`, a passing failure the next
run tries again. The worker's own timeout, disk and memory failures come back as with the local executor.
Each task downloads on its own node (`run.ray_cache_dir`, else a scratch folder), after checking that node's
free space, and removes the model's files when done.
"""

from __future__ import annotations

import math
import platform
import shutil
import tempfile
from pathlib import Path

from ..errors import Failure, first_line
from .config import Config, parse_duration
from .queue import Item
from .worker import job_of, run_worker

RETRIES = 1  # of a task whose worker or node died; the queue's max_attempts covers later runs


def audit_task(job: dict, timeout: float, need_bytes: float) -> dict:
    """On a Ray worker: one audit in a worker process of its own, downloading to this node's disk
    (`job["cache_dir"]`, or a scratch folder), if `need_bytes` are free there."""
    work = Path(tempfile.mkdtemp(prefix="superweight-job-"))
    cache = Path(job["cache_dir"] or work / "hub")
    try:
        cache.mkdir(parents=True, exist_ok=True)
        free = shutil.disk_usage(cache).free
        if free < need_bytes:
            message = (
                f"its download needs {need_bytes / 2**30:,.1f} GiB free in {cache} on {platform.node()}, "
                f"and {free / 2**30:,.1f} GiB are"
            )
            return {"error": {"code": Failure.NO_SPACE, "message": message}}
        return run_worker({**job, "cache_dir": str(cache)}, work / "job.json", work / "result.json", timeout)
    finally:
        shutil.rmtree(cache / f"models--{job['model'].replace('/', '--')}", ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)


def share(item: Item, config: Config) -> float:
    """How much of one device an audit takes: a fraction (to the hundredth, rounded up) when it fits on one,
    else whole devices."""
    need = (item.weight_bytes or 0) * config.memory_factor / config.memory_bytes
    return max(0.01, math.ceil(need * 100) / 100) if need <= 1 else float(math.ceil(need))


class RayExecutor:
    """Submit audits as tasks and hand their outcomes back as they finish (`ray.wait`)."""

    def __init__(self, config: Config):
        import ray

        self.ray, self.config = ray, config
        self.started_ray = not ray.is_initialized()
        if self.started_ray:
            ray.init(address=config.run.ray_address, log_to_driver=False, include_dashboard=False)
        self.timeout = parse_duration(config.run.timeout)
        self.task = ray.remote(max_retries=RETRIES, num_cpus=1)(audit_task)
        self.tasks: dict = {}  # ObjectRef -> Item
        self.refused: list[tuple[Item, dict]] = []

    def biggest_node(self) -> float:
        """The most of the GPU resource any one node has (0 on a cluster without it)."""
        name = self.config.run.ray_gpu_resource
        return max((n["Resources"].get(name, 0.0) for n in self.ray.nodes() if n.get("Alive")), default=0.0)

    downloads_here = False  # each task checks its own node's disk

    def prefetch(self, item: Item, paths) -> None:
        pass  # the cluster already runs audits side by side: each task downloads on its own node

    def has_room(self) -> bool:
        return True  # Ray queues what does not fit yet, and starts it when resources free up

    def submit(self, item: Item, paths, run_id: str) -> None:
        name, amount = self.config.run.ray_gpu_resource, share(item, self.config)
        biggest = self.biggest_node()
        if biggest and amount > biggest:
            message = f"needs {amount:g} of {name}, and the biggest node of the cluster has {biggest:g}"
            self.refused.append((item, {"error": {"code": Failure.TOO_LARGE, "message": message}}))
            return
        options = {} if not biggest else {"num_gpus": amount} if name == "GPU" else {"resources": {name: amount}}
        job = job_of(item, self.config, self.config.run.ray_cache_dir)
        need = (item.weight_bytes or 0) + self.config.run.min_free_gib * 2**30
        self.tasks[self.task.options(**options).remote(job, self.timeout, need)] = item

    def busy(self) -> bool:
        return bool(self.tasks or self.refused)

    def next(self) -> tuple[Item, dict]:
        if self.refused:
            return self.refused.pop(0)
        [ref], _ = self.ray.wait(list(self.tasks), num_returns=1)
        item = self.tasks.pop(ref)
        return item, self.outcome(ref)

    def outcome(self, ref) -> dict:
        errors = self.ray.exceptions
        try:
            return self.ray.get(ref)
        except errors.OutOfMemoryError as e:
            return {"error": {"code": Failure.OUT_OF_MEMORY, "message": f"Ray stopped it: {first_line(e, 300)}"}}
        except (errors.WorkerCrashedError, errors.NodeDiedError, errors.ObjectLostError) as e:
            message = f"its Ray worker or node died (retried {RETRIES} time(s)): {first_line(e, 300)}"
            return {"error": {"code": Failure.KILLED, "message": message}}
        except errors.RayError as e:
            return {"error": {"code": Failure.CRASHED, "message": f"Ray: {first_line(e, 300)}"}}

    def close(self) -> None:
        for ref in self.tasks:
            self.ray.cancel(ref, force=True)
        if self.started_ray:
            self.ray.shutdown()
