"""Byte ranges of a weight file, read without the whole file: the one interface the header parsers use.

Whether a GGUF quant or a fine-tune still holds a super weight is one number per file, so an audit of a quant
should cost its header and one row, kilobytes, not the gigabytes a download takes. `gguf_read` and
`safetensors_read` therefore see a file only through `RangeReader`: its size and `read(offset, length)`. A
local file (`LocalReader`) and a Hub file over HTTP `Range` requests (elsewhere) are then the same to them,
and the counters (`bytes_read`, `reads`) let tests and the scheduler see what an answer cost in bytes and
round trips.

A read is exact: all `length` bytes or an error naming the file. A short read taken silently is how a
truncated file turns into wrong numbers, so a reader never returns one.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Protocol, runtime_checkable

from .errors import CorruptCheckpointError


class ReadPastEndError(CorruptCheckpointError):
    """A read asked for bytes the file does not have: it is shorter than its header says, or changed."""


@runtime_checkable
class RangeReader(Protocol):
    """Random access to one file's bytes."""

    name: str
    """How messages name the file (its name or URL)."""
    size: int
    """The file's length in bytes, known before any read."""
    bytes_read: int
    """Bytes returned so far."""
    reads: int
    """Reads (round trips, for a remote file) so far."""

    def read(self, offset: int, length: int) -> bytes:
        """Exactly `length` bytes from `offset`.

        Raises:
            ReadPastEndError: the range does not lie inside the file.
        """
        ...


def check_range(name: str, size: int, offset: int, length: int) -> None:
    """Refuse a range outside [0, size): what every reader checks before it reads."""
    if offset < 0 or length < 0 or offset + length > size:
        raise ReadPastEndError(
            f"{name}: a read of {length:,} bytes at offset {offset:,} ends past the end of the file ({size:,} bytes)"
        )


def read_exactly(reader: RangeReader, offset: int, length: int) -> bytes:
    """`reader.read`, with its promise checked: a reader that answers short (a server ignoring the range, say)
    is an error here, not a struct.error or a wrong number later."""
    data = reader.read(offset, length)
    if len(data) != length:
        raise ReadPastEndError(f"{reader.name}: {len(data):,} bytes came back for a read of {length:,} at {offset:,}")
    return data


class LocalReader:
    """A local file, read by offset. It is opened per read, so nothing is left open to close."""

    def __init__(self, path: str | os.PathLike[str]):
        self.path = Path(path)
        self.name = self.path.name
        try:
            self.size = self.path.stat().st_size
        except OSError as e:
            raise CorruptCheckpointError(f"{self.path}: cannot be read ({e.strerror or e})") from e
        self.bytes_read = 0
        self.reads = 0

    def read(self, offset: int, length: int) -> bytes:
        check_range(self.name, self.size, offset, length)
        try:
            with self.path.open("rb") as f:
                f.seek(offset)
                data = f.read(length)
        except OSError as e:
            raise CorruptCheckpointError(f"{self.path}: cannot be read ({e.strerror or e})") from e
        if len(data) != length:  # the file shrank since it was opened
            raise ReadPastEndError(
                f"{self.name}: {len(data):,} of {length:,} bytes at offset {offset:,}: the file is shorter than "
                f"the {self.size:,} bytes it had (changed while read?)"
            )
        self.reads += 1
        self.bytes_read += length
        return data

    def __repr__(self) -> str:
        return f"LocalReader({str(self.path)!r}, size={self.size})"


class Prefix:
    """The first bytes of a file, read in growing chunks as a header parser asks for them.

    A header's length is known only once it is parsed (GGUF), or after its first 8 bytes (safetensors): the
    first read takes `first` bytes, each later one at least as many as are already held (so the prefix
    doubles, a few round trips for a header of megabytes), and no byte is read twice. `limit` bounds what an
    untrusted header can make us hold; `error` is the parser's error class for a header that runs past the
    file's end or the limit.
    """

    def __init__(self, reader: RangeReader, *, first: int, limit: int, error: type[CorruptCheckpointError]):
        self.reader = reader
        self.first = max(1, first)
        self.limit = limit
        self.error = error
        self.data = bytearray()

    def ensure(self, end: int, what: str) -> None:
        """Hold bytes [0, end) of the file, reading more if needed.

        Raises:
            error: `what` would end past the file's end or past `limit`.
        """
        held = len(self.data)
        if end <= held:
            return
        name, size = self.reader.name, self.reader.size
        if end > size:
            raise self.error(f"{name}: {what} ends at byte {end:,}, past the end of the file ({size:,} bytes)")
        if end > self.limit:
            raise self.error(f"{name}: {what} ends at byte {end:,}, beyond the {self.limit:,} bytes a header may take")
        want = max(end - held, held or self.first)
        self.data += read_exactly(self.reader, held, min(want, min(size, self.limit) - held))


def printable(name: str, limit: int = 200) -> str:
    """A name taken from a file (a key, a tensor's name) as a message shows it: on one line, and short."""
    shown = name if name.isprintable() else repr(name)
    return shown if len(shown) <= limit else shown[: limit - 1] + "…"
