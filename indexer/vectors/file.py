"""The vector index file: a fixed header (kind, dim, catalog seq, sizes, checksum) and the FAISS payload,
written atomically (temp file, fsync, rename, fsync of the folder).

A load verifies the whole file (size and checksum) unless the file is, by its stat signature, the very file
its writer wrote: see `signature_of` and `open_index_file`."""
from __future__ import annotations

import mmap
import os
import struct
import zlib
from dataclasses import dataclass, replace
from pathlib import Path

from indexer.durable import fsync_dir, stat_key
from indexer.errors import IndexFileError


@dataclass(frozen=True)
class Header:
    """Fixed-size file header; the checksum covers every other header field and the payload."""

    kind: str
    dim: int
    seq: int
    ntotal: int
    built_for: int
    nprobe: int
    payload_len: int
    checksum: int = 0

    MAGIC = b"SEVINDEX"
    VERSION = 1
    _FORMAT = struct.Struct("<8sI16sIqqqqqI")
    SIZE = _FORMAT.size

    def _fields(self) -> bytes:
        return self._FORMAT.pack(self.MAGIC, self.VERSION, self.kind.encode("ascii"), self.dim, self.seq,
                                 self.ntotal, self.built_for, self.nprobe, self.payload_len, 0)

    def with_checksum(self, payload: memoryview) -> "Header":
        crc = zlib.crc32(payload, zlib.crc32(self._fields()))
        return replace(self, checksum=crc)

    def pack(self) -> bytes:
        return self._fields()[:-4] + struct.pack("<I", self.checksum)

    @classmethod
    def unpack(cls, data: bytes | memoryview, path: Path) -> "Header":
        if len(data) < cls.SIZE:
            raise IndexFileError(f"vector index {path} is truncated ({len(data)} bytes, header needs {cls.SIZE})")
        magic, version, kind, dim, seq, ntotal, built_for, nprobe, payload_len, crc = cls._FORMAT.unpack_from(data)
        if magic != cls.MAGIC:
            raise IndexFileError(f"vector index {path} is not a searchengine index file (bad magic)")
        if version != cls.VERSION:
            raise IndexFileError(f"vector index {path} has unsupported format version {version}")
        kind_name = kind.rstrip(b"\0").decode("ascii", "replace")
        return cls(kind_name, dim, seq, ntotal, built_for, nprobe, payload_len, crc)


def write_index_file(path: Path, header: Header, payload: memoryview) -> None:
    """Write atomically: temp file in the same folder, fsync, rename over `path`, fsync the folder."""
    import tempfile  # writers only: a query never imports it

    header = header.with_checksum(payload)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(header.pack())
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


@dataclass(frozen=True)
class IndexFile:
    """A saved index file, opened: its header, its payload (mapped, not read) and the inode they came from."""

    header: Header
    payload: memoryview
    inode: int
    verified: bool  # the checksum was computed by this load (False: the file was trusted by its signature)
    signature: str  # signature_of the file as opened


def open_index_file(path: Path, trusted: str | None = None) -> IndexFile:
    """Header and payload of a saved index, checked for size and checksum; IndexFileError says what is wrong.

    The checksum is not computed again when the file's signature is `trusted`, the one its writer recorded
    (`signature_of`): a query then reads only what its search touches."""
    data, st = _mapped(path)
    signature = _signature(st, bytes(data[:Header.SIZE]))
    if trusted and signature == trusted:
        header = Header.unpack(data, path)
        if len(data) == Header.SIZE + header.payload_len:
            return IndexFile(header, memoryview(data)[Header.SIZE:], st.st_ino, False, signature)
    return IndexFile(*read_index_file_data(path, data), st.st_ino, True, signature)


def read_index_file(path: Path) -> tuple[Header, memoryview]:
    """The header and payload of a saved index, checked for size and checksum; IndexFileError says what is wrong."""
    return read_index_file_data(path, _mapped(path)[0])


def read_index_file_data(path: Path, data: bytes | mmap.mmap) -> tuple[Header, memoryview]:
    header = Header.unpack(data, path)
    payload = memoryview(data)[Header.SIZE:]
    if payload.nbytes != header.payload_len:
        problem = "truncated" if payload.nbytes < header.payload_len else "has trailing bytes"
        raise IndexFileError(f"vector index {path} is {problem} "
                             f"({payload.nbytes} payload bytes, header says {header.payload_len})")
    if header.with_checksum(payload).checksum != header.checksum:
        raise IndexFileError(f"vector index {path} is corrupt (checksum mismatch)")
    return header, payload


def signature_of(path: Path) -> str:
    """The file's identity as a writer left it: inode, size, mtime and ctime (ns) and the header's checksum.

    Any write to the file moves its ctime (which no user-level call can set back) and a replaced file is a new
    inode, so a file whose signature is the one recorded when it was written and verified still holds those
    bytes. What the signature cannot see is damage below the file system (a failing disk); the next index run
    verifies the whole file again."""
    with open(path, "rb") as fh:
        st = os.fstat(fh.fileno())
        head = os.pread(fh.fileno(), Header.SIZE, 0)
    return _signature(st, head)


def _signature(st: os.stat_result, head: bytes) -> str:
    crc = head[-4:].hex() if len(head) == Header.SIZE else "none"
    return f"{stat_key(st)}:{crc}"


def _mapped(path: Path) -> tuple[bytes | mmap.mmap, os.stat_result]:
    """The file's bytes, mapped rather than copied (a cold query reads a 50 MB index in a few ms less), and its
    stat."""
    try:
        with open(path, "rb") as fh:
            st = os.fstat(fh.fileno())
            if st.st_size == 0:
                return b"", st
            return mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ), st
    except FileNotFoundError:
        raise IndexFileError(f"vector index {path} is missing") from None
    except OSError as exc:
        raise IndexFileError(f"vector index {path} cannot be read ({exc.strerror or exc})") from None
