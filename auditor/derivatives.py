"""A base model's super weights, looked up in its derivatives without downloading them.

Once a base model's super weights are known, two questions about each GGUF quant or fine-tune of it cost a
few kilobytes of range reads (`auditor.ranges`), not a download and a forward pass:

- `check_gguf`: did this quant keep the super weight? The GGUF header locates the block holding
  `ffn_down[row, col]` of the layer; the row's blocks are read and dequantized (`auditor.gguf_read`), and
  the stored value is compared with the base model's: relative error, sign, zeroed (under 5 % of it) or
  clipped (the same sign, under 75 %), next to the row's other largest values (a quant that clips every
  outlier shows them cut alike).
- `screen`: did this fine-tune keep the base model's value? The safetensors header locates the tensor
  (through `model.safetensors.index.json` when sharded); the element and its neighbours are read
  (`auditor.safetensors_read`). Within INHERITED_WITHIN of the base value it is `inherited`, else `changed`.
  A screen is not a verdict: nothing was ablated. It says what to audit.

The base model's super weights come from the index (its newest measured record), or from detection on a
local checkpoint given as the base.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from . import gguf_read, hub, safetensors_read
from .errors import UsageError
from .ids import is_model_id
from .models import Count, Model
from .ranges import LocalReader, RangeReader
from .records import SuperWeight
from .source import SHARD_INDEX, SINGLE_FILE

if TYPE_CHECKING:
    from .index.entries import ScreenedFile, ScreenedRecord

INHERITED_WITHIN = 0.01
"""A fine-tune's weight within 1 % of the base value counts as inherited: fine-tuning moves weights by far
less than a super weight's size, and a changed super weight changes by far more."""
REMOTE_FIRST_CHUNK = 2 << 20
"""First read of a remote GGUF header: 2 MiB holds a 50k-vocabulary header in one round trip (for a file
under 32 MiB, a sixteenth of it, and never less than a local first read)."""
State = Literal["intact", "clipped", "zeroed", "sign_flipped", "not_finite"]


@dataclass(frozen=True)
class Base:
    """The base model whose super weights are looked for: its name, commit (None for a local checkpoint)
    and weights (with their values)."""

    model: str
    revision: str | None
    weights: list[SuperWeight]

    @classmethod
    def of(cls, entry) -> Base | None:
        """An index entry's newest measured record as a base, if it has one."""
        from .index import MeasuredRecord

        measured = [r for r in entry.records if isinstance(r, MeasuredRecord)]
        return cls(entry.model, measured[-1].revision, list(measured[-1].super_weights)) if measured else None


def base_from(name: str, *, index_root: str | Path | None = None, local: bool = True) -> Base:
    """The base model's super weights: by detection on a local checkpoint (`name` a directory or .gguf file;
    unless `local` is False, for a name read from an untrusted file), else from its newest measured record
    in the index.

    Raises:
        UsageError: neither, or the index holds no measured record with values for it.
    """
    from .index import load_index

    if local and Path(name).exists():
        from .detect import detect
        from .loading import load
        from .source import resolve

        loaded = load(resolve(name), device="cpu")
        detection = detect(loaded.model, loaded.tokenizer, progress=False)
        return Base(name, None, detection.super_weights)
    entry = load_index(index_root).get(name)
    base = Base.of(entry) if entry else None
    if base is None:
        raise UsageError(f"{name} is neither a local checkpoint nor a model the index has audited: audit it first")
    return base


def looked_for(base: Base) -> None:
    """Refuse a base with nothing to compare: no super weights, or one without its value (a record that
    gives only coordinates)."""
    if not base.weights:
        raise UsageError(f"{base.model} has no super weights to look for")
    for w in base.weights:
        if w.value is None or not math.isfinite(w.value) or w.value == 0:
            raise UsageError(f"{base.model}'s record gives no value for layer {w.layer} [{w.row}, {w.col}]: audit it")


def open_file(target: str, filename: str | None = None, *, revision: str | None = None) -> RangeReader:
    """A local file, or a Hub repo's file read by range requests."""
    if filename is None:
        return LocalReader(target)
    return hub.RemoteFile(target, filename, revision=revision)


