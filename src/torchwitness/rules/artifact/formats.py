"""Find every pickle a model file holds, in the order and the way its loaders read them, without loading any.

Formats, tried as the loaders try them:

* ``PK`` zip archives: ``torch.save`` (``*/data.pkl``), TorchScript (``constants.pkl`` too), ``.npz``; every entry
  (duplicated names included) that is a ``.pkl``, starts as a ``.npy`` or as a binary pickle;
* ``\\x93NUMPY`` arrays: the pickle after the header when the dtype holds objects (``allow_pickle=True``);
* safetensors: the header only (no pickle);
* tar archives as pre-1.4 ``torch.save`` wrote them (``sys_info``, ``storages``, ``tensors``, ``pickle``);
  ``storages`` and ``tensors`` interleave pickles with raw bytes, which are skipped by their declared sizes;
* gzip, bz2, xz, lzma or zlib streams (compressed joblib files), decompressed on the fly;
* a raw pickle stream: pre-zip ``torch.save`` (magic number, protocol, system info, the object, storage keys),
  joblib (raw array bytes after each ``NumpyArrayWrapper``), ``pickle.dump``; pickles that follow are read too.

Anything else, or a pickle that ends before ``STOP``, is *unreadable*: the scan fails closed on it.
"""

from __future__ import annotations

import ast
import bz2
import gzip
import io
import lzma
import struct
import tarfile
import zipfile
import zlib
from dataclasses import dataclass, field
from typing import BinaryIO

from torchwitness.rules.artifact.pickle_ops import (
    JOBLIB_WRAPPER,
    MAX_NESTING,
    PickleAnalysis,
    analyse,
    looks_like_pickle,
)
from torchwitness.rules.artifact.safetensors_check import SafetensorsReport, check_safetensors, looks_like_safetensors

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C  # torch.serialization.MAGIC_NUMBER
NPY_MAGIC = b"\x93NUMPY"
# bytes per element of the legacy storage classes (torch.load keys them by class name, whatever the module)
STORAGE_SIZES = {"Double": 8, "Float": 4, "Half": 2, "Long": 8, "Int": 4, "Short": 2, "Char": 1, "Byte": 1,
                 "Bool": 1, "BFloat16": 2, "ComplexDouble": 16, "ComplexFloat": 8, "QUInt8": 1, "QInt8": 1,
                 "QInt32": 4, "QUInt4x2": 1, "QUInt2x4": 1, "Untyped": 1}
_COMPRESSED = ((b"\x1f\x8b", "gzip"), (b"BZh", "bz2"), (b"\xfd7zXZ", "xz"), (b"\x5d\x00\x00", "lzma"),
               (b"\x78", "zlib"), (b"\x04\x22\x4d\x18", "lz4"))
TAR_MEMBERS = ("sys_info", "storages", "tensors", "pickle")
JOBLIB_SUFFIXES = frozenset({".joblib", ".jbl"})


MAX_LINE = 1 << 26  # protocol-0 text lines (GLOBAL names, STRING data): longer is not a pickle anyone wrote


class Bounded:
    """A binary stream of known ``size`` whose reads never ask for more than the bytes left, so a forged length
    (``BINBYTES8`` of 2**60) fails as a short read instead of allocating it, and whose lines stop at MAX_LINE."""

    def __init__(self, f: BinaryIO, size: int) -> None:
        self.f, self.size = f, size

    def read(self, n: int | None = -1) -> bytes:
        left = max(self.size - self.f.tell(), 0)
        return self.f.read(left if n is None or n < 0 or n > left else n)

    def readline(self, limit: int | None = -1) -> bytes:
        left = min(max(self.size - self.f.tell(), 0), MAX_LINE)
        return self.f.readline(left if limit is None or limit < 0 else min(limit, left))

    def tell(self) -> int:
        return self.f.tell()

    def seek(self, pos: int, whence: int = 0) -> int:
        return self.f.seek(pos, whence)


@dataclass
class Contents:
    """What a file holds: its format, each pickle (member or offset, analysis), and why parts are unreadable."""

    format: str = ""
    pickles: list[tuple[str, PickleAnalysis]] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    safetensors: SafetensorsReport | None = None

    def add(self, member: str, a: PickleAnalysis, *, required: bool = True) -> bool:
        """Keep ``a``; a required pickle that does not parse makes the file unreadable."""
        if a.error is None or required or a.imports:
            self.pickles.append((member, a))
        if a.error is not None and required:
            self.unreadable.append(f"{member}: {a.error}")
        return a.error is None


