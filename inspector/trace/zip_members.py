"""The members of a zip from an untrusted file, unpacked within bounds.

zipfile trusts the numbers a zip states about itself. It reads the central directory (the
list of members, as long as the zip says) in one read: 40 MB of it is 500,000 members, 2.5 s
and 280 MB of ZipInfo objects. ZipFile.read() inflates a member whole before cutting it to its
declared size: a member declaring 1,000 bytes can inflate to a gigabyte first. And it inflates
bzip2 and LZMA members with no bound on the output at all. So here:

- the file is read through _BoundedReads, which refuses any single read over MAX_READ: the
  directory of a trace's two members is about 150 bytes, and member data comes in CHUNKs;
- a member must be stored or deflated (as save() writes them);
- a member is unpacked CHUNK bytes at a time and counted, refused at the first byte past its
  declared size or its limit (zipfile's inflater then holds at most a chunk's worth).
"""

from __future__ import annotations

import io
import os
import stat
import struct
import zipfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from inspector.trace.model import TraceError

CHUNK = 2**20
MAX_READ = 2 * CHUNK
# What a damaged or hostile zip can make zipfile raise (RuntimeError: an encrypted member;
# NotImplementedError: an unknown compression; ValueError: a name that is not UTF-8...).
DAMAGED = (zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error, struct.error, EOFError, NotImplementedError,
           RuntimeError, ValueError, OSError)


class _DirectoryTooLarge(Exception):
    def __init__(self, size: int):
        super().__init__(size)
        self.size = size


class _BoundedReads(io.BufferedReader):
    """A file whose single reads are at most MAX_READ bytes (see the module docstring)."""

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            size = max(os.fstat(self.fileno()).st_size - self.tell(), 0)
        if size > MAX_READ:
            raise _DirectoryTooLarge(size)
        return super().read(size)


@contextmanager
def open_zip(path: Path) -> Iterator[zipfile.ZipFile]:
    """`path` as a zip, for reading. TraceError when it is not a readable regular file, or not a
    zip, or damaged (also while its members are read, inside the with block)."""
    try:
        mode = os.stat(path).st_mode
        if stat.S_ISDIR(mode):
            raise TraceError(f"{path} is a directory, not a trace file")
        if not stat.S_ISREG(mode):
            raise TraceError(f"{path} is not a regular file")
        file = _BoundedReads(io.FileIO(path))
    except FileNotFoundError:
        raise TraceError(f"{path} does not exist") from None
    except OSError as exc:  # permission denied, a name too long...
        raise TraceError(f"{path} cannot be read: {(exc.strerror or str(exc)).lower()}") from None
    with file:
        try:
            with zipfile.ZipFile(file) as zf:
                yield zf
        except TraceError:
            raise
        except _DirectoryTooLarge as exc:
            raise TraceError(f"{path} is not a .mltrace file: its zip directory is {exc.size:,} bytes, far more "
                             "than a trace's two members need") from None
        except DAMAGED as exc:
            raise TraceError(f"{path} is not a .mltrace file, or it is truncated or damaged (zip: {exc})") from None


END_RECORD = b"PK\x05\x06"  # a zip's last 22 bytes: its end-of-directory record (no comment)
END_RECORD_SIZE = 22


def check_nothing_around(zf: zipfile.ZipFile, path: Path) -> None:
    """Refuse bytes before the zip's first member or after its end record (a zip comment
    included): zip readers skip both, so anything could travel there unseen beside a trace
    that looks valid, as in a member no trace has. save() writes neither."""
    infos = zf.infolist()
    if infos and min(info.header_offset for info in infos) != 0:
        raise TraceError(f"{path} has data before its zip's first member; a .mltrace is a zip alone")
    assert zf.fp is not None  # open
    size = zf.fp.seek(0, os.SEEK_END)
    zf.fp.seek(size - END_RECORD_SIZE)
    if zf.comment or zf.fp.read(END_RECORD_SIZE)[:4] != END_RECORD:
        raise TraceError(f"{path} has data after its zip's end (or a zip comment); a .mltrace is a zip alone")


def read_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, what: str) -> bytes:
    """Member `info`, unpacked CHUNK bytes at a time and counted against its declared size
    (which the caller has checked against its limits)."""
    if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        raise TraceError(f"{what} is compressed with zip method {info.compress_type}; a trace's members are stored "
                         "or deflated")
    chunks, total = [], 0
    with zf.open(info) as member:
        while chunk := member.read(CHUNK):
            total += len(chunk)
            if total > info.file_size:
                raise TraceError(f"{what} holds more than the {info.file_size:,} bytes its zip entry declares")
            chunks.append(chunk)
    if total != info.file_size:
        raise TraceError(f"{what} is truncated: {total:,} of the {info.file_size:,} bytes its zip entry declares")
    return b"".join(chunks)
