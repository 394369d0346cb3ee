"""Benchmark: detection overhead, peak memory and audit time on one model and prompt.

    python benchmarks/bench_audit.py                        # ~150M-parameter llama, float32, CPU
    python benchmarks/bench_audit.py --dtype bfloat16 --hidden 2048 --layers 16 --device cuda

Builds a synthetic llama checkpoint with a planted super weight (auditor.synthetic), then, in a fresh
process so that the memory baseline is clean, reports:

- one detection pass (hooks + forward + analysis) over one bare forward pass on the same prompt
  (target <= 1.15x), and the whole iterative `detect()` (two passes here: find, then confirm none remain);
- peak memory of loading and detecting over the checkpoint's size in bytes, at the checkpoint's dtype
  (target <= 1.3x): resident memory on CPU (VmHWM above a baseline taken after a warm-up on a tiny model,
  so imported code and kernel libraries are not counted), allocated memory on CUDA;
- wall time of a whole `audit()`: load, detect, and four perplexity measurements.

Targets are reported, never asserted: this is not a test.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def rss_bytes(field: str) -> int:
    with open("/proc/self/status", encoding="ascii") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith(field + ":"))


def interleaved_medians(fns: dict, repeat: int, sync) -> dict[str, float]:
    """Median wall time of each function, run in turns so that drift on a shared machine hits all alike."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    for i in range(repeat + 1):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            sync()
            if i:  # the first round warms up
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def measure(work: Path, device: str, repeat: int, max_tokens: int) -> dict:
    """Runs in a fresh process. A tiny model of the same family is loaded and run first, so that lazily
    imported code and kernel libraries are in the baseline and only the model's own memory is counted."""
    import torch

    from auditor import loading, source
    from auditor.audit import audit
    from auditor.detect import Recorder, detect, forward
    from auditor.layout import find_down_projections
    from auditor.settings import DEFAULT_PROMPT, AuditSettings

    cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    path = work / "model"
    checkpoint_bytes = sum(p.stat().st_size for p in path.glob("*.safetensors"))
    dtype = json.loads((path / "config.json").read_text()).get("dtype", "float32")

    warm = loading.load(source.resolve(str(work / "tiny")), device=device, dtype=dtype)
    detect(warm.model, warm.tokenizer, progress=False)
    del warm
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak-RSS mark
    baseline = rss_bytes("VmRSS")
    if cuda:
        torch.cuda.reset_peak_memory_stats()
        baseline = torch.cuda.memory_allocated()

    lm = loading.load(source.resolve(str(path)), device=device, dtype=dtype)
    ids = lm.tokenizer(DEFAULT_PROMPT, return_tensors="pt").input_ids.to(lm.model.device)
    projections = find_down_projections(lm.model)

    def detection_pass():
        with Recorder(projections) as recorder:
            forward(lm.model, ids)
            recorder.spikes()

    passes = detect(lm.model, lm.tokenizer, progress=False).passes
    t = interleaved_medians(
        {
            "bare": lambda: forward(lm.model, ids),
            "pass": detection_pass,
            "detect": lambda: detect(lm.model, lm.tokenizer, progress=False),
        },
        repeat,
        sync,
    )
    peak = (torch.cuda.max_memory_allocated() if cuda else rss_bytes("VmHWM")) - baseline
    lm = None  # free it before the audit loads its own copy
    start = time.perf_counter()
    audited = audit(
        str(path),
        settings=AuditSettings(device=device, dtype=dtype, eval_text=str(work / "eval.txt"), max_tokens=max_tokens),
        progress=False,
    )
    audit_s = time.perf_counter() - start
    return {
        "device": audited.info.device,
        "hardware": audited.environment.hardware,
        "dtype": dtype,
        "parameters": audited.info.num_parameters,
        "prompt_tokens": int(ids.shape[1]),
        "checkpoint_bytes": checkpoint_bytes,
        "bare_forward_s": t["bare"],
        "detection_pass_s": t["pass"],
        "detection_pass_ratio": t["pass"] / t["bare"],
        "detect_s": t["detect"],
        "detect_passes": passes,
        "peak_memory_bytes": peak,
        "peak_memory_ratio": peak / checkpoint_bytes,
        "audit_s": audit_s,
        "audit_tokens_per_measurement": audited.ablation.tokens,
        "verdict": audited.ablation.verdict,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hidden", type=int, default=1024)
    parser.add_argument("--intermediate", type=int, default=2816)
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--max-tokens", type=int, default=4096)
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument("--measure", type=Path, help=argparse.SUPPRESS)  # internal: the child process
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure, args.device, args.repeat, args.max_tokens)))
        return

    import torch

    from auditor import synthetic

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        synthetic.build(
            work / "model",
            "llama",
            [synthetic.Plant(layer=2, row=7, col=33)],
            dtype=getattr(torch, args.dtype),
            overrides={
                "hidden_size": args.hidden,
                "intermediate_size": args.intermediate,
                "num_hidden_layers": args.layers,
                "num_attention_heads": args.hidden // 64,
                "num_key_value_heads": args.hidden // 64,
            },
        )
        synthetic.build(work / "tiny", "llama", dtype=getattr(torch, args.dtype))
        synthetic.write_eval_text(work / "eval.txt")
        child = subprocess.run(
            [
                sys.executable,
                __file__,
                "--measure",
                str(work),
                "--device",
                args.device,
                "--repeat",
                str(args.repeat),
                "--max-tokens",
                str(args.max_tokens),
            ],
            capture_output=True,
            text=True,
        )
        if child.returncode:
            sys.exit(f"measurement failed:\n{child.stderr[-3000:]}")
    r = json.loads(child.stdout.strip().splitlines()[-1])
    if args.json:
        print(json.dumps(r, indent=2))
        return
    print(
        f"model: synthetic llama, {r['parameters'] / 1e6:.0f}M parameters, {r['dtype']}, "
        f"{r['checkpoint_bytes'] / 2**20:.0f} MiB; prompt {r['prompt_tokens']} tokens"
    )
    print(f"machine: {r['hardware']}")
    print(f"bare forward pass           {r['bare_forward_s'] * 1e3:8.1f} ms")
    print(
        f"one detection pass          {r['detection_pass_s'] * 1e3:8.1f} ms  "
        f"{r['detection_pass_ratio']:.3f}x  (target <= 1.15x)"
    )
    print(f"detect() ({r['detect_passes']} passes)        {r['detect_s'] * 1e3:8.1f} ms")
    print(
        f"peak memory, load + detect  {r['peak_memory_bytes'] / 2**20:8.0f} MiB  "
        f"{r['peak_memory_ratio']:.3f}x checkpoint  (target <= 1.3x)"
    )
    print(
        f"audit() wall time           {r['audit_s']:8.1f} s   "
        f"({r['audit_tokens_per_measurement']} tokens x 4 measurements; verdict {r['verdict']})"
    )


if __name__ == "__main__":
    main()
