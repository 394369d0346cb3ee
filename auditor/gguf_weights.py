"""GGUF weights loaded straight into the model in the target dtype, a slab of rows at a time.

transformers' own GGUF reader dequantizes every tensor into one state dict before the model takes them over,
so at the peak the weights exist twice. Here the model is built with empty parameters (accelerate's
`init_empty_weights`), and each tensor is dequantized a slab of rows at a time into its own parameter: the
peak is the model plus one slab. Tensor names and the fix-ups some architectures need (llama's q/k
permutation, gemma's norm offset) are transformers' own (`modeling_gguf_pytorch_utils`), so the weights are
bit for bit those transformers loads. Architectures whose fix-ups split or join tensors (fused MoE experts,
bloom's qkv) are left to transformers' reader: `load_model` returns None for them.
"""

from __future__ import annotations

import logging
import mmap
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm

from .errors import CorruptCheckpointError

log = logging.getLogger(__name__)

SLAB_BYTES = 32 << 20
"""Float32 bytes dequantized at once."""


def load_model(path: Path, config, *, dtype: torch.dtype, device: torch.device, attn: str):
    """The causal LM of `config` with the GGUF file's weights, or None when transformers must load it.

    Raises:
        CorruptCheckpointError: a weight the model needs is not in the file, or is shaped differently.
    """
    from accelerate import init_empty_weights
    from gguf import GGUFReader
    from transformers import AutoModelForCausalLM
    from transformers import modeling_gguf_pytorch_utils as hf_gguf
    from transformers.utils import logging as hf_logging

    reader = GGUFReader(path)
    arch = hf_gguf.read_field(reader, "general.architecture")[0]
    kind = hf_gguf.TENSOR_PROCESSORS.get(arch, hf_gguf.TensorProcessor)
    if kind not in (hf_gguf.TensorProcessor, hf_gguf.LlamaTensorProcessor, hf_gguf.Gemma2TensorProcessor):
        return None
    reader.fields.clear()  # the parsed metadata (a vocabulary's worth of small arrays): config has it all
    with init_empty_weights(include_buffers=False):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype, attn_implementation=attn, trust_remote_code=False)
    processor = kind(config=config.to_dict())
    names = hf_gguf.get_gguf_hf_weights_map(model, processor)
    params = dict(model.named_parameters())
    # Shown when transformers shows its loading bar: `--quiet` (cli.common.quiet_libraries) turns both off.
    shown = hf_logging.is_progress_bar_enabled()
    for tensor in tqdm(reader.tensors, desc="loading GGUF weights", unit="tensor", disable=not shown, leave=False):
        name = names.get(tensor.name)
        if name not in params:
            log.debug("GGUF tensor %s is not a weight of %s", tensor.name, type(model).__name__)
            continue
        empty = params[name]
        weight = torch.empty(empty.shape, dtype=empty.dtype, device=device)
        fill(weight, tensor, processor, name)
        release(reader.data, tensor.data_offset, tensor.n_bytes)
        module, _, attr = name.rpartition(".")
        model.get_submodule(module)._parameters[attr] = nn.Parameter(weight, requires_grad=False)
    model.tie_weights()
    missing = [name for name, p in model.named_parameters() if p.is_meta]
    if missing:
        raise CorruptCheckpointError(
            f"{path.name}: {len(missing)} weight(s) of {type(model).__name__} are not in the file "
            f"({', '.join(missing[:3])}): they would stay random, so nothing can be audited"
        )
    return model.to(device)


def fill(weight: torch.Tensor, tensor, processor, name: str) -> None:
    """Dequantize a GGUF tensor into `weight`: by slabs of rows where transformers' fix-up for it leaves
    the values alone, whole otherwise (the fix-ups that change values touch small tensors)."""
    from gguf import dequantize

    data = tensor.data
    rows = data.shape[0] if data.ndim >= 2 else 1
    step = max(1, SLAB_BYTES // max(1, 4 * weight.numel() // rows))
    if data.ndim >= 2 and rows > step:
        for start in range(0, rows, step):
            slab = dequantize(data[start : start + step], tensor.tensor_type)
            if not untouched(processor, slab, tensor.name):
                break
            target = weight.view(rows, -1)[start : start + step]
            target.copy_(checked(slab, target.shape, name))
        else:
            return
    whole = processor.process(weights=dequantize(data, tensor.tensor_type), name=tensor.name).weights
    weight.copy_(checked(whole, weight.shape, name))


def untouched(processor, slab, name: str) -> bool:
    """Whether transformers' fix-up leaves a slab of this tensor as it is (it fails, or changes it, when it
    needs the whole tensor: a permutation of its rows, say)."""
    try:
        return processor.process(weights=slab, name=name).weights is slab
    except ValueError:
        return False


def release(mapped, offset: int, length: int) -> None:
    """Drop a tensor's pages of the mapped file from this process once it is loaded: otherwise every page
    read stays resident until the file is closed, a second (quantized) copy of the model."""
    mapping = getattr(mapped, "_mmap", None)  # numpy's memmap keeps its mmap here; without it, keep the pages
    if mapping is not None and hasattr(mmap, "MADV_DONTNEED"):
        start = offset // mmap.PAGESIZE * mmap.PAGESIZE
        mapping.madvise(mmap.MADV_DONTNEED, start, offset + length - start)


def checked(array, shape: torch.Size, name: str) -> torch.Tensor:
    # Float tensors dequantize to views of the read-only mapped file: a slab's copy, which torch may own.
    values = torch.from_numpy(array if array.flags.writeable else array.copy())
    if values.numel() != shape.numel():
        raise CorruptCheckpointError(f"GGUF tensor for {name} holds {values.numel():,} values, not {shape.numel():,}")
    return values.view(shape)
