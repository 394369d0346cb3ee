"""`superweight detect`, `audit` and `demo`: one model, start to finish."""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from ..errors import UsageError
from ..settings import (
    DEFAULT_MAX_SUPER_WEIGHTS,
    DEFAULT_MAX_TOKENS,
    DEFAULT_MIN_DAMAGE,
    DEFAULT_MIN_INPUT_RATIO,
    DEFAULT_MIN_MARGIN,
    DEFAULT_MIN_OUTPUT_RATIO,
    DEFAULT_MIN_SHARE,
    DEFAULT_PROMPT,
    DEFAULT_SCHEMES,
    DEFAULT_SEQ_LEN,
    DEVICE,
    DTYPES,
    SCHEME,
    AuditSettings,
    memory_key,
    parse_size,
)
from .common import emit_json, given_index, optional_index_option, output_file, positive, quiet_libraries


def device(text: str) -> str:
    """An argparse type: auto, cpu, cuda or cuda:N."""
    if not DEVICE.fullmatch(text):
        raise argparse.ArgumentTypeError(f"{text!r} is not auto, cpu, cuda or cuda:N")
    return text


def memory_budget(text: str) -> tuple[str, str]:
    """An argparse type: DEVICE=SIZE, as `cpu=200GiB` or `0=70GiB`."""
    key, _, size = text.partition("=")
    try:
        memory_key(key.strip()), parse_size(size)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"{text!r}: {e} (DEVICE=SIZE, like cpu=200GiB or 0=70GiB)") from None
    return key.strip(), size.strip()


# -- option groups --------------------------------------------------------------------------------


def add_model_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", metavar="MODEL", help="Hub repo id (org/name), checkpoint directory, or .gguf file")
    p.add_argument("--revision", help="Hub branch, tag or commit (the commit sha loaded is recorded)")
    p.add_argument(
        "--device",
        default="auto",
        type=device,
        help="auto (every GPU present, the model spread over them; else CPU), cpu, cuda or cuda:N (default: auto)",
    )
    p.add_argument(
        "--offload",
        action="store_true",
        help="let what does not fit on the device(s) go to CPU memory, then disk (slow; any size loads)",
    )
    p.add_argument(
        "--max-memory",
        metavar="DEVICE=SIZE",
        type=memory_budget,
        action="append",
        help="memory a spread model may take on a device, replacing the measured budget: 0=70GiB, cpu=200GiB "
        "(repeatable)",
    )
    p.add_argument(
        "--dtype",
        default="auto",
        choices=DTYPES,
        help="auto keeps the checkpoint's dtype on GPU and uses float32 on CPU (default: auto)",
    )
    g = p.add_argument_group("detection")
    g.add_argument("--prompt", default=DEFAULT_PROMPT, help="text of the detection pass (default: the paper's)")
    g.add_argument(
        "--min-output-ratio",
        type=positive(float),
        default=DEFAULT_MIN_OUTPUT_RATIO,
        help="output spike over the layer's median channel maximum (default: %(default)g)",
    )
    g.add_argument(
        "--min-input-ratio",
        type=positive(float),
        default=DEFAULT_MIN_INPUT_RATIO,
        help="input spike over the layer's median channel maximum (default: %(default)g)",
    )
    g.add_argument(
        "--min-share",
        type=positive(float),
        default=DEFAULT_MIN_SHARE,
        help="fraction of the output spike one weight must carry (default: %(default)g)",
    )
    g.add_argument(
        "--max-super-weights",
        type=positive(int, 1),
        default=DEFAULT_MAX_SUPER_WEIGHTS,
        help="stop the iterative search after this many (default: %(default)d)",
    )
    g.add_argument(
        "--module-pattern",
        metavar="REGEX",
        help="regex for the down projections' module names, for unknown layouts",
    )
    o = p.add_argument_group("output")
    o.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    o.add_argument("--output", metavar="FILE", type=output_file, help="also write the JSON result to FILE")
    o.add_argument("--quiet", action="store_true", help="no progress bars")