def first_chunk(reader: RangeReader, local: int) -> int:
    """How much of a GGUF header to read first, whose length is known only by parsing it: round trips cost
    more than bytes over HTTP, not on disk."""
    if not isinstance(reader, hub.RemoteFile):
        return local
    return min(REMOTE_FIRST_CHUNK, max(local, reader.size // 16))


# -- GGUF quants -------------------------------------------------------------------------------------------


class GgufWeight(Model):
    """One super weight of the base model as a GGUF file stores it."""

    layer: Count
    state: State
    stored: gguf_read.StoredWeight


class GgufCheck(Model):
    """What one GGUF file (or split model) holds at the base model's super weights, and what finding out
    cost (over all its shards)."""

    file: str
    """The file, or the first shard of a split model."""
    size: Count
    base: str
    header_bytes: Count
    bytes_read: Count
    reads: Count
    weights: list[GgufWeight]
    shards: Count = 1

    @property
    def intact(self) -> bool:
        return all(w.state == "intact" for w in self.weights)


def state_of(stored: gguf_read.StoredWeight) -> State:
    if not math.isfinite(stored.stored):  # inf or NaN: the weight is gone, whatever its sign
        return "not_finite"
    if stored.zeroed:
        return "zeroed"
    if not stored.sign_kept:
        return "sign_flipped"
    return "clipped" if stored.clipped else "intact"


def gguf_header(reader: RangeReader) -> gguf_read.GgufHeader:
    return gguf_read.read_header(reader, first_chunk=first_chunk(reader, gguf_read.FIRST_CHUNK))


def check_gguf(
    reader: RangeReader, base: Base, header: gguf_read.GgufHeader | None = None, *, shards: Sequence[RangeReader] = ()
) -> GgufCheck:
    """Read each of the base model's super weights from a GGUF file: the header (unless read already, from
    this reader), then one row per weight. `shards`: the other files of a split model (gguf-split's
    NAME-0000K-of-0000N.gguf), whose headers are read too; each weight is read from the file holding it."""
    looked_for(base)
    files = [(reader, header or gguf_header(reader)), *((r, gguf_header(r)) for r in shards)]
    found = []
    for w in base.weights:
        r, h = next(((r, h) for r, h in files if gguf_read.down_tensor(h, w.layer, w.expert)), files[0])
        row = gguf_read.read_weight(r, w.layer, w.row, w.col, expert=w.expert, header=h)
        same_shape(h.name, row.tensor, h.tensors[row.tensor].shape[-2:], base, w)
        stored = gguf_read.compare(row, w.value)
        found.append(GgufWeight(w.layer, state_of(stored), stored))
    return GgufCheck(
        reader.name,
        sum(r.size for r, _ in files),
        base.model,
        sum(h.data_start for _, h in files),
        sum(r.bytes_read for r, _ in files),
        sum(r.reads for r, _ in files),
        found,
        shards=len(files),
    )


SPLIT = re.compile(r"(?P<stem>.+)-(?P<no>\d{5})-of-(?P<count>\d{5})\.gguf")
"""A shard of a model split by llama.cpp's gguf-split, numbered from 1."""


def gguf_groups(names: Iterable[str]) -> list[list[str]]:
    """GGUF file names as they are checked: each file alone, the shards of a split model together (first
    shard first), sorted.

    Raises:
        UsageError: a split model with a shard missing.
    """
    groups: dict[str, list[str]] = {}
    for name in sorted(names):
        m = SPLIT.fullmatch(name)
        groups.setdefault(f"{m['stem']}-of-{m['count']}" if m else name, []).append(name)
    for shards in groups.values():
        m = SPLIT.fullmatch(shards[0])
        wanted = [f"{m['stem']}-{i:05d}-of-{m['count']}.gguf" for i in range(1, int(m["count"]) + 1)] if m else shards
        if shards != wanted:
            raise UsageError(f"{shards[0]}: a split GGUF model with {len(shards)} of its {len(wanted)} files")
    return sorted(groups.values())


def same_shape(file: str, tensor: str, shape: tuple[int, ...], base: Base, w: SuperWeight, *, stored_t=False) -> None:
    """Refuse a file whose matrix is not shaped as the base model's: not a derivative of it (a wrong --base,
    or a card naming the wrong base), whose value at the same coordinates would mean nothing. `stored_t`:
    the file may store it as [in, out] (safetensors of GPT-2's Conv1D, transposed fused experts)."""
    if tuple(shape) not in (tuple(w.shape), tuple(reversed(w.shape)) if stored_t else tuple(w.shape)):
        raise UsageError(
            f"{file}: {tensor} is {' x '.join(map(str, shape))}, but {base.model}'s layer {w.layer} down projection is "
            f"{w.shape[0]} x {w.shape[1]}: not a derivative of it"
        )


# -- safetensors fine-tunes --------------------------------------------------------------------------------


class TunedWeight(Model):
    """One super weight of the base model as a fine-tune's safetensors file stores it."""

    layer: Count
    row: Count
    col: Count
    tensor: str
    file: str
    base: float
    value: float
    change: float
    """value / base - 1: -0.5 is halved, below -1 the sign flipped."""
    state: Literal["inherited", "changed"]
    neighbours: tuple[tuple[Count, float], ...]
    expert: Count | None = None


class FileRead(Model):
    file: str
    size: Count
    bytes_read: Count


class Screen(Model):
    """A fine-tune read at its base model's super weights: not a verdict (nothing was ablated)."""

    model: str
    base: str
    bytes_read: Count
    reads: Count
    weights: list[TunedWeight]
    files: list[FileRead]
    revision: str | None = None
    """The Hub commit read (None for a local directory)."""

    @property
    def verdict(self) -> Literal["inherited", "changed"]:
        return "inherited" if all(w.state == "inherited" for w in self.weights) else "changed"


def screen(model: str, base: Base, *, revision: str | None = None) -> Screen:
    """Read each of the base model's super weights from `model`'s safetensors (a local directory or a Hub
    repo): the index of shards if there is one, each needed file's header, then a few bytes per weight."""
    looked_for(base)
    local = Path(model).is_dir()
    if not local and not is_model_id(model):
        raise UsageError(f"{model}: no such directory, and not a Hub repo id (org/name)")
    if not local and revision is None:  # one commit for the shard index and every file, whatever main does
        revision = hub.model_info(model).sha

    def reader(filename: str) -> RangeReader:
        return LocalReader(Path(model) / filename) if local else open_file(model, filename, revision=revision)

    shards = shard_map(model, local, revision)
    readers: dict[str, tuple[RangeReader, safetensors_read.SafetensorsHeader]] = {}
    found = []
    for w in base.weights:
        if w.tensor is None or w.index is None:
            raise UsageError(f"{base.model}'s record gives no tensor name for layer {w.layer}: audit it again")
        file = shards.get(w.tensor, SINGLE_FILE) if shards is not None else SINGLE_FILE
        if file not in readers:
            r = reader(file)
            # Its first 8 bytes say the header's length: two exact reads over HTTP, no bytes to spare.
            first = 8 if isinstance(r, hub.RemoteFile) else safetensors_read.FIRST_CHUNK
            readers[file] = (r, safetensors_read.read_header(r, first_chunk=first))
        r, header = readers[file]
        if w.tensor in header.tensors:  # (read_element names a missing one)
            same_shape(header.name, w.tensor, header.tensors[w.tensor].shape[-2:], base, w, stored_t=True)
        element = safetensors_read.read_element(r, header, w.tensor, w.index)
        change = element.value / w.value - 1 if math.isfinite(element.value) else math.inf
        state = "inherited" if abs(change) <= INHERITED_WITHIN else "changed"
        found.append(
            TunedWeight(
                w.layer,
                w.row,
                w.col,
                w.tensor,
                file,
                w.value,
                element.value,
                change,
                state,
                element.neighbours,
                expert=w.expert,
            )
        )
    bytes_read = sum(r.bytes_read for r, _ in readers.values())
    reads = sum(r.reads for r, _ in readers.values())
    files = [FileRead(name, r.size, r.bytes_read) for name, (r, _) in readers.items()]
    commit = next((r.revision for r, _ in readers.values() if isinstance(r, hub.RemoteFile)), None)
    return Screen(model, base.model, bytes_read, reads, found, files, commit)


def shard_map(model: str, local: bool, revision: str | None) -> dict[str, str] | None:
    """`model.safetensors.index.json`'s tensor -> file map, or None for a single-file checkpoint."""
    name = SHARD_INDEX
    if local:
        path = Path(model) / name
        if not path.exists():
            return None
    else:
        from huggingface_hub.errors import EntryNotFoundError

        try:
            path = hub.download(model, name, revision=revision)
        except EntryNotFoundError:
            return None
        except Exception as e:
            raise hub.hub_error(e, model, revision) from e
    try:
        weight_map = json.loads(path.read_text(encoding="utf-8"))["weight_map"]
        if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
            raise ValueError
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise UsageError(f"{model}: {name} is not a safetensors index") from e
    return weight_map


# -- as index records --------------------------------------------------------------------------------------


def record_of(revision: str, base: Base, files: list[ScreenedFile]) -> ScreenedRecord:
    """The index record of a screen of a Hub repo at `revision`, against a base model audited in the index."""
    from . import __version__, clock
    from .index.entries import ModelRef, ScreenedRecord

    if base.revision is None:
        raise UsageError(f"{base.model} is a local checkpoint: only a base audited in the index can be recorded")
    return ScreenedRecord(revision, clock.stamp(), __version__, ModelRef(base.model, base.revision), files)


def gguf_file(check: GgufCheck, filename: str) -> ScreenedFile:
    from .index.entries import ScreenedFile, ScreenedWeight

    weights = [
        ScreenedWeight(w.layer, w.stored.row, w.stored.col, w.stored.base, finite(w.stored.stored), w.state,
                       w.stored.expert)
        for w in check.weights
    ]  # fmt: skip
    return ScreenedFile(filename, "gguf", check.size, check.bytes_read, weights, check.weights[0].stored.qtype)


def safetensors_files(result: Screen) -> list[ScreenedFile]:
    from .index.entries import ScreenedFile, ScreenedWeight

    return [
        ScreenedFile(
            f.file,
            "safetensors",
            f.size,
            f.bytes_read,
            [
                ScreenedWeight(w.layer, w.row, w.col, w.base, finite(w.value), w.state, w.expert)
                for w in result.weights
                if w.file == f.file
            ],
        )
        for f in result.files
    ]


def finite(value: float) -> float | None:
    return value if math.isfinite(value) else None
