"""What a GGUF quant stores at a super weight's coordinates, from its header and one row's blocks.

A quant of an audited model either keeps its super weights or breaks the model, and which one is one number
per weight: the value the quant stores at [row, col] of a down projection. Reading it costs the header (its
key-values, mostly the tokenizer's vocabulary, and the tensor infos) and the quantized blocks of one row,
through a `RangeReader`, so a Hub file answers with a few round trips instead of a download.
`gguf.GGUFReader` is not used: it maps the whole file. A split GGUF (`-00001-of-00003.gguf`) is read a shard
at a time, each with its own header: `down_tensor` says which one has a layer (`derivatives.check_gguf`).

The header is untrusted input. Every count and length is bounded by the file's size and by `MAX_HEADER`
before anything is allocated for it, every tensor's bytes must lie inside the file, and any problem is one
`GgufHeaderError` naming the file and what is wrong (never a struct.error or a MemoryError).

Layout (gguf 0.19, checked against the SmolLM2 Q4_1 file): ggml lists a tensor's dimensions innermost first,
ne = [ne0, ne1, ...], so a down projection of transformers' [out, in] is ne = [in, out] and W[row, col] is
element `row * ne0 + col`; fused experts, [expert, out, in] in transformers, are ne = [in, out, n_expert].
A quantized row is whole blocks (`GGML_QUANT_SIZES[type]` = elements, bytes per block; ne0 must be a
multiple of the block), so one row is one contiguous read.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import re
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType, GGUFValueType
from gguf.quants import dequantize

from .errors import CorruptCheckpointError, UnsupportedModelError, UsageError
from .models import Count, Model
from .ranges import Prefix, RangeReader, printable, read_exactly

MAGIC = b"GGUF"
LENGTH = struct.Struct("<Q")  # a string's length prefix
VERSIONS = (2, 3)
"""GGUF versions read here: 2 and 3 differ only in allowing big-endian files (refused); version 1 used 32-bit
lengths and has not been written since 2023."""
DEFAULT_ALIGNMENT = 32
FIRST_CHUNK = 64 << 10
"""The first read of a header; each later one doubles what is held."""
MAX_HEADER = 64 << 20
"""The most a header may take. The largest vocabularies (262k tokens, or 150k with as many merges) make
headers of 5 to 15 MB."""
MAX_NAME = 1024
"""Longest key or tensor name, in bytes (ggml's own limit for tensor names is 64)."""
MAX_ARRAY = 1 << 22
"""Most elements in one metadata array (a vocabulary has at most a few hundred thousand)."""
MAX_DEPTH = 2
"""Arrays of arrays, at most this deep."""
MAX_KEYS = 1 << 16
"""Most key-values (real files have tens)."""
MAX_OBJECTS = 1 << 21
"""Most strings and arrays in the metadata, all arrays together: each is a Python object (a vocabulary and
its merges are at most about a million), so a header of millions of tiny values is refused before it costs
gigabytes and minutes. Arrays of numbers are read whole, as one array each."""
MAX_DIMS = 4
"""ggml's GGML_MAX_DIMS."""

ZEROED_BELOW = 0.05
"""A stored value under this fraction of the base's magnitude is `zeroed`: the weight is gone."""
CLIPPED_BELOW = 0.75
"""A stored value of the base's sign under this fraction of its magnitude is `clipped`. Round to nearest
moves a block's largest value by at most half a step, 1/14 of the block's range at 3 bits; a quarter of it
lost is beyond rounding at 3 bits or more: the scale was cut below the weight (an importance-weighted or
searched scale, or a clipping quantizer)."""

SCALARS = {
    GGUFValueType.UINT8: "<B",
    GGUFValueType.INT8: "<b",
    GGUFValueType.UINT16: "<H",
    GGUFValueType.INT16: "<h",
    GGUFValueType.UINT32: "<I",
    GGUFValueType.INT32: "<i",
    GGUFValueType.FLOAT32: "<f",
    GGUFValueType.BOOL: "<?",
    GGUFValueType.UINT64: "<Q",
    GGUFValueType.INT64: "<q",
    GGUFValueType.FLOAT64: "<d",
}
NUMPY = {
    GGUFValueType.UINT8: "<u1",
    GGUFValueType.INT8: "<i1",
    GGUFValueType.UINT16: "<u2",
    GGUFValueType.INT16: "<i2",
    GGUFValueType.UINT32: "<u4",
    GGUFValueType.INT32: "<i4",
    GGUFValueType.FLOAT32: "<f4",
    GGUFValueType.BOOL: "<u1",
    GGUFValueType.UINT64: "<u8",
    GGUFValueType.INT64: "<i8",
    GGUFValueType.FLOAT64: "<f8",
}


class GgufHeaderError(CorruptCheckpointError):
    """A GGUF file's header cannot be read: bad magic or version, truncated, or counts, lengths, types or
    tensor ranges that do not fit the file."""


@dataclass(frozen=True)
class GgufTensor:
    """One tensor's info from the header."""

    name: str
    ne: tuple[int, ...]
    """ggml's dimensions, innermost (contiguous) first: [in, out] for a down projection."""
    qtype: GGMLQuantizationType
    offset: int
    """Absolute file offset of the tensor's data."""
    n_bytes: int

    @property
    def shape(self) -> tuple[int, ...]:
        """numpy's (and transformers') order: [out, in], [expert, out, in]."""
        return tuple(reversed(self.ne))

    @property
    def n_elements(self) -> int:
        return math.prod(self.ne)


@dataclass(frozen=True, eq=False)
class GgufHeader:
    """A GGUF file's header, parsed. Metadata values are int, float, bool or str; arrays of numbers are
    read-only numpy arrays, other arrays tuples."""

    name: str
    version: int
    alignment: int
    header_bytes: int
    """Where the tensor infos end."""
    data_start: int
    """Where tensor data begins: `header_bytes` rounded up to `alignment`."""
    metadata: Mapping[str, Any]
    tensors: Mapping[str, GgufTensor]
    bytes_read: int
    """Bytes read to parse it: the header, and the rest of the last chunk."""
    reads: int


@dataclass(frozen=True, eq=False)
class GgufRow:
    """One row of a down projection as the file stores it, dequantized, and the weight at `col` in it."""

    tensor: str
    qtype: str
    """ggml's type name: Q4_1, Q6_K, F16..."""
    row: int
    col: int
    expert: int | None
    """The expert, whether its tensor holds them all (fused) or only it."""
    values: np.ndarray
    """The row's `in` values, float32."""
    value: float
    """`values[col]`."""
    block: int
    """Index in the tensor of the block holding the weight."""
    block_size: int
    """Elements per block (1 for float types)."""
    block_bytes: int
    offset: int
    """File offset of the row's first block."""
    bytes_read: int
    """What reading the row cost: its blocks and nothing else."""


class StoredWeight(Model):
    """A weight as a quant stores it, next to the base model's value."""

    tensor: str
    qtype: str
    row: Count
    col: Count
    base: float
    stored: float
    rel_error: float
    """|stored - base| / |base|."""
    sign_kept: bool
    zeroed: bool
    """|stored| < ZEROED_BELOW * |base|."""
    clipped: bool
    """Not zeroed, the same sign, and |stored| < CLIPPED_BELOW * |base|."""
    rank: Count
    """How many values of the row are larger in magnitude than the stored one: 0 when it is still the
    row's largest."""
    row_top: tuple[tuple[Count, float], ...]
    """The row's three largest other values by magnitude, as (col, value), largest first: a quant that clips
    every outlier shows them cut to about the same level."""
    block: Count
    block_size: Count
    expert: Count | None = None


def tensor_name(layer: int, expert: int | None = None) -> str:
    """The GGUF name of layer `layer`'s down projection: `blk.{layer}.ffn_down.weight`, or for experts the
    fused 3-D `blk.{layer}.ffn_down_exps.weight` (ne = [in, out, n_expert]; the expert is an index into it)."""
    return f"blk.{layer}.ffn_down.weight" if expert is None else f"blk.{layer}.ffn_down_exps.weight"


def read_header(reader: RangeReader, *, first_chunk: int = FIRST_CHUNK) -> GgufHeader:
    """Parse the header of a GGUF file without reading any tensor data.

    Raises:
        GgufHeaderError: anything wrong with the header, in one line naming the file.
    """
    start_bytes, start_reads = reader.bytes_read, reader.reads
    parser = Parser(reader, Prefix(reader, first=first_chunk, limit=MAX_HEADER, error=GgufHeaderError))
    return parser.header(start_bytes, start_reads)


def read_row(
    reader: RangeReader, header: GgufHeader, tensor: str, row: int, col: int, *, expert: int | None = None
) -> GgufRow:
    """Row `row` of a 2-D tensor (or of expert `expert` of a 3-D one), dequantized, with the weight at `col`:
    one read of the row's blocks.

    Raises:
        UsageError: no such tensor in the file, or a coordinate outside it.
        UnsupportedModelError: the tensor's type is one gguf cannot dequantize.
        GgufHeaderError: the row is not whole blocks.
    """
    name = header.name
    info = header.tensors.get(tensor)
    if info is None:
        raise UsageError(f"{name}: no tensor {tensor} (the file has {len(header.tensors):,} tensors)")
    ne = info.ne
    if len(ne) != (2 if expert is None else 3):
        wanted = "[expert, row, col]" if len(ne) == 3 else "[row, col]"
        raise UsageError(f"{name}: {tensor} has {len(ne)} dimensions {list(info.shape)}: index it as {wanted}")
    width, height = ne[0], ne[1]
    bounds = [("row", row, height), ("col", col, width)] + ([("expert", expert, ne[2])] if expert is not None else [])
    for what, index, limit in bounds:
        if not 0 <= index < limit:
            raise UsageError(f"{name}: {what} {index} is outside {tensor}, shaped {list(info.shape)}")
    block_size, block_bytes = GGML_QUANT_SIZES[info.qtype]
    if width % block_size:
        raise GgufHeaderError(
            f"{name}: {tensor}'s rows of {width:,} values are not whole {info.qtype.name} blocks of {block_size}"
        )
    flat_row = (expert or 0) * height + row
    row_bytes = width // block_size * block_bytes
    offset = info.offset + flat_row * row_bytes
    before = reader.bytes_read
    data = read_exactly(reader, offset, row_bytes)
    values = dequantized(np.frombuffer(data, dtype=np.uint8), info.qtype, name, tensor)
    if values.shape != (width,):
        raise GgufHeaderError(f"{name}: {tensor}'s row dequantized to {values.size:,} values, not {width:,}")
    values.flags.writeable = False  # the row as stored: a result, not a buffer
    return GgufRow(
        tensor=tensor,
        qtype=info.qtype.name,
        row=row,
        col=col,
        expert=expert,
        values=values,
        value=float(values[col]),
        block=(flat_row * width + col) // block_size,
        block_size=block_size,
        block_bytes=block_bytes,
        offset=offset,
        bytes_read=reader.bytes_read - before,
    )


def down_tensor(header: GgufHeader, layer: int, expert: int | None = None) -> str | None:
    """The name of the tensor holding layer `layer`'s down projection (of expert `expert`) in this file, or
    None: the fused `ffn_down_exps`, or, in files converted before it (early 2024), the expert's own
    `blk.{layer}.ffn_down.{expert}.weight`."""
    name = tensor_name(layer, expert)
    if name in header.tensors:
        return name
    legacy = f"blk.{layer}.ffn_down.{expert}.weight"
    return legacy if expert is not None and legacy in header.tensors else None


def read_weight(
    reader: RangeReader, layer: int, row: int, col: int, *, expert: int | None = None, header: GgufHeader | None = None
) -> GgufRow:
    """The row holding `down_proj.weight[row, col]` of layer `layer` (of expert `expert`), reading the header
    first unless given (the tensor: `down_tensor`).

    Raises:
        UsageError: the file has no such down projection, or the coordinate is outside it.
    """
    header = header or read_header(reader)
    name, fused = down_tensor(header, layer, expert), tensor_name(layer, expert)
    if name is None:
        layers = sum(1 for t in header.tensors if re.fullmatch(r"blk\.\d+\.ffn_down(_exps)?\.weight", t))
        raise UsageError(f"{header.name}: no tensor {fused}: the file has {layers} down projection(s)")
    if name != fused:  # an expert's own 2-D tensor
        return dataclasses.replace(read_row(reader, header, name, row, col), expert=expert)
    return read_row(reader, header, name, row, col, expert=expert)


def compare(row: GgufRow, base: float) -> StoredWeight:
    """The stored weight against the base model's `base`: error, sign, zeroed or clipped, and the row's
    other large values.

    Raises:
        UsageError: `base` is zero or not finite (no super weight is).
    """
    if not math.isfinite(base) or base == 0:
        raise UsageError(f"the base value of {row.tensor}[{row.row}, {row.col}] is {base}: no weight to compare")
    stored = row.value
    magnitudes = np.abs(row.values.astype(np.float64))
    others = np.argsort(-magnitudes, kind="stable")
    top = tuple((int(c), float(row.values[c])) for c in others[others != row.col][:3])
    same_sign = stored != 0 and math.isfinite(stored) and math.copysign(1.0, stored) == math.copysign(1.0, base)
    zeroed = abs(stored) < ZEROED_BELOW * abs(base)
    return StoredWeight(
        tensor=row.tensor,
        qtype=row.qtype,
        row=row.row,
        col=row.col,
        expert=row.expert,
        base=float(base),
        stored=stored,
        rel_error=abs(stored - base) / abs(base),
        sign_kept=same_sign,
        zeroed=zeroed,
        clipped=same_sign and not zeroed and abs(stored) < CLIPPED_BELOW * abs(base),
        rank=int(np.count_nonzero(magnitudes > abs(stored))),
        row_top=top,
        block=row.block,
        block_size=row.block_size,
    )


def dequantized(data: np.ndarray, qtype: GGMLQuantizationType, name: str, tensor: str) -> np.ndarray:
    """Blocks of `qtype` as float32 values, by gguf's numpy dequantizers."""
    try:
        values = dequantize(data, qtype)
    except NotImplementedError as e:
        raise UnsupportedModelError(
            f"{name}: {tensor} is {qtype.name}, which gguf's numpy code cannot dequantize"
        ) from e
    return np.array(values, dtype=np.float32).reshape(-1)


class Parser:
    """Reads the header front to back; `pos` is the next byte."""

    def __init__(self, reader: RangeReader, prefix: Prefix):
        self.reader = reader
        self.prefix = prefix
        self.name = reader.name
        self.pos = 0
        self.objects = 0  # strings and arrays made so far (MAX_OBJECTS)

    def fail(self, what: str) -> GgufHeaderError:
        return GgufHeaderError(f"{self.name}: {what}")

    def take(self, n: int, what: str) -> int:
        """Make the next `n` bytes available; their start."""
        start = self.pos
        self.prefix.ensure(start + n, what)
        self.pos = start + n
        return start

    def unpack(self, fmt: str, what: str) -> Any:
        return struct.unpack_from(fmt, self.prefix.data, self.take(struct.calcsize(fmt), what))[0]

    def string(self, what: str, limit: int | None = None, strict: bool = True) -> str:
        length = self.unpack("<Q", what)
        if limit is not None and length > limit:
            raise self.fail(f"{what} is {length:,} bytes long, more than the {limit:,} allowed")
        start = self.take(length, what)
        raw = bytes(self.prefix.data[start : start + length])
        try:
            return raw.decode("utf-8", "strict" if strict else "surrogateescape")
        except UnicodeDecodeError as e:
            raise self.fail(f"{what} is not UTF-8") from e

    def room(self, count: int, each: int, what: str) -> None:
        """Refuse `count` items of at least `each` bytes that cannot fit in the file (or the header limit)."""
        left = min(self.reader.size, self.prefix.limit) - self.pos
        if count * each > left:
            raise self.fail(f"{what}: {count:,} of them cannot fit in the {max(left, 0):,} bytes left")

    def value(self, vtype: int, key: str, depth: int = 0) -> Any:
        """A value of type `vtype`; `key` is the printable key, for messages."""
        if vtype in SCALARS:
            return self.unpack(SCALARS[GGUFValueType(vtype)], f"value of {key}")
        if vtype == GGUFValueType.STRING:
            return self.string(f"value of {key}", strict=False)
        if vtype != GGUFValueType.ARRAY:
            raise self.fail(f"{key} has an unknown value type {vtype}")
        if depth >= MAX_DEPTH:
            raise self.fail(f"{key} nests arrays more than {MAX_DEPTH} deep")
        itype = self.unpack("<I", f"array type of {key}")
        count = self.unpack("<Q", f"array length of {key}")
        if count > MAX_ARRAY:
            raise self.fail(f"{key} is an array of {count:,} values, more than the {MAX_ARRAY:,} allowed")
        if itype in NUMPY:
            dtype = np.dtype(NUMPY[GGUFValueType(itype)])
            start = self.take(count * dtype.itemsize, f"array {key}")
            values = np.frombuffer(bytes(self.prefix.data[start : self.pos]), dtype=dtype)
            return values.astype(bool) if itype == GGUFValueType.BOOL else values
        if itype not in (GGUFValueType.STRING, GGUFValueType.ARRAY):
            raise self.fail(f"{key} is an array of an unknown value type {itype}")
        self.room(count, 8 if itype == GGUFValueType.STRING else 12, f"values of array {key}")
        self.objects += count
        if self.objects > MAX_OBJECTS:
            raise self.fail(f"{key}: the metadata holds more than {MAX_OBJECTS:,} strings and arrays")
        if itype == GGUFValueType.STRING:
            return self.strings(count, f"value of {key}")
        return tuple(self.value(itype, key, depth + 1) for _ in range(count))

    def strings(self, count: int, what: str) -> tuple[str, ...]:
        """`count` strings, as `string` reads them (lengths bounded by the file and the header limit): the bulk
        of a header (a vocabulary and its merges, 100,000s of them), so read in one tight loop (3x faster)."""
        prefix, out = self.prefix, []
        for _ in range(count):
            start = self.pos + 8
            prefix.ensure(start, what)
            end = start + LENGTH.unpack_from(prefix.data, self.pos)[0]
            prefix.ensure(end, what)
            out.append(str(prefix.data[start:end], "utf-8", "surrogateescape"))
            self.pos = end
        return tuple(out)

    def header(self, start_bytes: int, start_reads: int) -> GgufHeader:
        start = self.take(4, "the magic number")
        magic = bytes(self.prefix.data[start : start + 4])
        if magic != MAGIC:
            raise self.fail(f"not a GGUF file (it starts with {magic!r}, not {MAGIC!r})")
        version = self.unpack("<I", "the version")
        if version not in VERSIONS:
            swapped = int.from_bytes(version.to_bytes(4, "little"), "big")
            if swapped in VERSIONS:
                raise self.fail(f"a big-endian GGUF file (version {swapped}): only little-endian files are read")
            raise self.fail(f"GGUF version {version}: only versions {' and '.join(map(str, VERSIONS))} are read")
        n_tensors = self.unpack("<Q", "the tensor count")
        n_kv = self.unpack("<Q", "the key-value count")
        if n_kv > MAX_KEYS:
            raise self.fail(f"{n_kv:,} key-values, more than the {MAX_KEYS:,} allowed")
        self.room(n_kv, 8 + 4 + 1, "key-values")
        metadata: dict[str, Any] = {}
        for i in range(n_kv):
            key = self.string(f"key {i}", MAX_NAME)
            vtype = self.unpack("<I", f"type of {printable(key)}")
            if key in metadata:
                raise self.fail(f"key {printable(key)} appears twice")
            metadata[key] = self.value(vtype, printable(key))
        self.room(n_tensors, 8 + 4 + 8 + 4 + 8, "tensor infos")
        infos = [self.tensor_info(i) for i in range(n_tensors)]
        alignment = metadata.get("general.alignment", DEFAULT_ALIGNMENT)
        if type(alignment) is not int or alignment <= 0 or alignment & (alignment - 1):
            raise self.fail(f"general.alignment is {alignment!r}, not a power of two")
        header_bytes = self.pos
        data_start = -(-header_bytes // alignment) * alignment
        tensors: dict[str, GgufTensor] = {}
        for name, ne, qtype, relative in infos:
            if name in tensors:
                raise self.fail(f"tensor {printable(name)} appears twice")
            tensors[name] = self.placed(name, ne, qtype, relative, data_start, alignment)
        self.no_overlap(tensors.values())
        return GgufHeader(
            name=self.name,
            version=version,
            alignment=alignment,
            header_bytes=header_bytes,
            data_start=data_start,
            metadata=metadata,
            tensors=tensors,
            bytes_read=self.reader.bytes_read - start_bytes,
            reads=self.reader.reads - start_reads,
        )

    def tensor_info(self, i: int) -> tuple[str, tuple[int, ...], int, int]:
        raw = self.string(f"name of tensor {i}", MAX_NAME)
        name = printable(raw)
        n_dims = self.unpack("<I", f"dimension count of {name}")
        if n_dims > MAX_DIMS:
            raise self.fail(f"tensor {name} has {n_dims:,} dimensions, more than ggml's {MAX_DIMS}")
        start = self.take(8 * n_dims, f"dimensions of {name}")
        ne = struct.unpack_from(f"<{n_dims}Q", self.prefix.data, start)
        qtype = self.unpack("<I", f"type of {name}")
        relative = self.unpack("<Q", f"offset of {name}")
        return raw, ne, qtype, relative

    def placed(
        self, name: str, ne: tuple[int, ...], raw_type: int, relative: int, data_start: int, alignment: int
    ) -> GgufTensor:
        """The tensor, once its type is known and its bytes lie inside the file."""
        shown = printable(name)
        try:
            qtype = GGMLQuantizationType(raw_type)
            block_size, block_bytes = GGML_QUANT_SIZES[qtype]
        except (ValueError, KeyError) as e:
            raise self.fail(f"tensor {shown} has type {raw_type}, which this gguf version does not know") from e
        if ne and ne[0] % block_size:
            raise self.fail(
                f"tensor {shown}'s rows of {ne[0]:,} values are not whole {qtype.name} blocks of {block_size}"
            )
        if relative % alignment:
            raise self.fail(f"tensor {shown}'s data offset {relative:,} is not a multiple of the alignment {alignment}")
        n_bytes = math.prod(ne) // block_size * block_bytes
        offset = data_start + relative
        if offset + n_bytes > self.reader.size:
            raise self.fail(
                f"tensor {shown} ({qtype.name}, {list(ne)}) takes bytes {offset:,} to {offset + n_bytes:,}, past the "
                f"end of the file ({self.reader.size:,} bytes)"
            )
        return GgufTensor(name=name, ne=tuple(ne), qtype=qtype, offset=offset, n_bytes=n_bytes)

    def no_overlap(self, tensors) -> None:
        ordered = sorted(tensors, key=lambda t: t.offset)
        for a, b in itertools.pairwise(ordered):
            if b.offset < a.offset + a.n_bytes:
                raise self.fail(f"tensors {printable(a.name)} and {printable(b.name)} overlap")