def read_contents(raw: BinaryIO, size: int, suffix: str, *, depth: int = 0) -> Contents:
    """Every pickle of the file open as ``raw`` (seekable, binary, ``size`` bytes), and of the torch files its
    pickles load from bytes. Never raises for what the file holds: what cannot be read is in ``unreadable``."""
    out = Contents()
    f: BinaryIO = Bounded(raw, size)  # type: ignore[assignment]
    try:
        _dispatch(raw, f, size, suffix, out)
    except Exception as e:  # a corrupt container (zlib, tar, zip internals) is unreadable, never a traceback
        out.format = out.format or "unknown"
        out.unreadable.append(f"corrupt {out.format} file ({type(e).__name__}: {e})")
    _embedded_files(out, depth)
    return out


def _embedded_files(out: Contents, depth: int) -> None:
    """Scan each torch file a pickle loads from bytes (``torch.storage._load_from_bytes``) as a file of its own."""
    for member, top in list(out.pickles):
        for inner, a in top.walk():
            for pos, data in a.embedded:
                where = f"{member}>{inner + '>' if inner else ''}embedded@{pos}"
                if depth >= MAX_NESTING:
                    out.unreadable.append(f"{where}: torch files embedded deeper than {MAX_NESTING} levels")
                    continue
                sub = read_contents(io.BytesIO(data), len(data), ".pt", depth=depth + 1)
                out.pickles.extend((f"{where}>{m}", b) for m, b in sub.pickles)
                out.unreadable.extend(f"{where}: {u}" for u in sub.unreadable)


def _dispatch(raw: BinaryIO, f: BinaryIO, size: int, suffix: str, out: Contents) -> None:
    head = f.read(16)
    f.seek(0)
    if size == 0:
        out.format = "empty"
        out.unreadable.append("empty file")
    elif head[:4] in (b"PK\x03\x04", b"PK\x05\x06"):
        _zip(raw, out)
    elif head[:6] == NPY_MAGIC:
        out.format = "npy"
        _npy(f, "", out)
    elif suffix == ".safetensors" or looks_like_safetensors(head, size):
        out.format = "safetensors"
        out.safetensors = check_safetensors(raw)
    elif _is_tar(raw):
        _tar(raw, out)
    elif any(head.startswith(m) for m, _ in _COMPRESSED):
        _compressed(raw, head, out)
    else:
        _stream(f, size, suffix, out)
        return
    _hidden_pickle(f, out)


def _hidden_pickle(f: BinaryIO, out: Contents) -> None:
    """``pickle.load`` of the whole file would read a pickle at offset 0: a polyglot is scanned both ways."""
    a = analyse(f, 0, joblib=False)
    if a.error is None or a.imports:
        out.pickles.append(("@0 (as a raw pickle)", a))


def _zip(f: BinaryIO, out: Contents) -> None:
    try:
        with zipfile.ZipFile(f) as z:
            infos = z.infolist()
            names = [i.filename for i in infos]
            out.format = ("torchscript-zip" if any("/code/" in n for n in names) else
                          "torch-zip" if any(n.endswith("data.pkl") for n in names) else
                          "npz" if names and all(n.endswith(".npy") for n in names) else "zip")
            if len(set(names)) != len(names):
                out.notes.append("the archive repeats entry names; every copy was scanned")
            for info in infos:
                with z.open(info) as member:
                    m: BinaryIO = Bounded(member, info.file_size)  # type: ignore[assignment]
                    start = m.read(6)
                    m.seek(0)
                    if start == NPY_MAGIC:
                        _npy(m, info.filename, out)
                    elif info.filename.endswith(".pkl"):
                        out.add(info.filename, analyse(m))
                    elif looks_like_pickle(start):
                        out.add(info.filename, analyse(m), required=False)
    except (zipfile.BadZipFile, NotImplementedError, RuntimeError, EOFError, OSError, ValueError) as e:
        out.format = out.format or "zip"
        out.unreadable.append(f"corrupt or unsupported zip archive ({e})")
        return
    if out.format == "zip" and not out.pickles:
        out.unreadable.append("zip archive that is neither a torch, TorchScript nor .npz file")


