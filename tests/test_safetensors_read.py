"""safetensors headers and single elements read through byte ranges: the values torch saved, for the header
and a few bytes, and hostile headers refused in one line."""

from __future__ import annotations

import json
import struct

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from auditor.errors import CorruptCheckpointError, UnsupportedModelError, UsageError
from auditor.ranges import LocalReader
from auditor.safetensors_read import (
    MAX_HEADER,
    SafetensorsHeaderError,
    StoredElement,
    read_element,
    read_header,
)

OUT, IN = 24, 40


@pytest.fixture(scope="module")
def tensors() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    base = torch.randn(OUT, IN, generator=g) * 0.02
    base[7, 33] = -2.0
    return {
        "model.layers.0.mlp.down_proj.weight": base.clone(),
        "model.layers.1.mlp.down_proj.weight": base.half(),
        "model.layers.2.mlp.down_proj.weight": (base * 3.3).bfloat16(),
        "model.layers.3.mlp.experts.down_proj": torch.randn(3, OUT, IN, generator=g).bfloat16(),
        "model.layers.4.mlp.down_proj.weight": (base * 1e-3).double(),
        "model.embed_tokens.weight": torch.randn(4096, 16, generator=g),  # 256 KiB: the file's bulk
        "position_ids": torch.arange(10),
    }


@pytest.fixture(scope="module")
def checkpoint(tensors, tmp_path_factory):
    path = tmp_path_factory.mktemp("st") / "model.safetensors"
    save_file(tensors, str(path), metadata={"format": "pt"})
    return path


def header_length(path) -> int:
    return struct.unpack("<Q", path.read_bytes()[:8])[0]


INDICES = {
    "model.layers.0.mlp.down_proj.weight": [(0, 0), (0, 1), (7, 33), (7, 38), (7, 39), (OUT - 1, IN - 1), (12, 2)],
    "model.layers.1.mlp.down_proj.weight": [(7, 33), (0, 0), (OUT - 1, IN - 1)],
    "model.layers.2.mlp.down_proj.weight": [(7, 33), (3, 17), (OUT - 1, 0)],
    "model.layers.3.mlp.experts.down_proj": [(0, 0, 0), (2, 7, 33), (1, OUT - 1, IN - 1), (2, 0, 1)],
    "model.layers.4.mlp.down_proj.weight": [(7, 33)],
}


