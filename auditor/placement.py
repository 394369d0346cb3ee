"""Where a model's weights live: one device, or spread over GPUs, CPU memory and disk, and how to read and
write a weight wherever it is.

`--device auto` spreads a model over every GPU this process sees (`device_map="auto"` with a memory budget
per device), and `--offload` lets what does not fit go to CPU memory, then to disk. A spread model runs
through accelerate's hooks: a module offloaded to CPU or disk holds its weights on the `meta` device between
calls, and their values sit in its hook's `weights_map` (CPU tensors, or safetensors read on each call).
So a super weight is read from there (`read`), and zeroed there (`writable`): the hook loads the changed
value on the next call.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .settings import memory_key, parse_size

GPU_SHARE = 0.8
"""Of a GPU's free memory, the share its weights may take: the rest is for the audit's activations (the
windows of a perplexity pass take a quarter of what is free after loading, `scoring.windows_per_forward`)."""
CPU_SHARE = 0.8
"""Of the CPU memory available, the share offloaded weights may take."""


@dataclass(frozen=True)
class Plan:
    """How to load: `device_map` and `max_memory` for `from_pretrained`, or one device when not spread."""

    device: torch.device
    """The device the model runs on, or where its inputs go first when spread."""
    max_memory: dict[int | str, int] | None = None
    """Set when the model is spread: a budget per GPU index and for `cpu`; disk is used when `offload`."""
    offload: bool = False

    @property
    def spread(self) -> bool:
        return self.max_memory is not None


def plan(
    device: str,
    *,
    offload: bool = False,
    max_memory: Mapping[str, str] | None = None,
    gpus_free: list[int] | None = None,
    cpu_free: int | None = None,
) -> Plan:
    """Where to load a model: one device, or spread (`auto` over several GPUs; any device with `offload`).

    Args:
        device: auto, cpu, cuda or cuda:N (checked before).
        max_memory: budgets that replace the measured ones (`{"0": "70GiB", "cpu": "200GiB"}`).
        gpus_free: free bytes of each GPU (default: measured); cpu_free: available CPU memory (default:
            measured). The defaults budget GPU_SHARE and CPU_SHARE of them.
    """
    if gpus_free is None:
        gpus_free = [torch.cuda.mem_get_info(i)[0] for i in range(torch.cuda.device_count())]
    if device == "auto":
        gpus = list(range(len(gpus_free)))
    elif device.startswith("cuda"):
        gpus = [int(device.partition(":")[2] or 0)]
    else:
        gpus = []
    main = torch.device(f"cuda:{gpus[0]}" if gpus else "cpu")
    if len(gpus) <= 1 and not offload:
        return Plan(main)
    budget: dict[int | str, int] = {i: int(gpus_free[i] * GPU_SHARE) for i in gpus if i < len(gpus_free)}
    if offload or not gpus:
        if cpu_free is None:
            import psutil  # accelerate's dependency, so present wherever a model is spread

            cpu_free = psutil.virtual_memory().available
        budget["cpu"] = int(cpu_free * CPU_SHARE)
    for key, size in (max_memory or {}).items():
        budget[memory_key(key)] = parse_size(size)
    return Plan(main, budget, offload)


def describe(device_map: Mapping[str, Any] | None, default: torch.device) -> str:
    """Where a model's modules went, in short: `cuda:0`, `cuda:0-3`, `cuda:0+cpu+disk`, `cpu+disk`."""
    if not device_map:
        return str(default)
    places = set(device_map.values())
    gpus = sorted(p if isinstance(p, int) else torch.device(p).index or 0 for p in places if _is_gpu(p))
    parts = []
    if gpus:
        contiguous = gpus == list(range(gpus[0], gpus[-1] + 1))
        parts.append(
            f"cuda:{gpus[0]}-{gpus[-1]}" if len(gpus) > 2 and contiguous else "+".join(f"cuda:{g}" for g in gpus)
        )
    parts += [p for p in ("cpu", "disk") if p in places]
    return "+".join(parts)


def _is_gpu(place: Any) -> bool:
    return isinstance(place, int) or (isinstance(place, (str, torch.device)) and str(place).startswith("cuda"))


# -- reading and writing weights wherever they are ------------------------------------------------------


@dataclass(frozen=True)
class Offloaded:
    """Where the values of an offloaded module's tensors are: its hook's weights map, and its execution device."""

    weights_map: Mapping[str, torch.Tensor]
    prefix: str
    """The module's tensor names relative to the hooked module ('' when the hook is on the module itself)."""
    device: torch.device


def hooks_of(module: nn.Module) -> list[Any]:
    """The accelerate hooks on a module (a `SequentialHook` holds several)."""
    hook = getattr(module, "_hf_hook", None)
    return [] if hook is None else list(getattr(hook, "hooks", [hook]))


def offloaded(model: nn.Module, name: str) -> Offloaded | None:
    """How to reach the weights of module `name` when a hook offloads them (it or one of its parents), or None
    when they are ordinary parameters."""
    parts = name.split(".") if name else []
    for i in range(len(parts), -1, -1):
        holder = model.get_submodule(".".join(parts[:i]))
        for hook in hooks_of(holder):
            if getattr(hook, "offload", False) and getattr(hook, "weights_map", None) is not None:
                prefix = "".join(f"{p}." for p in parts[i:])
                return Offloaded(hook.weights_map, prefix, torch.device(hook.execution_device))
    return None


def read(module: nn.Module, attr: str, where: Offloaded | None) -> torch.Tensor:
    """The values of `module.attr`: the tensor itself, or, offloaded, a copy on the module's execution device."""
    tensor = getattr(module, attr)
    if where is None or not tensor.is_meta:
        return tensor
    return where.weights_map[where.prefix + attr].to(where.device)


@contextmanager
def writable(module: nn.Module, attr: str, where: Offloaded | None) -> Iterator[torch.Tensor]:
    """`module.attr` to write to for the duration of a block, so that the model computes with what is written.

    An offloaded tensor read from disk is a fresh copy at each call: a copy is put in front of the file in
    accelerate's loader (its `state_dict` is looked up first) and taken away after, so the file is never
    written. One offloaded to CPU memory is written in place, like an ordinary parameter."""
    tensor = getattr(module, attr)
    if where is None or not tensor.is_meta:
        yield tensor
        return
    store, key = where.weights_map, where.prefix + attr
    while hasattr(store, "dataset") and hasattr(store, "prefix"):  # PrefixedDataset over the loader
        store, key = store.dataset, store.prefix + key
    values = getattr(store, "state_dict", store)
    if key in values:
        yield values[key]
        return
    values[key] = store[key].clone()
    try:
        yield values[key]
    finally:
        del values[key]


def input_device(model: nn.Module) -> torch.device:
    """Where a model's inputs go: its hooks' execution device when spread, else its parameters' device."""
    for module in model.modules():
        for hook in hooks_of(module):
            if getattr(hook, "execution_device", None) is not None:
                return torch.device(hook.execution_device)
    return next(model.parameters()).device


def weights(model: nn.Module) -> Iterator[tuple[str, torch.Tensor]]:
    """Every parameter by name, with its values (read from the offload store where it is offloaded)."""
    for module_name, module in model.named_modules():
        where = None
        for attr, tensor in module.named_parameters(recurse=False):
            if tensor.is_meta and where is None:
                where = offloaded(model, module_name)
            yield (f"{module_name}.{attr}" if module_name else attr), read(module, attr, where)
