"""Benchmark: loading an index of 10,000 models.

    python benchmarks/bench_index.py [--models 10000]

Writes N model files, each with one realistic measured record (two super weights, a 32-layer profile, the
full ablation), then times `load_index`:

- cold: every file read, strictly parsed, schema-checked and rule-checked (the first load on a machine, or
  the site build on a fresh CI runner);
- warm: the usual case: files whose bytes are unchanged come from the validated-parse cache (typed
  records are built when a model is read; the benchmark also times reading all of them);
- one `lookup` (a consumer reading one model), and an `export` to JSON.

Target: loading 10,000 models' files under a second. Reported, never asserted.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from auditor.index import MeasuredRecord, ModelEntry, export, load_index, lookup
from auditor.index.entries import DetectionSummary, Software, render_entry
from auditor.records import Ablation, DetectionSettings, LayerProfile, SuperWeight, WeightPerplexity, WeightRef
from auditor.settings import DEFAULT_PROMPT


def record(i: int) -> MeasuredRecord:
    weights = [
        SuperWeight(
            layer=2,
            row=3968,
            col=7003,
            shape=(4096, 11008),
            module="model.layers.2.mlp.down_proj",
            tensor="model.layers.2.mlp.down_proj.weight",
            index=(3968, 7003),
            value=-0.72265625,
            activation=-2458.0,
            input_activation=3401.5,
            token=0,
            output_ratio=51234.5,
            input_ratio=20312.25,
            share=0.98,
        ),
        SuperWeight(
            layer=7,
            row=3968,
            col=453,
            shape=(4096, 11008),
            module="model.layers.7.mlp.down_proj",
            tensor="model.layers.7.mlp.down_proj.weight",
            index=(3968, 453),
            value=0.5,
            activation=812.0,
            input_activation=1624.0,
            token=0,
            output_ratio=9000.0,
            input_ratio=8000.0,
            share=0.9,
        ),
    ]
    return MeasuredRecord(
        revision=f"{i:040x}",
        date="2026-11-22T07:00:00Z",
        tool_version="0.1.0",
        architecture="LlamaForCausalLM",
        model_type="llama",
        num_layers=32,
        num_parameters=6_738_415_616,
        dtype="bfloat16",
        device="cuda",
        hardware="NVIDIA H100 80GB HBM3 (CUDA 12.8)",
        software=Software("2.13.0", "5.23.0"),
        elapsed_s=184.2,
        super_weights=weights,
        ablation=Ablation(
            eval_text="wikitext-2-raw-v1 (test)",
            eval_sha256="ab" * 32,
            tokens=65536,
            seq_len=2048,
            perplexity_original=5.68,
            perplexity_ablated=4820.1,
            perplexity_control=5.71,
            verdict="confirmed",
            min_damage=2.0,
            min_margin=2.0,
            control_weights=[WeightRef(2, 11, 12), WeightRef(7, 13, 14)],
            per_weight=[WeightPerplexity(2, 3968, 7003, 3100.5), WeightPerplexity(7, 3968, 453, 6.2)],
        ),
        detection=DetectionSummary(DetectionSettings(DEFAULT_PROMPT, 100.0, 100.0, 0.5, 16), passes=3),
        profile=[LayerProfile(n, 1.25 + n, n * 7, 3.5 + n, n * 11) for n in range(32)],
        weights_sha256={"model-00001-of-00002.safetensors": "cd" * 32, "model-00002-of-00002.safetensors": "ef" * 32},
    )


def timed(fn):
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", type=int, default=10_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root, cache = Path(tmp) / "index", Path(tmp) / "cache"
        os.environ["SUPERWEIGHT_CACHE"] = str(cache)
        text = render_entry(ModelEntry("org/model", [record(0)]))
        for i in range(args.models):
            org = root / f"org{i % 100}"
            org.mkdir(parents=True, exist_ok=True)
            model = f"org{i % 100}/model-{i}"
            (org / f"model-{i}.yaml").write_text(text.replace("model: org/model", f"model: {model}", 1))
        size = sum(p.stat().st_size for p in root.rglob("*.yaml"))

        index, cold = timed(lambda: load_index(root))
        _, warm = timed(lambda: load_index(root))
        _, typed = timed(lambda: sum(len(entry.records) for entry in load_index(root)))
        _, one = timed(lambda: lookup("ORG42/model-42", root=root))
        _, dump = timed(lambda: export(index, "json"))
    print(f"{args.models:,} model files, {size / 2**20:.1f} MiB of YAML ({size // args.models:,} bytes each)")
    print(f"load_index, cold (parse + validate every file)  {cold:6.2f} s")
    print(f"load_index, warm (validated-parse cache)        {warm:6.2f} s   (target < 1 s)")
    print(f"  ... and build every model's typed records     {typed:6.2f} s")
    print(f"lookup of one model                             {one * 1e3:6.1f} ms")
    print(f"export to JSON                                  {dump:6.2f} s")


if __name__ == "__main__":
    main()