def _npy(f: BinaryIO, member: str, out: Contents) -> None:
    """A ``.npy`` array: header, then a pickle when the dtype holds Python objects."""
    where = member or "array"
    f.seek(6)
    version = f.read(2)
    if len(version) != 2 or version[0] not in (1, 2, 3):
        out.unreadable.append(f"{where}: unknown .npy version {version!r}")
        return
    n_len = 2 if version[0] == 1 else 4
    raw = f.read(n_len)
    if len(raw) != n_len:
        out.unreadable.append(f"{where}: truncated .npy header")
        return
    (n,) = struct.unpack("<H" if n_len == 2 else "<I", raw)
    try:
        header = ast.literal_eval(f.read(n).decode("latin-1" if version[0] < 3 else "utf-8"))
        descr = header["descr"]
        import numpy.lib.format as npf  # parsing a dtype description never unpickles

        has_object = npf.descr_to_dtype(descr).hasobject
    except Exception as e:  # any failure to read the header: the file is not proven safe
        out.unreadable.append(f"{where}: corrupt .npy header ({type(e).__name__}: {e})")
        return
    if has_object:
        offset = 6 + 2 + n_len + n
        out.add(f"{member}@{offset}" if member else f"@{offset}", analyse(f, offset))


def _is_tar(f: BinaryIO) -> bool:
    f.seek(0)
    try:
        with tarfile.open(fileobj=f, mode="r:"):
            return True
    except (tarfile.TarError, OSError, ValueError, EOFError):
        return False
    finally:
        f.seek(0)


def _tar(f: BinaryIO, out: Contents) -> None:
    """A legacy tar-format torch file, read the way ``torch.serialization._legacy_load`` reads it."""
    out.format = "torch-tar"
    try:
        with tarfile.open(fileobj=f, mode="r:") as tar:
            members = [m for m in tar.getmembers() if m.name in TAR_MEMBERS]
            for link in (m for m in members if not m.isfile()):
                # torch extracts it and opens what it points to: a file the scan cannot see
                out.unreadable.append(f"tar member {link.name!r} is a link or special file, not data")
            if not any(m.name == "pickle" for m in members):
                out.format = "tar"
                out.unreadable.append("tar archive that is not a legacy torch checkpoint (no 'pickle' member)")
                return
            for m in (m for m in members if m.isfile()):
                extracted = tar.extractfile(m)
                if extracted is None:
                    continue
                data: BinaryIO = Bounded(extracted, m.size)  # type: ignore[assignment]
                if m.name in ("storages", "tensors"):
                    _tar_records(data, m.name, out)
                else:
                    out.add(m.name, analyse(data), required=m.name == "pickle")
    except (tarfile.TarError, OSError, EOFError) as e:
        out.unreadable.append(f"corrupt tar archive ({e})")


def _tar_records(data: BinaryIO, member: str, out: Contents) -> None:
    """``storages``: count, then (key, location, storage class) + int64 element count + raw bytes per storage,
    then the views; ``tensors``: count, then (key, storage, type) + ndim and int64 sizes, strides, offset."""
    count = analyse(data)
    if not out.add(f"{member}@0", count):
        return
    if not isinstance(count.result, int) or count.result < 0:
        out.unreadable.append(f"{member}: the record count is not a number")
        return
    for _ in range(count.result):
        at = data.tell()
        a = analyse(data, at)
        if not out.add(f"{member}@{at}", a):
            return
        try:
            if member == "storages":
                name = next((g.name for g in reversed(a.imports) if g.name.endswith("Storage")), "")
                element = STORAGE_SIZES[name[: -len("Storage")]]
                (numel,) = struct.unpack("<q", data.read(8))
                data.seek(data.tell() + numel * element)
            else:
                (ndim,) = struct.unpack("<i", data.read(4))
                data.seek(data.tell() + 4 + 16 * ndim + 8)
        except (KeyError, struct.error, ValueError, OSError):
            out.unreadable.append(f"{member}@{at}: a record the scanner cannot follow")
            return
    if member == "storages":
        at = data.tell()
        out.add(f"{member}@{at}", analyse(data, at))


