"""Benchmark: building the site for 10,000 models.

    python benchmarks/bench_site.py [--models 10000]

Writes N model files (one realistic measured record each, as in bench_index.py), then times
`superweight site build` from a cold start (no index cache) and again warm. Target: under 30 s. Reported,
never asserted.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from bench_index import record

from auditor.index import ModelEntry
from auditor.index.entries import render_entry
from auditor.web.build import build_site


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", type=int, default=10_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "index"
        os.environ["SUPERWEIGHT_CACHE"] = str(Path(tmp) / "cache")
        text = render_entry(ModelEntry("org/model", [record(0)]))
        for i in range(args.models):
            (root / f"org{i % 100}").mkdir(parents=True, exist_ok=True)
            (root / f"org{i % 100}" / f"model-{i}.yaml").write_text(
                text.replace("model: org/model", f"model: org{i % 100}/model-{i}", 1)
            )
        times = []
        for _ in range(2):
            start = time.perf_counter()
            result = build_site(
                Path(tmp) / "site", base_url="https://example.org/index/", index_root=root, queue_file=None
            )
            times.append(time.perf_counter() - start)
        size = sum(p.stat().st_size for p in result.out.rglob("*") if p.is_file())
    print(f"{args.models:,} models: {result.files:,} files, {size / 2**20:.0f} MiB")
    print(f"site build, cold (index parsed and validated)   {times[0]:6.1f} s   (target < 30 s)")
    print(f"site build, warm (index cache)                  {times[1]:6.1f} s")


if __name__ == "__main__":
    main()
