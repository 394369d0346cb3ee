"""Load a checked `Checkpoint` into a transformers causal LM and its tokenizer.

Never runs checkpoint code: `trust_remote_code=False`, safetensors only (`use_safetensors=True`), and GGUF
files are dequantized straight into the model (`gguf_weights`; transformers' reader for the architectures
it does not stream). Every weight the model class expects must come from
the checkpoint: a weight left at its random initialisation (a repo whose `auto_map` code differs from
transformers' class of the same type, say) would make the audit meaningless.
"""

from __future__ import annotations

import logging
import math
import os
import platform
import re
import tempfile
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch

from . import gguf_weights, placement, settings
from .errors import CorruptCheckpointError, OutOfMemoryError, UnsupportedModelError, UsageError, first_line
from .records import ModelInfo
from .source import Checkpoint

log = logging.getLogger(__name__)

DTYPES = {name: getattr(torch, name) for name in settings.DTYPES if name != "auto"}


@dataclass
class LoadedModel:
    model: Any
    """A transformers `PreTrainedModel` in eval mode."""
    tokenizer: Any
    checkpoint: Checkpoint
    info: ModelInfo


def pick_device(device: str = "auto") -> torch.device:
    """`auto` is CUDA when present, else CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError("--device cuda asked for, but no CUDA device is available")
    if device != "cpu" and not device.startswith("cuda"):
        raise UsageError(f"--device must be auto, cpu or cuda, not {device!r}")
    return torch.device(device)


def pick_dtype(dtype: str, device: torch.device, checkpoint: Checkpoint) -> torch.dtype:
    """`auto` keeps the checkpoint's dtype on GPU (no float32 copy of a bf16 model), float32 on CPU."""
    if dtype != "auto":
        if dtype not in DTYPES:
            raise UsageError(f"--dtype must be auto or one of {', '.join(DTYPES)}, not {dtype!r}")
        return DTYPES[dtype]
    if device.type == "cpu":
        return torch.float32
    declared = checkpoint.config.get("dtype") or checkpoint.config.get("torch_dtype")
    # GGUF weights are dequantized anyway; bfloat16 keeps the range super activations need.
    return DTYPES.get(str(declared), torch.bfloat16 if checkpoint.source == "gguf" else torch.float32)


def load(
    checkpoint: Checkpoint,
    *,
    device: str = "auto",
    dtype: str = "auto",
    offload: bool = False,
    max_memory: dict[str, str] | None = None,
) -> LoadedModel:
    """Load model and tokenizer onto the device, in eval mode with gradients off.

    `auto` spreads the model over every GPU when there are several; `offload` lets what does not fit go to
    CPU memory, then disk; `max_memory` replaces the measured budgets (`auditor.placement.plan`).

    Raises:
        CorruptCheckpointError: the files do not load; OutOfMemoryError: the model does not fit.
    """
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    pick_device(device)  # refuses cuda without CUDA
    where = placement.plan(device, offload=offload, max_memory=max_memory)
    dev = where.device
    torch_dtype = pick_dtype(dtype, dev, checkpoint)
    # Deleted with the model, or when loading fails (a TemporaryDirectory cleans up when collected).
    offload_dir = tempfile.TemporaryDirectory(prefix="superweight-offload-") if where.offload else None
    kwargs: dict[str, Any] = {"trust_remote_code": False}
    if checkpoint.gguf_file:
        kwargs["gguf_file"] = checkpoint.gguf_file
    try:
        tokenizer = AutoTokenizer.from_pretrained(checkpoint.path, **kwargs)
        config = AutoConfig.from_pretrained(checkpoint.path, **kwargs)
        config._attn_implementation = None  # see below: the checkpoint does not get to choose
        load = partial(
            AutoModelForCausalLM.from_pretrained,
            checkpoint.path,
            config=config,
            dtype=torch_dtype,
            **spread_kwargs(where, offload_dir and offload_dir.name),
            output_loading_info=True,
            **({} if checkpoint.gguf_file else {"use_safetensors": True}),
            **kwargs,
        )
        if checkpoint.gguf_file and not where.spread:  # a spread GGUF model goes through transformers' reader
            streamed = partial(gguf_weights.load_model, Path(checkpoint.path) / checkpoint.gguf_file, config)
            load = partial(stream_or_load, streamed, load, dtype=torch_dtype, device=dev)
        # The attention kernel is ours to choose, not the checkpoint's config (which may name a kernel to
        # download, or one that is not installed): SDPA, or eager for models that do not support it.
        try:
            model, loading = load(attn_implementation="sdpa")
        except ValueError as e:
            if "attn" not in str(e).lower() and "attention" not in str(e).lower():
                raise
            model, loading = load(attn_implementation="eager")
    except torch.OutOfMemoryError as e:
        raise OutOfMemoryError(f"{checkpoint.model} does not fit in {dev} memory at {torch_dtype}") from e
    except ValueError as e:
        if where.spread and not where.offload and "offload" in str(e).lower():  # it would need disk
            raise OutOfMemoryError(f"{checkpoint.model} does not fit on {budget_text(where)}; {OFFLOAD_HINT}") from e
        raise CorruptCheckpointError(f"could not load {checkpoint.model}: {first_line(e)}") from e
    except ImportError as e:
        raise UnsupportedModelError(f"{checkpoint.model} needs a package that is not installed: {first_line(e)}") from e
    except (OSError, KeyError, RuntimeError, TypeError) as e:
        raise CorruptCheckpointError(f"could not load {checkpoint.model}: {first_line(e)}") from e
    absent = sorted(loading["missing_keys"]) + sorted(key for key, *_ in loading["mismatched_keys"])
    if absent:
        raise CorruptCheckpointError(
            f"{checkpoint.model}: {len(absent)} weight(s) of {type(model).__name__} are missing from the checkpoint "
            f"or shaped differently ({', '.join(absent[:3])}): they would stay random, so nothing can be audited"
        )
    # A tensor the model does not take (a config that claims fewer layers than the files hold, say) would be
    # dropped silently, and its super weights with it. Old checkpoints saved RoPE's frequency buffer.
    unused = sorted(k for k in loading["unexpected_keys"] if not k.endswith("rotary_emb.inv_freq"))
    if unused:
        raise CorruptCheckpointError(
            f"{checkpoint.model}: {len(unused)} tensor(s) of the checkpoint are not used by {type(model).__name__} "
            f"as its config describes it ({', '.join(unused[:3])}): the config and the weights disagree"
        )
    placed = getattr(model, "hf_device_map", None) if where.spread else None
    if placed and not where.offload and {"cpu", "disk"} & set(map(str, placed.values())):
        raise OutOfMemoryError(f"{checkpoint.model} does not fit on {budget_text(where)}; {OFFLOAD_HINT}")
    model._superweight_offload_dir = offload_dir
    check_weights(model, tokenizer, checkpoint.model)
    model.eval().requires_grad_(False)
    if dev.type == "cpu" and not where.spread:
        model.to(dev)
    config = model.config
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    info = ModelInfo(
        model=checkpoint.model,
        loaded_from=checkpoint.source,
        revision=checkpoint.revision,
        architecture=type(model).__name__,
        model_type=str(text.model_type),
        num_layers=int(getattr(text, "num_hidden_layers", 0) or getattr(text, "n_layer", 0)),
        num_parameters=sum(p.numel() for p in model.parameters()),
        dtype=str(torch_dtype).removeprefix("torch."),
        device=placement.describe(placed, dev),
        weights_sha256=checkpoint.weights_sha256,
    )
    return LoadedModel(model=model, tokenizer=tokenizer, checkpoint=checkpoint, info=info)