def add_ablation_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("ablation")
    g.add_argument(
        "--eval-text",
        metavar="FILE",
        help="UTF-8 text to measure perplexity on (default: WikiText-2 test, fetched from the Hub)",
    )
    g.add_argument(
        "--max-tokens",
        type=positive(int),
        default=DEFAULT_MAX_TOKENS,
        help="tokens scored per measurement, 0 for the whole text; below --seq-len, one window that long "
        "(default: %(default)d)",
    )
    g.add_argument(
        "--seq-len",
        type=positive(int, 2),
        default=DEFAULT_SEQ_LEN,
        help="window length, capped by the model's context (default: %(default)d)",
    )
    g.add_argument(
        "--min-damage",
        type=positive(float),
        default=DEFAULT_MIN_DAMAGE,
        help="confirmed needs ablated >= this x original perplexity (default: %(default)g)",
    )
    g.add_argument(
        "--min-margin",
        type=positive(float),
        default=DEFAULT_MIN_MARGIN,
        help="confirmed needs ablated >= this x control perplexity (default: %(default)g)",
    )


def add_quantization_options(p: argparse.ArgumentParser, *, flag: bool) -> None:
    g = p.add_argument_group("quantization impact")
    if flag:
        g.add_argument(
            "--quantize-impact",
            action="store_const",
            const="on",
            default="off",
            help="also measure perplexity under round-to-nearest quantization, with and without the super "
            "weights kept (as `superweight quantize-impact`)",
        )
    else:
        p.set_defaults(quantize_impact="on")
    g.add_argument(
        "--quant-schemes",
        metavar="BITS:BLOCK,...",
        type=schemes,
        default=list(DEFAULT_SCHEMES),
        help=f"round-to-nearest schemes, BLOCK a number of inputs or `channel` (default: {','.join(DEFAULT_SCHEMES)})",
    )
    g.add_argument(
        "--quant-include",
        metavar="PART",
        choices=("head", "embeddings"),
        action="append",
        default=[],
        help="also quantize the LM head or the input embeddings (repeatable; default: the decoder only)",
    )


def schemes(text: str) -> list[str]:
    """An argparse type: comma-separated BITS:BLOCK schemes."""
    found = [s.strip() for s in text.split(",") if s.strip()]
    bad = [s for s in found if not SCHEME.fullmatch(s)]
    if bad or not found:
        raise argparse.ArgumentTypeError(f"{(bad or [text])[0]!r} is not BITS:BLOCK (like 4:128 or 8:channel)")
    return found


# -- commands -------------------------------------------------------------------------------------


def settings_from(args: argparse.Namespace) -> AuditSettings:
    fields = AuditSettings.__struct_fields__
    given = {k: v for k, v in vars(args).items() if k in fields}
    given["max_memory"] = dict(given["max_memory"]) if given.get("max_memory") else None
    return AuditSettings(**given)


