"""Capacity model: audits per GPU-hour by model size, and how many GPUs keep up with the Hub.

    python benchmarks/capacity.py [--candidates 2] [--mfu 0.4] [--per-week 1000] [--gpu-pass-flops F]

An estimate, not a measurement: no GPU was lent to this work. The one measured figure is a CPU's (the
README's Benchmarks: a perplexity pass of SmolLM2-135M ran at 82 GFLOP/s, float32, on a 2-core AMD EPYC);
GPU times are that work scaled by FLOPs to an assumed GPU throughput. When a GPU is lent, measure the pass
with `bench_audit.py --device cuda --dtype bfloat16` and pass its GFLOP/s as --gpu-pass-flops.

What an audit runs (auditor/ablation.py, auditor/scoring.py). Detection: k+1 forwards over a 10-token
prompt, nothing next to the rest. Ablation: perplexity over W = max_tokens / seq_len windows (65,536 /
2,048 = 32), measured for the original model (1 pass), each of the k candidates zeroed alone and its
control alone (2k), and, with k >= 2, a pair for the group or for the proven weights together (2; more when
a group is searched among 3 or more). One proven weight's overall figures are its own again, free; k = 1 is
3 passes, k = 2 is 5 to 8. Assumed here: 1 + 2k (+2 when k >= 2). A screen on the first eighth of the
windows only saves work (its windows count toward the full pass); a candidate it drops saves 2 passes.
Passes after the original replay the kept input of the candidate's layer instead of running the layers
below it (--cache-skip: the index's ten reported models hold their super weights at a median ~6% of depth).
Not modelled unless --slice-ms is given: the head's calls, one per vocabulary slice; on CUDA a slice is 1 GiB
of float32 logits (scoring.CUDA_CHUNK_BYTES), 16k entries at 8 windows a forward, 8 calls for a 128k vocabulary.

FLOPs per token: 2 x parameters (head included) + 2 x layers x seq_len x hidden (causal attention), as
bench_audit.forward_flops counts. Memory: bf16 weights x 1.3 (auditor.yaml's memory_factor) on 80 GiB
cards; a model over one card runs spread over several, layer by layer, one card computing at a time, so its
GPU-hours are cards x time (the scheduler spreads it over the GPUs of one node, `gpus_per_node`). Wall time
per audit: compute + loading the weights + a fixed start (~9 s measured per tiny audit, bench_executors);
the download overlaps the previous audit (run.prefetch), so a slot is the longer of the two.

The Hub's rate (--per-week 1000) is an assumption, a round figure meant to err high: a Hugging Face talk
(O. Sanseviero, "Distributing a Million Open Models in the Wild", 2024) counted 3,000-4,000 new
Llama-architecture repos a week, and text generation as a whole is a few times that; but most new repos are
quantized (GGUF, GPTQ, AWQ, MLX), adapters, pickle-only, gated, remote code or without an allowed license,
and byte-identical re-uploads get a same_weights record with no audit. The size mix (--mix) is a guess too:
fine-tunes cluster on a few base sizes, most of them small.
"""

from __future__ import annotations

import argparse
import math

# (label, representative model, parameters, layers, hidden, vocabulary)
SIZES = [
    ("0.5B", "Qwen2.5-0.5B", 0.49e9, 24, 896, 151936),
    ("1B", "Llama-3.2-1B", 1.24e9, 16, 2048, 128256),
    ("3B", "Llama-3.2-3B", 3.21e9, 28, 3072, 128256),
    ("7B", "Mistral-7B", 7.24e9, 32, 4096, 32000),
    ("8B", "Llama-3.1-8B", 8.03e9, 32, 4096, 128256),
    ("14B", "Qwen2.5-14B", 14.8e9, 48, 5120, 152064),
    ("32B", "Qwen2.5-32B", 32.8e9, 64, 5120, 152064),
    ("70B", "Llama-3.1-70B", 70.6e9, 80, 8192, 128256),
]
CUDA_BATCH = 8  # windows a forward on CUDA (scoring.MAX_BATCH)
SLICE = (1 << 30) // (4 * CUDA_BATCH * 2047) // 16 * 16  # vocabulary entries a slice (scoring.CUDA_CHUNK_BYTES)
CPU_MEASURED = "SmolLM2-135M perplexity pass, README Benchmarks (AMD EPYC, 2 cores, float32, 2026-11-30)"
SMOLLM2 = (134.5e6, 30, 576)  # parameters (tied head counted once), layers, hidden
SMOLLM2_AUDIT = (14, 0.22, 136 - 32)  # its measured audit: 2,048-token passes, layers skipped, seconds less load
DEFAULT_MIX = "0.5:20,1:20,3:10,7:10,8:10,14:20,32:5,70:5"


def flops_per_token(params: float, layers: int, hidden: int, seq_len: int) -> float:
    return 2 * params + 2 * layers * seq_len * hidden