OFFLOAD_HINT = "--offload lets the rest go to CPU memory and disk"


def spread_kwargs(where: placement.Plan, folder: str | None) -> dict[str, Any]:
    """`from_pretrained`'s placement arguments: one device, or a device map within the plan's budgets, with
    `folder` for weights that must be rewritten to disk (those stored in another dtype)."""
    if not where.spread:
        return {"device_map": str(where.device) if where.device.type == "cuda" else None}
    return {"device_map": "auto", "max_memory": where.max_memory, "offload_folder": folder}


def budget_text(where: placement.Plan) -> str:
    """The budgets of a spread model, for a message: `cuda:0 70.0 GiB, cuda:1 70.0 GiB`."""
    sizes = (f"{'cuda:' if isinstance(k, int) else ''}{k} {v / 2**30:.1f} GiB" for k, v in where.max_memory.items())
    return f"the memory budget ({', '.join(sizes)})"


def stream_or_load(streamed, load, *, attn_implementation: str, dtype: torch.dtype, device: torch.device):
    """A GGUF file's model by `gguf_weights` (one copy of the weights at the peak), or by transformers'
    reader for the architectures that one does not stream."""
    model = streamed(dtype=dtype, device=device, attn=attn_implementation)
    if model is None:
        return load(attn_implementation=attn_implementation)
    return model, {"missing_keys": [], "mismatched_keys": [], "unexpected_keys": []}


def check_weights(model, tokenizer, name: str) -> None:
    """Refuse a model that cannot be audited meaningfully: weights that are inf or NaN, or a tokenizer whose
    vocabulary reaches beyond the embedding (its ids would index past the end).

    Raises:
        CorruptCheckpointError: naming the tensor, or both sizes.
    """
    rows = model.get_input_embeddings().weight.shape[0]
    ids = getattr(tokenizer, "vocab_size", None) or len(tokenizer)  # its vocabulary, not tokens added after
    if ids > rows:
        raise CorruptCheckpointError(
            f"{name}: the tokenizer has {ids:,} ids but the model's embedding only {rows:,} rows "
            "(vocab_size in config.json is too small for this tokenizer)"
        )
    for key, tensor in placement.weights(model):
        # The extremes, not isfinite(): a reduction allocates nothing the size of the tensor (isfinite took
        # two temporaries, 1.5x a float32 embedding, at the load's peak), and a NaN anywhere makes them NaN.
        extremes = torch.aminmax(tensor.detach()) if tensor.is_floating_point() and tensor.numel() else ()
        if not all(map(math.isfinite, extremes)):
            raise CorruptCheckpointError(f"{name}: weight {key} holds inf or NaN values: the checkpoint is damaged")


def hardware(device: str) -> str:
    """A short description of the machine the audit ran on, for the record (`device` as `placement.describe`
    writes it: `cuda:0`, `cuda:0-3+cpu`)."""
    if device.startswith("cuda") and torch.cuda.is_available():
        first, last = re.match(r"cuda(?::(\d+))?(?:-(\d+))?", device).groups()
        count = int(last) - int(first) + 1 if last else max(1, device.count("cuda"))
        name = torch.cuda.get_device_name(int(first or 0))
        return f"{f'{count} x ' if count > 1 else ''}{name} (CUDA {torch.version.cuda})"
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), cpu)
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores (CPU)"