def cmd_detect_or_audit(args: argparse.Namespace) -> int:
    from ..audit import audit
    from ..fileio import atomic_write
    from ..report import render

    index_root = given_index(getattr(args, "index", None))
    if index_root is not None and ("/" not in args.model or Path(args.model).exists()):
        raise UsageError("--index takes Hub models only (org/name): a local path has no Hub id or commit to record")
    if index_root is not None:  # made now: a folder that cannot be is found out before the audit, not after
        try:
            Path(index_root).mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise UsageError(f"--index {index_root}: {e.strerror or e}") from e
    quiet_libraries(progress=not args.quiet)
    settings = settings_from(args)
    result = audit(
        args.model,
        revision=args.revision,
        settings=settings,
        ablation=args.command != "detect",
        progress=not args.quiet,
    )
    data = emit_json(result.to_json())
    if args.output:
        atomic_write(args.output, data)
    sys.stdout.write(data if args.json else render(result) + "\n")
    if args.output:
        print(f"superweight: wrote {args.output}", file=sys.stderr)
    if index_root is not None:
        from ..index import MeasuredRecord, append_record

        path = append_record(result.info.model, MeasuredRecord.from_audit(result), root=index_root)
        where = path or Path(index_root) / f"{result.info.model}.yaml"
        # The record's path belongs on stdout with the report; with --json stdout holds the JSON alone.
        print(f"{'wrote' if path else 'already recorded in'} {where}", file=sys.stderr if args.json else sys.stdout)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .. import synthetic

    if args.family not in synthetic.FAMILIES:
        raise UsageError(f"--family must be one of {', '.join(sorted(synthetic.FAMILIES))}")
    if args.gguf and args.family != "llama":
        raise UsageError(f"--gguf converts the llama family only, not {args.family}")
    quiet_libraries(progress=False)
    out: Path = args.directory
    repo_id = f"demo/tiny-{args.family.replace('_', '-')}"
    with tempfile.TemporaryDirectory() as tmp:
        built = synthetic.build(Path(tmp) / "model", args.family)
        snapshot, sha = synthetic.add_to_hub_cache(built, out / "hub", repo_id)
    text = synthetic.write_eval_text(out / "eval.txt")
    print(f"wrote {repo_id}, a tiny {args.family} with a planted super weight, to the Hub cache {out / 'hub'}")
    print(f"  (commit {sha}; as a plain checkpoint directory: {snapshot})")
    print(f"wrote its evaluation text to {text}")
    if args.gguf:
        gguf = synthetic.write_gguf(snapshot, out / "model.gguf", base_model=repo_id)
        print(f"wrote a GGUF copy to {gguf} (its metadata names {repo_id} as its base)")
    print("next, offline:")
    print(f"  export HF_HUB_OFFLINE=1 HF_HUB_CACHE={out / 'hub'}")
    print(f"  superweight audit {repo_id} --eval-text {text} --index {out / 'index'}")
    if args.gguf:
        print(f"  SUPERWEIGHT_INDEX={out / 'index'} superweight check-gguf {out / 'model.gguf'}")
    return 0


def register(sub) -> None:
    p = sub.add_parser(
        "detect",
        help="find super-weight candidates in one forward pass per weight",
        description="Find super-weight candidates from activation spikes (no ablation).",
    )
    add_model_options(p)
    p.set_defaults(func=cmd_detect_or_audit)

    p = sub.add_parser(
        "audit",
        help="detect super weights and confirm them by ablation",
        description="Detect super weights, then confirm them: perplexity with them zeroed, "
        "against a control that zeroes as many of the largest other weights.",
    )
    add_model_options(p)
    add_ablation_options(p)
    optional_index_option(
        p, "append the result to the index in DIR; --index alone: $SUPERWEIGHT_INDEX, else ./index (Hub models only)"
    )
    add_quantization_options(p, flag=True)
    p.set_defaults(func=cmd_detect_or_audit)

    p = sub.add_parser(
        "quantize-impact",
        help="audit, then measure perplexity under round-to-nearest quantization, with and without super weights",
        description="Detect and confirm the super weights, then measure perplexity on the same windows with "
        "every linear layer of the decoder quantized (round-to-nearest, asymmetric, per block), with the "
        "super weights held out, and with them held out and the other outliers clipped.",
    )
    add_model_options(p)
    add_ablation_options(p)
    add_quantization_options(p, flag=False)
    p.set_defaults(func=cmd_detect_or_audit)

    p = sub.add_parser(
        "demo",
        help="write a tiny checkpoint with a planted super weight, for offline tries",
        description="Write a tiny checkpoint with a planted super weight and an evaluation "
        "text, so the auditor can be tried with no Hub access.",
    )
    p.add_argument("directory", type=Path, metavar="DIR")
    p.add_argument("--family", default="llama", help="the architecture to build (default: llama)")
    p.add_argument("--gguf", action="store_true", help="also write a GGUF copy (llama only)")
    p.set_defaults(func=cmd_demo)
