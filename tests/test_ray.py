"""Audits as Ray tasks (`run --executor ray`) on a local cluster the test starts, with a custom resource
standing in for GPUs, against the Hub stand-in: real audits of tiny checkpoints, in parallel."""

from __future__ import annotations

import os
import platform
import signal
import threading
import time
from pathlib import Path

import pytest
from msgspec.structs import replace
from scheduled import PLANTS, add_models

from auditor.index import lookup
from auditor.scheduler import runner
from auditor.scheduler.config import Config, DiscoverConfig, RunConfig
from auditor.scheduler.queue import load_queue
from auditor.settings import AuditSettings

try:
    import ray
except ModuleNotFoundError:  # CI installs the extra: there, a missing Ray is a failure
    why = "Ray is not installed (pip install 'superweight-index[ray]')"
    pytestmark = pytest.mark.skipif(not os.environ.get("CI"), reason=why)
    ray = None

MODELS = PLANTS


@pytest.fixture
def cluster(hub, hf_home):
    """A two-CPU cluster with two `gpu_slot`s, whose workers reach the Hub stand-in (they are started now,
    with this environment)."""
    assert ray is not None, "Ray is not installed, and CI needs it"
    env = {"HF_ENDPOINT": hub.url, "HF_HOME": str(hf_home), "HF_HUB_OFFLINE": "0", "HF_HUB_DISABLE_TELEMETRY": "1"}
    ray.init(
        num_cpus=2,
        resources={"gpu_slot": 2},
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={"env_vars": env},
    )
    yield
    ray.shutdown()


@pytest.fixture
def models(hub, build_checkpoint) -> dict[str, str]:
    return add_models(hub, build_checkpoint)


@pytest.fixture
def repo(tmp_path, eval_text, models) -> tuple[Path, Config]:
    for d in ("index", "queue", "requests"):
        (tmp_path / d).mkdir()
    for model in MODELS:
        (tmp_path / "requests" / f"{model.split('/')[1]}.yaml").write_text(f"model: {model}\n")
    config = Config(
        licenses=["apache-2.0"],
        memory_gib=1.0,
        audit=AuditSettings(device="cpu", eval_text=str(eval_text), max_tokens=1024, seq_len=256),
        run=RunConfig(max_models=5, timeout="5m", executor="ray", ray_gpu_resource="gpu_slot"),
        discover=DiscoverConfig(limit=0),
    )
    return tmp_path, config


def test_audits_run_as_ray_tasks_in_parallel_and_the_runner_alone_writes(cluster, repo, models, monkeypatch):
    root, config = repo
    node_cache = root.parent / "node-cache"  # each node's own download folder
    config = replace(config, run=replace(config.run, ray_cache_dir=str(node_cache)))
    writers = set()
    real = runner.append_record
    monkeypatch.setattr(runner, "append_record", lambda *a, **kw: (writers.add(os.getpid()), real(*a, **kw))[1])
    log: list[str] = []

    report = runner.run(root, config, log=log.append)

    assert sorted(i.model for i, _ in report.audited) == sorted(MODELS) and not report.failed
    for model, sha in models.items():
        [record] = lookup(model, root=root / "index")
        assert record.revision == sha and record.verdict == "confirmed"
    assert writers == {os.getpid()}  # records are written by the runner only, never by a task
    starts = [n for n, line in enumerate(log) if line.startswith("auditing ")]
    first_result = next(n for n, line in enumerate(log) if "super weight(s)" in line)
    assert len(starts) == 3 and max(starts) < first_result  # all submitted before the first came back
    assert load_queue(root / "queue" / "queue.yaml").items == []
    # Downloaded on the node, not into the runner's work dir, and removed once audited.
    assert node_cache.is_dir() and not list(node_cache.glob("models--*"))
    assert not list(root.glob(".superweight/hub/models--*"))


def test_a_task_checks_its_own_nodes_disk_before_downloading(tmp_path):
    from auditor.scheduler.rayexec import audit_task

    job = {"model": "org/m", "revision": "a" * 40, "settings": {}, "cache_dir": str(tmp_path / "cache")}

    outcome = audit_task(job, timeout=60, need_bytes=2**60)

    assert outcome["error"]["code"] == "no_space"
    assert f"in {tmp_path / 'cache'} on {platform.node()}" in outcome["error"]["message"]


def kill_one_audit_task(killed: list[int], stop: threading.Event) -> None:
    """SIGKILL the first Ray worker process found running an audit task (Ray titles it `ray::audit_task`)."""
    while not stop.is_set() and not killed:
        for pid in os.listdir("/proc"):
            try:
                title = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0]
            except (OSError, ValueError):
                continue
            if title.startswith(b"ray::audit_task"):
                os.kill(int(pid), signal.SIGKILL)
                killed.append(int(pid))
                return
        time.sleep(0.05)


def test_a_task_whose_worker_is_killed_is_retried_and_nothing_is_lost_or_doubled(cluster, repo, models):
    root, config = repo
    killed: list[int] = []
    stop = threading.Event()
    killer = threading.Thread(target=kill_one_audit_task, args=(killed, stop))
    killer.start()
    try:
        report = runner.run(root, config, log=lambda m: None)
    finally:
        stop.set()
        killer.join()

    assert killed, "no audit task was seen running"
    assert sorted(i.model for i, _ in report.audited) == sorted(MODELS) and not report.failed
    for model in MODELS:
        assert len(lookup(model, root=root / "index")) == 1


def test_a_model_bigger_than_the_biggest_node_is_too_large(cluster, repo, models):
    root, config = repo
    runner.run(root, config, max_models=0, log=lambda m: None)  # the requests are queued
    config = replace(config, memory_gib=1e-6)  # now each needs more of gpu_slot than a node has (2)

    report = runner.run(root, config, log=lambda m: None)

    assert {(i.model, i.code) for i in report.failed} == {(m, "too_large") for m in MODELS}
    assert "the biggest node of the cluster has 2" in report.failed[0].message


def test_shares_of_a_device_by_memory():
    from auditor.scheduler.queue import Item
    from auditor.scheduler.rayexec import share

    config = Config(memory_gib=80.0, memory_factor=1.3)

    def of(gb: float) -> float:
        item = Item("org/m", "a" * 40, "request", "pending", "2026-01-01T00:00:00Z", "2026-01-01T00:00:00Z")
        return share(replace(item, weight_bytes=int(gb * 2**30)), config)

    assert of(14) == 0.23 and of(2) == 0.04  # a 7B and a 1B in bf16 share one 80 GiB GPU
    assert of(140) == 3.0  # a 70B takes three whole ones
    assert of(0) == 0.01