def passes(k: int) -> int:
    return 1 + 2 * k + (2 if k >= 2 else 0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--candidates",
        type=int,
        default=2,
        help="candidates per audit, k (the index's ten reported models: median 2 proven)",
    )
    p.add_argument("--max-tokens", type=int, default=65536)
    p.add_argument("--seq-len", type=int, default=2048)
    p.add_argument("--cache-skip", type=float, default=0.05, help="share of layers replayed in passes after the first")
    p.add_argument("--cpu-flops", type=float, default=82e9, help="measured CPU pass FLOP/s (see CPU_MEASURED)")
    p.add_argument("--gpu-peak", type=float, default=989e12, help="dense bf16 FLOP/s (H100 SXM)")
    p.add_argument("--mfu", type=float, default=0.40, help="share of --gpu-peak a pass achieves")
    p.add_argument("--gpu-pass-flops", type=float, help="a measured GPU pass FLOP/s (replaces peak x mfu)")
    p.add_argument("--gpu-gib", type=float, default=80.0)
    p.add_argument("--memory-factor", type=float, default=1.3)
    p.add_argument("--download-gbps", type=float, default=1.0, help="Hub download, GB/s")
    p.add_argument("--load-gbps", type=float, default=2.0, help="local disk to GPU, GB/s")
    p.add_argument("--fixed-s", type=float, default=10.0, help="process start, imports, tokenizing the eval text")
    p.add_argument("--slice-ms", type=float, default=0.0, help="fixed cost of one head slice call (not modelled: 0)")
    p.add_argument("--per-week", type=float, default=1000, help="new eligible models a week (an assumption)")
    p.add_argument("--mix", default=DEFAULT_MIX, help="size:percent pairs of the eligible models")
    a = p.parse_args()

    gpu = a.gpu_pass_flops or a.gpu_peak * a.mfu
    n_passes = passes(a.candidates)
    tokens = a.max_tokens // a.seq_len * a.seq_len
    effective = tokens * (1 + (n_passes - 1) * (1 - a.cache_skip))  # token-passes, replayed layers removed
    smol = flops_per_token(*SMOLLM2, a.seq_len)
    n, skipped, measured_s = SMOLLM2_AUDIT
    print(f"CPU: {a.cpu_flops / 1e9:.0f} GFLOP/s = {a.cpu_flops / smol:.0f} tokens/s, measured: {CPU_MEASURED}.")
    print(
        f"Check: that audit's {n} passes of {a.seq_len} tokens ({skipped:.0%} of layers replayed) come to "
        f"{n * a.seq_len * smol * (1 - skipped) / a.cpu_flops:.0f} s by this model; measured {measured_s} s."
    )
    source = "measured" if a.gpu_pass_flops else f"assumed: {a.mfu:.0%} of {a.gpu_peak / 1e12:.0f} TFLOP/s"
    print(f"GPU: {gpu / 1e12:.0f} TFLOP/s ({source}), {gpu / a.cpu_flops:,.0f}x the CPU's.")
    print(
        f"Audit: k={a.candidates} candidates, {n_passes} perplexity passes of {tokens:,} tokens = "
        f"{n_passes * tokens:,} token-passes ({effective:,.0f} after {a.cache_skip:.0%} replayed layers).\n"
    )
    print("| size | like | weights GiB | GPUs | TFLOP / audit | this CPU, h | GPU compute, s | download, s |", end="")
    print(" slot, s | audits / GPU-hour |\n" + "|---" * 10 + "|")
    forwards = n_passes * math.ceil(a.max_tokens // a.seq_len / CUDA_BATCH)
    gpu_hours = {}
    for label, like, params, layers, hidden, vocab in SIZES:
        weight_bytes = 2 * params
        cards = math.ceil(weight_bytes * a.memory_factor / (a.gpu_gib * 2**30))
        flops = effective * flops_per_token(params, layers, hidden, a.seq_len)
        compute_s = flops / gpu + forwards * math.ceil(vocab / SLICE) * a.slice_ms / 1000
        wall_s = compute_s + weight_bytes / (a.load_gbps * 1e9) + a.fixed_s
        download_s = weight_bytes / (a.download_gbps * 1e9)
        slot_s = max(wall_s, download_s)
        gpu_hours[label] = cards * slot_s / 3600
        print(
            f"| {label} | {like} | {weight_bytes / 2**30:.0f} | {cards}{'*' if cards > 1 else ''} | {flops / 1e12:,.0f}"
            f" | {flops / a.cpu_flops / 3600:,.0f} | {compute_s:,.0f} | {download_s:,.0f} | {slot_s:,.0f}"
            f" | {1 / gpu_hours[label]:.1f} |"
        )
    print("\n\\* spread over the cards of one node (`gpus_per_node`), one computing at a time.\n")

    mix = {size: float(share) / 100 for size, share in (pair.split(":") for pair in a.mix.split(","))}
    if unknown := [size for size in mix if size + "B" not in gpu_hours]:
        p.error(f"--mix: no size {', '.join(unknown)} (sizes: {', '.join(s[0][:-1] for s in SIZES)})")
    print("| size | share | audits / week | GPU-hours / week |\n|---|---|---|---|")
    total = 0.0
    for size, share in mix.items():
        hours = a.per_week * share * gpu_hours[size + "B"]
        total += hours
        print(f"| {size}B | {share:.0%} | {a.per_week * share:,.0f} | {hours:,.1f} |")
    print(
        f"\n{a.per_week:,.0f} eligible models a week take {total:,.0f} GPU-hours: "
        f"{total / 168:.2f} of one GPU's week; one GPU at 70% duty keeps up with "
        f"{a.per_week * 168 * 0.7 / total:,.0f} a week ({math.ceil(total / 168 / 0.7)} GPU(s) for this rate)."
    )


if __name__ == "__main__":
    main()
