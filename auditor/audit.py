"""One audit, start to finish: source -> loaded model -> detection -> ablation -> `AuditResult`.

    from auditor.audit import AuditSettings, audit
    result = audit("huggyllama/llama-7b", settings=AuditSettings(eval_text="wiki.test.raw"))
    result.ablation.verdict  # "confirmed"

Each stage is usable alone: `auditor.source.resolve`, `auditor.loading.load`, `auditor.detect.detect`,
`auditor.ablation.ablate`.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from . import __version__, clock, evaltext, loading, quantimpact, source
from .ablation import ablate
from .detect import detect
from .errors import OutOfMemoryError
from .records import Ablation, AuditResult, Detection, Environment, WeightRef, judged
from .settings import DEFAULT_SEQ_LEN, AuditSettings


def max_positions(config) -> int:
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    for name in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        if isinstance(getattr(text, name, None), int):
            return getattr(text, name)
    return DEFAULT_SEQ_LEN


def audit(
    model: str,
    *,
    revision: str | None = None,
    settings: AuditSettings | None = None,
    ablation: bool = True,
    cache_dir: str | Path | None = None,
    progress: bool = True,
) -> AuditResult:
    """Detect a model's super weights and, unless `ablation=False`, confirm them by ablation, then measure
    what round-to-nearest quantization does with and without them kept (`settings.quantize_impact`).

    Raises:
        auditor.errors.AuditorError subclasses, each with a message meant for the user.
    """
    settings = settings or AuditSettings()
    started = time.monotonic()
    # The eval text first: a missing file should fail before a multi-gigabyte download.
    text = evaltext.load(settings.eval_text) if ablation else None
    checkpoint = source.resolve(model, revision=revision, cache_dir=cache_dir)
    loaded = loading.load(
        checkpoint,
        device=settings.device,
        dtype=settings.dtype,
        offload=settings.offload,
        max_memory=settings.max_memory,
    )
    try:
        detection = detect(
            loaded.model,
            loaded.tokenizer,
            prompt=settings.prompt,
            min_output_ratio=settings.min_output_ratio,
            min_input_ratio=settings.min_input_ratio,
            min_share=settings.min_share,
            max_super_weights=settings.max_super_weights,
            module_pattern=settings.module_pattern,
            progress=progress,
        )
        result = quantization = None
        if text is not None and measures_quantization(settings, loaded.info.device):
            quantimpact.refuse_offloaded(loaded.model)  # now, not after hours of ablation
        if text is not None:
            windows = evaltext.windows(
                loaded.tokenizer,
                text,
                seq_len=min(settings.seq_len, max_positions(loaded.model.config)),
                max_tokens=settings.max_tokens,
            )
            result = ablate(
                loaded.model,
                detection,
                windows,
                eval_name=text.name,
                eval_sha256=text.sha256,
                min_damage=settings.min_damage,
                min_margin=settings.min_margin,
                progress=progress,
            )
            if measures_quantization(settings, loaded.info.device):
                quantization = quantimpact.measure(
                    loaded.model,
                    windows,
                    evaltext.calibration(loaded.tokenizer, text, windows, tokens=windows.shape[1]),
                    proven(detection, result),
                    perplexity_original=result.perplexity_original,
                    schemes=settings.quant_schemes,
                    include=settings.quant_include,
                    module_pattern=settings.module_pattern,
                    progress=progress,
                )
    except torch.OutOfMemoryError as e:
        raise OutOfMemoryError(f"{model} ran out of {loaded.info.device} memory; try a shorter --seq-len") from e
    environment = Environment(
        tool_version=__version__,
        torch=str(torch.__version__),
        transformers=_transformers_version(),
        hardware=loading.hardware(loaded.info.device),
        created_at=clock.stamp(),
        elapsed_s=round(time.monotonic() - started, 3),
    )
    return AuditResult(loaded.info, detection, result, environment, quantization)


def measures_quantization(settings: AuditSettings, device: str) -> bool:
    """`on`, or `gpu` on a model wholly on GPUs (one offloaded to CPU or disk would take hours)."""
    on_gpus = device.startswith("cuda") and "cpu" not in device and "disk" not in device
    return settings.quantize_impact == "on" or (settings.quantize_impact == "gpu" and on_gpus)


def proven(detection: Detection, ablation: Ablation) -> list[WeightRef]:
    """The super weights the ablation proved (none when it confirmed none)."""
    if ablation.verdict != "confirmed":
        return []
    return [w.ref() for w in judged(detection.super_weights, ablation)[0]]


def _transformers_version() -> str:
    import transformers

    return transformers.__version__
