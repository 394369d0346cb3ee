"""Find every decoder layer's MLP down projection, whatever the architecture.

A down projection maps the MLP's intermediate channels back to the hidden size; a super weight is one
scalar of it. Families name it differently (see KNOWN_DOWN_PROJECTIONS) and store it differently:

- `nn.Linear`: weight [out, in]; the super weight is `weight[row, col]`.
- GPT-2's `Conv1D`: weight stored [in, out]; the same scalar is `weight[col, row]`.
- transformers 5 mixture-of-experts: one `experts` module holding a 3-D `down_proj` parameter
  [expert, out, in] (or [expert, in, out] when `is_transposed`), with no per-expert module to hook.

`DownProjection.matrix(expert)` always gives an [out, in] view, so the rest of the code thinks in the paper's
[row, col] and never about storage. Weights are read and written through `auditor.placement`, so they are
found wherever a spread model keeps them (a GPU, CPU memory, or disk).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, replace
from typing import Literal

import torch
from torch import nn

from .errors import QuantizedModelError, UnsupportedModelError
from .families import KNOWN_DOWN_PROJECTIONS
from .placement import Offloaded, offloaded, read, writable
from .records import WeightRef

Kind = Literal["linear", "conv1d", "experts"]


@dataclass(frozen=True, eq=False)
class DownProjection:
    """One hookable down projection (an experts module counts once and holds `num_experts` matrices)."""

    layer: int
    name: str
    module: nn.Module
    kind: Kind
    num_experts: int | None = None
    where: Offloaded | None = None
    """Where its tensors' values are when the model is spread and this module offloaded."""

    @property
    def attr(self) -> str:
        return "down_proj" if self.kind == "experts" else "weight"

    def tensor(self, attr: str) -> torch.Tensor:
        """The values of one of the module's tensors, wherever they are (a copy when offloaded)."""
        return read(self.module, attr, self.where)

    @property
    def parameter(self) -> torch.Tensor:
        return self.tensor(self.attr)

    @property
    def tensor_name(self) -> str:
        return f"{self.name}.{self.attr}"

    @property
    def transposed(self) -> bool:
        """True when storage is [in, out] rather than [out, in]."""
        return self.kind == "conv1d" or bool(getattr(self.module, "is_transposed", False))

    def view(self, stored: torch.Tensor, expert: int | None = None) -> torch.Tensor:
        """The [out, in] view of the stored tensor (of one expert's matrix): writing to it writes the tensor."""
        w = stored if expert is None else stored[expert]
        return w.T if self.transposed else w

    def shape(self) -> tuple[int, int]:
        """[out, in] of one matrix, without reading its values (an offloaded one's are on disk)."""
        rows, cols = getattr(self.module, self.attr).shape[-2:]  # an experts tensor is [expert, ...]
        return (cols, rows) if self.transposed else (rows, cols)

    def matrix(self, expert: int | None = None) -> torch.Tensor:
        """The weights as an [out, in] view (of a copy, when offloaded: `zeroed` is how to change them)."""
        return self.view(self.parameter, expert)

    def bias(self, expert: int | None = None) -> torch.Tensor | None:
        if self.kind == "experts":
            has = getattr(self.module, "down_proj_bias", None) is not None
            return self.tensor("down_proj_bias")[expert] if has and expert is not None else None
        return self.tensor("bias") if getattr(self.module, "bias", None) is not None else None

    def index(self, row: int, col: int, expert: int | None = None) -> tuple[int, ...]:
        """The scalar's index into `tensor_name` as stored."""
        rc = (col, row) if self.transposed else (row, col)
        return rc if expert is None else (expert, *rc)

    def experts(self) -> list[int | None]:
        return [None] if self.num_experts is None else list(range(self.num_experts))


def decoder_layers(model: nn.Module) -> tuple[str, nn.ModuleList]:
    """The ModuleList of decoder layers: as long as the config's layer count, named like one."""
    config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    n = getattr(config, "num_hidden_layers", None) or getattr(config, "n_layer", None)
    lists = [(name, m) for name, m in model.named_modules() if isinstance(m, nn.ModuleList) and len(m) == n]
    for name, m in lists:
        if name.rsplit(".", 1)[-1] in ("layers", "h", "blocks"):
            return name, m
    if lists:
        return lists[0]
    raise UnsupportedModelError(f"cannot find the {n} decoder layers of {type(model).__name__}")


def classify(module: nn.Module) -> Kind | None:
    down = getattr(module, "down_proj", None)
    if isinstance(down, nn.Parameter) and down.dim() == 3:
        return "experts"
    if type(module).__name__ == "Conv1D" and isinstance(getattr(module, "weight", None), torch.Tensor):
        return "conv1d"
    if isinstance(module, nn.Linear):
        return "linear"
    return None


