"""Benchmark: the scheduled job's executors on N real audits of tiny checkpoints, from the Hub stand-in.

    python benchmarks/bench_executors.py [--models 4] [--bandwidth 100000] [--json]

Reports the wall time of `run` (taking N requests and auditing them, each in a worker process) for:

- local, one audit at a time, against `ray` on a one-CPU cluster (one at a time too): the Ray path's
  overhead (starting the cluster, and each task's);
- on a slow network (the stand-in holds each download to `--bandwidth` bytes a second): local without and
  with `run.prefetch` (the next model downloads while one is audited), and Ray on a two-CPU cluster (two
  audits side by side).

Reported, never asserted. Ray needs the extra (`pip install 'superweight-index[ray]'`).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
WORK = Path(tempfile.mkdtemp(prefix="bench-executors-"))
os.environ.update(HF_HOME=str(WORK / "hf"), HF_HUB_DISABLE_TELEMETRY="1", TOKENIZERS_PARALLELISM="false")
os.environ.pop("HF_HUB_OFFLINE", None)
sys.path.insert(0, str(HERE.parent / "tests"))

import pytest  # noqa: E402  (the stand-in's monkeypatching)
from fakehub import FakeHub, point_client_at  # noqa: E402
from msgspec.structs import replace  # noqa: E402

from auditor import synthetic  # noqa: E402
from auditor.scheduler.config import Config, DiscoverConfig, RunConfig  # noqa: E402
from auditor.scheduler.runner import run  # noqa: E402
from auditor.settings import AuditSettings  # noqa: E402
from auditor.synthetic import Plant  # noqa: E402


def timed(hub: FakeHub, config: Config, models: list[str], name: str, cpus: int | None = None) -> dict:
    """One run over a fresh clone with a request for each model; `cpus`: on a Ray cluster of that many."""
    root = WORK / name
    for d in ("index", "queue", "requests"):
        (root / d).mkdir(parents=True)
    for model in models:
        (root / "requests" / f"{model.split('/')[1]}.yaml").write_text(f"model: {model}\n")
    if cpus is not None:
        import ray

        env = {"HF_ENDPOINT": hub.url, "HF_HOME": os.environ["HF_HOME"], "HF_HUB_DISABLE_TELEMETRY": "1"}
        started = time.perf_counter()
        ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False, runtime_env={"env_vars": env})
        config = replace(config, run=replace(config.run, executor="ray"))
    else:
        started = time.perf_counter()
    try:
        report = run(root, config, log=lambda m: None)
    finally:
        if cpus is not None:
            ray.shutdown()
    seconds = time.perf_counter() - started
    assert len(report.audited) == len(models), (name, report.failed, report.retrying)
    print(f"{name:>36}: {seconds:6.1f} s", file=sys.stderr)
    return {"executor": name, "seconds": round(seconds, 1), "audits": len(report.audited)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", type=int, default=4)
    parser.add_argument("--bandwidth", type=float, default=100_000, help="bytes a second, for the slow network")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    text = synthetic.write_eval_text(WORK / "eval.txt")
    config = Config(
        licenses=["apache-2.0"],
        memory_gib=1.0,
        audit=AuditSettings(device="cpu", eval_text=str(text), max_tokens=1024, seq_len=256),
        run=RunConfig(max_models=args.models, timeout="10m", min_free_gib=0, prefetch=False),
        discover=DiscoverConfig(limit=0),
    )
    from huggingface_hub.utils import disable_progress_bars

    disable_progress_bars()  # the prefetch's, in this process
    mp = pytest.MonkeyPatch()
    rows = []
    try:
        with FakeHub() as hub:
            point_client_at(hub.url, mp)
            models = []
            for n in range(args.models):
                model = f"org/bench-{n}"
                files = synthetic.build(WORK / "models" / model, "llama", [Plant(1 + n % 2, 3 + n, 10 + n)])
                hub.add_model(model, files, card_data={"license": "apache-2.0"})
                models.append(model)
            size = sum(f.stat().st_size for f in (WORK / "models" / models[0]).iterdir())
            rows.append(timed(hub, config, models, "local"))
            rows.append(timed(hub, config, models, "ray, 1 CPU", cpus=1))
            hub.bandwidth = args.bandwidth
            slow = f" ({size / args.bandwidth:.0f} s a download)"
            rows.append(timed(hub, config, models, "local, slow network" + slow))
            prefetching = replace(config, run=replace(config.run, prefetch=True))
            rows.append(timed(hub, prefetching, models, "local + prefetch, slow network"))
            rows.append(timed(hub, config, models, "ray, 2 CPUs, slow network", cpus=2))
    finally:
        mp.undo()
        shutil.rmtree(WORK, ignore_errors=True)
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        for row in rows:
            print(f"{row['executor']:>48}: {row['seconds']:6.1f} s for {row['audits']} audits")


if __name__ == "__main__":
    main()
