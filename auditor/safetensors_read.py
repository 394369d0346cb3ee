"""What a safetensors file stores at a weight's index, from its header and a few bytes around the weight.

A fine-tune of an audited model keeps or moves its super weights, and telling which takes one number per
weight and file: the header (8 bytes of length N, then N bytes of JSON giving each tensor's dtype, shape and
data offsets) and the element's bytes, with a couple of neighbours for context. Both come through a
`RangeReader`, so a Hub file answers in two or three small reads. A sharded checkpoint is resolved by the
caller (`model.safetensors.index.json` names each tensor's shard): this reads one file.

The header is untrusted input. Its length is bounded (`MAX_HEADER` and the file's size) before it is read,
its brackets before it is parsed, and every tensor's dtype, shape and offsets are checked the way the
safetensors library checks them (known dtype, size = elements x item size, tensors packed back to back
filling the data section) before any of them is used; any problem is one `SafetensorsHeaderError` naming
the file.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from .errors import CorruptCheckpointError, UnsupportedModelError, UsageError, first_line
from .models import Count, Model
from .ranges import Prefix, RangeReader, printable, read_exactly

FIRST_CHUNK = 64 << 10
"""The first read: the length and, for most files (a shard of a few hundred tensors), the whole header."""
MAX_HEADER = 16 << 20
"""The most header we parse. JSON parsing builds up to ~25 bytes of objects per byte of text before anything
can be checked (a hostile 100 MB header, the safetensors library's own limit, took 2.6 GB); real headers are
far smaller (tens of kB for a shard of a few hundred tensors; 16 MiB would list ~150,000). A model whose
header is larger is not screened, and is audited as any other."""
MAX_CONTAINERS_PER_BYTE = 1 / 16
"""A tensor's entry is one object and two lists in at least 50 bytes: a header far denser in brackets is
not a list of tensors, and is refused before parsing builds its millions of objects."""
MAX_DIMS = 16
AROUND = 2
"""Neighbours read on each side of the weight, in its row."""

BITS = {
    "BOOL": 8,
    "U8": 8,
    "I8": 8,
    "F8_E5M2": 8,
    "F8_E4M3": 8,
    "F8_E8M0": 8,
    "I16": 16,
    "U16": 16,
    "F16": 16,
    "BF16": 16,
    "I32": 32,
    "U32": 32,
    "F32": 32,
    "I64": 64,
    "U64": 64,
    "F64": 64,
    "C64": 64,
    "F4": 4,
    "F6_E2M3": 6,
    "F6_E3M2": 6,
}
"""Bits per element of every dtype the safetensors format defines."""
DECODED = ("F32", "F16", "BF16", "F64")
"""The dtypes whose values are read; the others are quantized or not weights."""


class SafetensorsHeaderError(CorruptCheckpointError):
    """A safetensors file's header cannot be read: its length, its JSON, or a tensor's dtype, shape or offsets
    do not fit the file."""


@dataclass(frozen=True)
class SafetensorsTensor:
    """One tensor's entry in the header."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    offset: int
    """Absolute file offset of the tensor's data (8 + N + its first data offset)."""
    n_bytes: int


@dataclass(frozen=True, eq=False)
class SafetensorsHeader:
    """A safetensors file's header, checked."""

    name: str
    header_bytes: int
    """N: the length of the JSON."""
    data_start: int
    """8 + N."""
    metadata: Mapping[str, str]
    """The free-form `__metadata__` (empty when absent)."""
    tensors: Mapping[str, SafetensorsTensor]
    bytes_read: int
    """Bytes read to parse it: 8 + N, or the first chunk when that was longer."""
    reads: int


class StoredElement(Model):
    """One element of a tensor as the file stores it, with its neighbours along the last dimension."""

    tensor: str
    dtype: str
    index: tuple[Count, ...]
    """Into the stored tensor: [row, col], or [expert, row, col]."""
    value: float
    neighbours: tuple[tuple[Count, float], ...]
    """(last-dimension index, value) of the elements read around it, in order, the element itself left out."""
    offset: Count
    """File offset of the first byte read."""
    bytes_read: Count


def read_header(reader: RangeReader, *, first_chunk: int = FIRST_CHUNK) -> SafetensorsHeader:
    """Read and check the header of a safetensors file, without any tensor data beyond the first chunk.

    Raises:
        SafetensorsHeaderError: anything wrong with the header, in one line naming the file.
    """
    name, size = reader.name, reader.size
    start_bytes, start_reads = reader.bytes_read, reader.reads
    prefix = Prefix(reader, first=first_chunk, limit=8 + MAX_HEADER, error=SafetensorsHeaderError)
    prefix.ensure(8, "the header's length")
    n = int.from_bytes(prefix.data[:8], "little")
    if n > MAX_HEADER:
        raise SafetensorsHeaderError(f"{name}: a header of {n:,} bytes, more than the {MAX_HEADER:,} allowed")
    if 8 + n > size:
        raise SafetensorsHeaderError(f"{name}: a header of {n:,} bytes, longer than the file ({size:,} bytes)")
    prefix.ensure(8 + n, "the header")
    text = bytes(prefix.data[8 : 8 + n])
    containers = text.count(b"{") + text.count(b"[")
    if containers > 64 + n * MAX_CONTAINERS_PER_BYTE:
        raise SafetensorsHeaderError(
            f"{name}: the header has {containers:,} objects and lists in {n:,} bytes, not the entries of tensors"
        )
    try:
        parsed = json.loads(text.decode("utf-8"))
    except (ValueError, RecursionError) as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise SafetensorsHeaderError(f"{name}: the header is not JSON ({first_line(e, 120)})") from e
    if not isinstance(parsed, dict):
        raise SafetensorsHeaderError(f"{name}: the header is not a JSON object")
    if not text.startswith(b"{"):  # the safetensors library's rule too
        raise SafetensorsHeaderError(f"{name}: the header does not start with '{{'")
    metadata = parsed.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise SafetensorsHeaderError(f"{name}: __metadata__ is not a map of strings")
    tensors = {key: tensor_entry(name, key, entry, 8 + n, size) for key, entry in parsed.items()}
    packed(name, tensors.values(), 8 + n, size)
    return SafetensorsHeader(
        name=name,
        header_bytes=n,
        data_start=8 + n,
        metadata=metadata,
        tensors=tensors,
        bytes_read=reader.bytes_read - start_bytes,
        reads=reader.reads - start_reads,
    )


def read_element(
    reader: RangeReader, header: SafetensorsHeader, tensor: str, index: Sequence[int], *, around: int = AROUND
) -> StoredElement:
    """The element at `index` ([row, col] of a 2-D tensor, [expert, row, col] of a 3-D one) and up to
    `around` neighbours on each side in its row: one read.

    Raises:
        UsageError: no such tensor, or an index that does not fit its shape.
        UnsupportedModelError: the tensor's dtype is not a float type read here.
    """
    name = header.name
    info = header.tensors.get(tensor)
    if info is None:
        raise UsageError(f"{name}: no tensor {tensor} (the file has {len(header.tensors):,} tensors)")
    index = tuple(int(i) for i in index)
    if len(index) != len(info.shape) or not all(0 <= i < d for i, d in zip(index, info.shape, strict=True)):
        raise UsageError(f"{name}: index {list(index)} is outside {tensor}, shaped {list(info.shape)}")
    if info.dtype not in DECODED:
        raise UnsupportedModelError(
            f"{name}: {tensor} is {info.dtype}; only {', '.join(DECODED)} values are read (a quantized checkpoint?)"
        )
    itemsize = BITS[info.dtype] // 8
    last = index[-1]
    lo, hi = max(0, last - around), min(info.shape[-1], last + around + 1)
    flat = 0
    for i, d in zip(index, info.shape, strict=True):
        flat = flat * d + i
    offset = info.offset + (flat - (last - lo)) * itemsize
    before = reader.bytes_read
    values = decoded(read_exactly(reader, offset, (hi - lo) * itemsize), info.dtype)
    return StoredElement(
        tensor=tensor,
        dtype=info.dtype,
        index=index,
        value=float(values[last - lo]),
        neighbours=tuple((lo + i, float(v)) for i, v in enumerate(values) if lo + i != last),
        offset=offset,
        bytes_read=reader.bytes_read - before,
    )


def decoded(data: bytes, dtype: str) -> np.ndarray:
    """Little-endian F32, F16, BF16 or F64 bytes as float64 values (each exact)."""
    if dtype == "BF16":  # the top half of a float32
        return (np.frombuffer(data, dtype="<u2").astype(np.uint32) << 16).view(np.float32).astype(np.float64)
    kind = {"F32": "<f4", "F16": "<f2", "F64": "<f8"}[dtype]
    return np.frombuffer(data, dtype=kind).astype(np.float64)


def tensor_entry(name: str, key: str, entry: object, data_start: int, size: int) -> SafetensorsTensor:
    """One tensor's entry: its types, its size and its place inside the file checked."""
    shown = printable(key)
    if not isinstance(entry, dict):
        raise SafetensorsHeaderError(f"{name}: the entry of {shown} is not an object")
    dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
    if not isinstance(dtype, str) or dtype not in BITS:  # a list or an object cannot even be looked up
        raise SafetensorsHeaderError(f"{name}: {shown} has an unknown dtype {str(dtype)[:40]!r}")
    if not is_ints(shape) or len(shape) > MAX_DIMS:
        raise SafetensorsHeaderError(f"{name}: {shown} has no valid shape (a list of at most {MAX_DIMS} sizes)")
    if not is_ints(offsets) or len(offsets) != 2 or offsets[0] > offsets[1]:
        raise SafetensorsHeaderError(f"{name}: {shown} has no valid data_offsets ([start, end])")
    bits = math.prod(shape) * BITS[dtype]
    start, end = offsets
    if bits % 8 or end - start != bits // 8:
        raise SafetensorsHeaderError(
            f"{name}: {shown} ({dtype}, {shape}) takes {bits / 8:,g} bytes, but its data_offsets give {end - start:,}"
        )
    if data_start + end > size:
        raise SafetensorsHeaderError(
            f"{name}: {shown}'s data_offsets [{start:,}, {end:,}] end past the data section "
            f"({size - data_start:,} bytes)"
        )
    return SafetensorsTensor(name=key, dtype=dtype, shape=tuple(shape), offset=data_start + start, n_bytes=end - start)


def packed(name: str, tensors, data_start: int, size: int) -> None:
    """Refuse tensors that leave gaps, overlap, or do not end where the file does (safetensors' own rule)."""
    end = data_start
    for info in sorted(tensors, key=lambda t: (t.offset, t.n_bytes)):
        if info.offset != end:
            where = "overlaps the tensor before it" if info.offset < end else "leaves a gap before it"
            raise SafetensorsHeaderError(f"{name}: {printable(info.name)}'s data_offsets are wrong: it {where}")
        end += info.n_bytes
    if end != size:  # each tensor lies inside the file, so the file runs on after the last
        raise SafetensorsHeaderError(f"{name}: the tensors' data ends at byte {end:,}, but the file has {size:,} bytes")


def is_ints(value: object) -> bool:
    """A list of sizes or offsets: what the safetensors library reads as unsigned 64-bit integers."""
    return isinstance(value, list) and all(type(v) is int and 0 <= v < 1 << 64 for v in value)