def make(layer: int, name: str, module: nn.Module) -> DownProjection | None:
    kind = classify(module)
    if kind is None:
        return None
    weight = module.down_proj if kind == "experts" else module.weight
    if not weight.is_floating_point() or weight.element_size() < 2:
        # Quantized storage (fp8 codes with block scales, int8...): the stored numbers are not the weights.
        raise QuantizedModelError(f"{name} stores its weight as {weight.dtype}: quantized weights cannot be audited")
    experts = int(module.down_proj.shape[0]) if kind == "experts" else None
    return DownProjection(layer, name, module, kind, experts)


def find_down_projections(model: nn.Module, module_pattern: str | None = None) -> list[DownProjection]:
    """Every decoder layer's down projection(s), in layer order.

    Args:
        module_pattern: a regular expression matched against full module names (e.g.
            `transformer\\.h\\.\\d+\\.mlp\\.c_proj`) that replaces the built-in table; the layer is the
            number after the decoder-layer list's name, else the first number in the module name.

    Raises:
        UnsupportedModelError: a layer has no known down projection (the message lists what it has).
    """
    prefix, layers = decoder_layers(model)
    found = (
        _by_pattern(model, prefix, module_pattern) if module_pattern is not None else _by_table(model, prefix, layers)
    )
    # A weight is addressed by (layer, expert, row, col): one dense projection and one experts module per layer.
    for layer in sorted({d.layer for d in found}):
        for kind in ("dense", "experts"):
            here = [d.name for d in found if d.layer == layer and (d.kind == "experts") == (kind == "experts")]
            if len(here) > 1:
                raise UnsupportedModelError(
                    f"layer {layer} has {len(here)} {kind} down projections ({', '.join(here)}); "
                    "a --module-pattern must name one per layer"
                )
    return [replace(d, where=offloaded(model, d.name)) for d in found]


def _by_table(model: nn.Module, prefix: str, layers: nn.ModuleList) -> list[DownProjection]:
    found: list[DownProjection] = []
    for i, layer in enumerate(layers):
        modules = dict(layer.named_modules())
        here = [make(i, f"{prefix}.{i}.{rel}", modules[rel]) for rel in KNOWN_DOWN_PROJECTIONS if rel in modules]
        here = [d for d in here if d is not None]
        if not here:
            seen = ", ".join(n for n, m in layer.named_modules() if n and not list(m.children()))
            raise UnsupportedModelError(
                f"no MLP down projection found in layer {i} of {type(model).__name__} "
                f"(its modules: {seen}); pass --module-pattern REGEX to name it"
            )
        found.extend(here)
    return found


def _by_pattern(model: nn.Module, prefix: str, pattern: str) -> list[DownProjection]:
    try:
        regex = re.compile(pattern)
    except re.error as e:
        raise UnsupportedModelError(f"--module-pattern {pattern!r} is not a valid regex: {e}") from e
    layer_of = re.compile(rf"^{re.escape(prefix)}\.(\d+)\.")
    found = []
    for name, module in model.named_modules():
        if not regex.fullmatch(name):
            continue
        m = layer_of.match(name) or re.search(r"\.(\d+)\.", name)
        d = make(int(m.group(1)), name, module) if m else None
        if d is None:
            raise UnsupportedModelError(
                f"--module-pattern matched {name} ({type(module).__name__}), which is not a Linear, Conv1D "
                "or experts module inside a numbered layer"
            )
        found.append(d)
    if not found:
        raise UnsupportedModelError(f"--module-pattern {pattern!r} matches no module of {type(model).__name__}")
    return sorted(found, key=lambda d: d.layer)


def projection_for(projections: list[DownProjection], layer: int, expert: int | None) -> DownProjection:
    """The down projection holding a weight: the experts module when `expert` is set, else the dense one."""
    for p in projections:
        if p.layer == layer and (p.kind == "experts") == (expert is not None):
            return p
    raise KeyError(f"layer {layer} has no {'experts' if expert is not None else 'dense'} down projection")


@contextmanager
def zeroed(projections: list[DownProjection], refs: Iterable[WeightRef]) -> Iterator[None]:
    """Zero some weights for the duration of a block; restore them exactly, whatever happens."""
    saved: list[tuple[torch.Tensor, int, int, torch.Tensor]] = []
    with ExitStack() as stores:
        try:
            with torch.no_grad():
                for ref in refs:
                    p = projection_for(projections, ref.layer, ref.expert)
                    m = p.view(stores.enter_context(writable(p.module, p.attr, p.where)), ref.expert)
                    saved.append((m, ref.row, ref.col, m[ref.row, ref.col].clone()))
                    m[ref.row, ref.col] = 0
            yield
        finally:
            with torch.no_grad():
                for m, row, col, value in reversed(saved):
                    m[row, col] = value