@pytest.mark.parametrize("name", INDICES)
def test_an_element_and_its_neighbours_are_what_torch_saved(checkpoint, tensors, name):
    reader = LocalReader(checkpoint)
    header = read_header(reader, first_chunk=8)
    n = header_length(checkpoint)
    # the length, then exactly the header: two reads
    assert (header.header_bytes, header.data_start) == (n, 8 + n)
    assert (reader.reads, reader.bytes_read) == (header.reads, header.bytes_read) == (2, 8 + n)
    t = tensors[name]
    itemsize = t.element_size()
    for index in INDICES[name]:
        before, reads = reader.bytes_read, reader.reads
        got = read_element(reader, header, name, index)
        assert isinstance(got, StoredElement) and got.index == index
        assert got.value == t[index].item()  # exact: every float type widens to float64 without loss
        *lead, col = index
        lo, hi = max(0, col - 2), min(IN, col + 3)
        assert got.neighbours == tuple((c, t[(*lead, c)].item()) for c in range(lo, hi) if c != col)
        assert reader.reads == reads + 1 and got.bytes_read == reader.bytes_read - before == (hi - lo) * itemsize
        assert got.dtype == {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16"}.get(t.dtype, "F64")


def test_the_header_is_read_whole_and_checked(checkpoint, tensors):
    reader = LocalReader(checkpoint)
    header = read_header(reader)  # 64 KiB at once: length and header in one read
    assert (header.reads, header.bytes_read) == (1, 64 << 10) and reader.size > 4 * (64 << 10)
    assert header.metadata == {"format": "pt"}
    assert set(header.tensors) == set(tensors)
    for name, t in tensors.items():
        info = header.tensors[name]
        assert info.shape == tuple(t.shape) and info.n_bytes == t.numel() * t.element_size()
    got = read_element(reader, header, "model.layers.0.mlp.down_proj.weight", (7, 33), around=0)
    assert got.value == -2.0 and got.neighbours == () and got.bytes_read == 4
    assert (reader.reads, reader.bytes_read) == (2, (64 << 10) + 4)  # a super weight for 64 KiB and 4 bytes


def test_indices_tensors_and_dtypes_that_cannot_be_read_are_refused(checkpoint):
    reader = LocalReader(checkpoint)
    header = read_header(reader)
    name = "model.layers.0.mlp.down_proj.weight"
    for index in ((OUT, 0), (0, IN), (0,), (0, 0, 0), (-1, 0)):
        with pytest.raises(UsageError, match=r"^model\.safetensors: index .* is outside .*, shaped \[24, 40\]$"):
            read_element(reader, header, name, index)
    with pytest.raises(UsageError, match=r"no tensor lm_head\.weight \(the file has 7 tensors\)"):
        read_element(reader, header, "lm_head.weight", (0, 0))
    with pytest.raises(UnsupportedModelError, match=r"position_ids is I64; only F32, F16, BF16, F64 values are read"):
        read_element(reader, header, "position_ids", (3,))


def st_bytes(header: object, data: bytes = bytes(16), *, raw: bytes | None = None, length: int | None = None) -> bytes:
    text = raw if raw is not None else json.dumps(header).encode()
    return struct.pack("<Q", len(text) if length is None else length) + text + data


def entry(dtype="F32", shape=(2, 2), offsets=(0, 16)) -> dict:
    return {"dtype": dtype, "shape": list(shape), "data_offsets": list(offsets)}


HOSTILE = {
    "empty": (b"", r"the header's length ends at byte 8, past the end of the file \(0 bytes\)"),
    "N past the file": (st_bytes({"t": entry()}, length=10_000), r"a header of 10,000 bytes, longer than the file"),
    "N huge": (st_bytes({"t": entry()}, length=2**63), r"a header of 9,223,372,036,854,775,808 bytes, more than the"),
    "N over the limit": (st_bytes({}, length=MAX_HEADER + 1), r"more than the 16,777,216 allowed"),
    "brackets, not tensors": (
        st_bytes(None, raw=b'{"a": [' + b"{}," * 100_000 + b"{}]}"),
        r"the header has 100,003 objects and lists in 300,011 bytes, not the entries of tensors",
    ),
    "not JSON": (st_bytes(None, raw=b"{not json}"), r"the header is not JSON \(Expecting property name"),
    "not UTF-8": (st_bytes(None, raw=b'{"\xff": 1}'), r"the header is not JSON \('utf-8' codec can't decode"),
    "deeply nested": (st_bytes(None, raw=b"[" * 200_000 + b"]" * 200_000), r"has 200,000 objects and lists in 400,000"),
    "nested, not too many": (
        st_bytes(None, raw=b'{"a":' + b"[" * 2_000 + b"]" * 2_000 + b" " * 60_000 + b"}"),
        r"not JSON",
    ),
    "a list": (st_bytes([1, 2]), r"the header is not a JSON object"),
    "leading space": (st_bytes(None, raw=b' {"t": {}}'), r"the header does not start with '\{'$"),
    "entry not an object": (st_bytes({"t": [1]}), r"the entry of t is not an object"),
    "unknown dtype": (st_bytes({"t": entry(dtype="F12")}), r"t has an unknown dtype 'F12'"),
    "dtype a list": (st_bytes({"t": entry(dtype=["F32"])}), r"t has an unknown dtype \"\['F32'\]\""),
    "dtype an object": (st_bytes({"t": entry(dtype={"a": 1})}), r"t has an unknown dtype \"\{'a': 1\}\""),
    "no dtype": (st_bytes({"t": {"shape": [4], "data_offsets": [0, 16]}}), r"t has an unknown dtype 'None'"),
    "negative shape": (st_bytes({"t": entry(shape=(-2, -2))}), r"t has no valid shape"),
    "shape past 64 bits": (st_bytes({"t": entry(shape=(10**4000,))}), r"t has no valid shape"),
    "key on two lines": (st_bytes({"a\nb": entry(dtype="F99")}), r"'a\\nb' has an unknown dtype 'F99'$"),
    "shape of strings": (st_bytes({"t": entry(shape=("2", "2"))}), r"t has no valid shape"),
    "too many dims": (st_bytes({"t": entry(shape=(1,) * 17)}), r"t has no valid shape \(a list of at most 16 sizes\)"),
    "offsets reversed": (st_bytes({"t": entry(offsets=(16, 0))}), r"t has no valid data_offsets"),
    "three offsets": (st_bytes({"t": entry(offsets=(0, 8, 16))}), r"t has no valid data_offsets"),
    "float offsets": (st_bytes({"t": entry(offsets=(0.0, 16.0))}), r"t has no valid data_offsets"),
    "size mismatch": (
        st_bytes({"t": entry(shape=(2, 3))}),
        r"t \(F32, \[2, 3\]\) takes 24 bytes, but its data_offsets give 16",
    ),
    "sub-byte size": (st_bytes({"t": entry(dtype="F4", shape=(3,), offsets=(0, 1))}, bytes(1)), r"takes 1\.5 bytes"),
    "offsets outside": (
        st_bytes({"t": entry(offsets=(1 << 40, (1 << 40) + 16))}),
        r"t's data_offsets \[1,099,511,627,776, 1,099,511,627,792\] end past the data section \(16 bytes\)",
    ),
    "data past the end": (
        st_bytes({"a": entry(), "b": entry(shape=(2,), offsets=(16, 24))}),
        r"b's data_offsets \[16, 24\] end past the data section \(16 bytes\)",
    ),
    "overlap": (
        st_bytes({"a": entry(), "b": entry(shape=(2,), offsets=(8, 16))}, bytes(16)),
        r"b's data_offsets are wrong: it overlaps the tensor before it",
    ),
    "gap": (st_bytes({"t": entry(shape=(2,), offsets=(8, 16))}), r"t's data_offsets are wrong: it leaves a gap"),
    "data cut short": (
        st_bytes({"t": entry()}, bytes(15)),
        r"t's data_offsets \[0, 16\] end past the data section \(15 bytes\)",
    ),
    "trailing bytes": (st_bytes({"t": entry()}, bytes(17)), r"data ends at byte \d+, but the file has \d+ bytes$"),
    "metadata not strings": (st_bytes({"__metadata__": {"a": 1}, "t": entry()}), r"__metadata__ is not a map of str"),
}


@pytest.mark.parametrize("case", HOSTILE)
def test_the_safetensors_library_refuses_each_hostile_header_too(tmp_path, case):
    path = tmp_path / "hostile.safetensors"
    path.write_bytes(HOSTILE[case][0])
    with pytest.raises(Exception), safe_open(path, "np"):  # noqa: B017 (its errors have no common type)
        pass


@pytest.mark.parametrize("case", HOSTILE)
def test_a_hostile_header_is_one_clear_error(tmp_path, case):
    content, message = HOSTILE[case]
    path = tmp_path / "hostile.safetensors"
    path.write_bytes(content)
    with pytest.raises(SafetensorsHeaderError, match=message) as e:
        read_header(LocalReader(path))
    assert "\n" not in str(e.value) and str(e.value).startswith("hostile.safetensors: ")
    assert isinstance(e.value, CorruptCheckpointError)


def test_a_truncated_checkpoint_is_one_clear_error(checkpoint, tmp_path):
    content = checkpoint.read_bytes()
    n = header_length(checkpoint)
    path = tmp_path / "cut.safetensors"
    for cut in (0, 7, 8, 9, 8 + n // 2, 8 + n - 1, 8 + n, 8 + n + 1, len(content) - 1):
        path.write_bytes(content[:cut])
        with pytest.raises(SafetensorsHeaderError, match=r"^cut\.safetensors: ") as e:
            read_header(LocalReader(path), first_chunk=8)
        assert "\n" not in str(e.value)