class _Inflate(io.RawIOBase):
    """A zlib stream read as a file (what joblib's ``compress='zlib'`` writes); forward seeks only."""

    def __init__(self, f: BinaryIO) -> None:
        self._f, self._z, self._pos, self._buf = f, zlib.decompressobj(), 0, b""

    def readable(self) -> bool:
        return True

    def readinto(self, b: bytearray) -> int:  # type: ignore[override]
        while not self._buf and not self._z.eof:
            chunk = self._f.read(1 << 16)
            self._buf = self._z.decompress(chunk) if chunk else self._z.flush()
            if not chunk and not self._buf:
                break
        n = min(len(b), len(self._buf))
        b[:n], self._buf = self._buf[:n], self._buf[n:]
        self._pos += n
        return n

    def tell(self) -> int:
        return self._pos

    def seekable(self) -> bool:
        return True

    def seek(self, pos: int, whence: int = 0) -> int:
        target = pos if whence == 0 else self._pos + pos
        if target < self._pos:
            raise OSError("backward seek in a zlib stream")
        while self._pos < target and self.read(min(target - self._pos, 1 << 20)):
            pass
        return self._pos


def _compressed(f: BinaryIO, head: bytes, out: Contents) -> None:
    kind = next(k for m, k in _COMPRESSED if head.startswith(m))
    out.format = f"{kind}-compressed"
    if kind == "lz4":
        out.unreadable.append("lz4-compressed stream: the scanner cannot decompress it, so it is not checked")
        return
    opened: BinaryIO
    if kind == "gzip":
        opened = gzip.GzipFile(fileobj=f)
    elif kind == "bz2":
        opened = bz2.BZ2File(f)
    elif kind in ("xz", "lzma"):
        opened = lzma.LZMAFile(f, format=lzma.FORMAT_XZ if kind == "xz" else lzma.FORMAT_ALONE)  # noqa: SIM115
    else:
        opened = io.BufferedReader(_Inflate(f))  # type: ignore[arg-type]
    with opened:
        try:
            first = analyse(opened)
        except (OSError, EOFError, lzma.LZMAError, zlib.error) as e:
            out.unreadable.append(f"corrupt {kind} stream ({e})")
            return
        out.add("@0", first)
        if first.arrays:
            out.format = f"joblib-{kind}"


def _stream(f: BinaryIO, size: int, suffix: str, out: Contents) -> None:
    first = analyse(f, 0)
    if first.error is not None and first.opcodes <= 1 and not first.imports:
        out.format = "unknown"
        out.unreadable.append(f"not a known model format: not a zip, .npy, safetensors, tar, compressed or "
                              f"pickle file ({first.error})")
        return
    out.add("@0", first)
    out.format = "pickle"
    if first.arrays or any(g.qualname == JOBLIB_WRAPPER for g in first.imports):
        out.format = "joblib"
        # pickle.load reads no array bytes: what follows a wrapper's BUILD is opcodes to it. After a padding byte
        # (joblib >= 1.2, checked to be joblib's) it stops there; raw bytes with no padding (older joblib) and an
        # object array's pickle (it shares the outer memo) read on. A file named for joblib is judged as joblib
        # reads it unless it has unpadded raw bytes; any other name may be given to pickle.load, so that reading
        # is judged too.
        if suffix in JOBLIB_SUFFIXES and not first.unaligned:
            out.notes.append("joblib file: judged as joblib.load reads it; pickle.load would read it differently")
        else:
            out.pickles.append(("@0 (as a plain pickle)", analyse(f, 0, joblib=False)))
    if first.error is not None:
        return
    offset = first.end
    if out.format == "pickle" and first.result == LEGACY_MAGIC:
        # protocol version, sys info, the object, storage keys; raw storage bytes follow and are not pickles
        out.format = "torch-legacy"
        for _ in range(4):
            a = analyse(f, offset)
            if not out.add(f"@{offset}", a):
                return
            offset = a.end
        return
    while offset < size:  # a loader reading pickle after pickle (joblib caches, custom formats)
        f.seek(offset)
        a = analyse(f, offset)
        if a.error is not None:
            if a.imports:
                out.pickles.append((f"@{offset}", a))
            out.notes.append(f"{size - offset} bytes after the pickle are not a pickle")
            return
        out.pickles.append((f"@{offset}", a))
        offset = a.end
