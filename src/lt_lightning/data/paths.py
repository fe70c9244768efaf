"""Compact storage of many image paths: one bytes buffer + int64 offsets + one root string.

A :class:`PathTable` of the 437,513 iNaturalist 2018 training paths costs about 30 MB (the path bytes plus 8 bytes
an item) where a numpy unicode array costs 4 bytes a character with the root repeated, and a Python list of ``str``
50+ bytes of object overhead an item that DataLoader workers touch (copy-on-read). It pickles as two numpy arrays.
Paths are bytes in the file-system encoding (``os.fsencode``); ``table[i]`` decodes one on access.

Example:
    >>> table = PathTable.from_paths(["a/x.jpg", "b/y.jpg", "c/z.jpg"], root="/data")
    >>> len(table), table[1], table[-1]
    (3, '/data/b/y.jpg', '/data/c/z.jpg')
    >>> list(table.take([2, 0]))
    ['/data/c/z.jpg', '/data/a/x.jpg']
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

_CHUNK = 1 << 15  # items gathered per numpy pass: bounds the int64 temporaries to a few MB
_SLASH = ord("/")


def gather_segments(buffer: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Concatenate ``buffer[starts[k]:ends[k]]`` for every k: ``(data, offsets)`` with ``len(starts) + 1`` offsets.

    Vectorised (a repeat + arange per chunk of items); segment k of the result is ``data[offsets[k]:offsets[k+1]]``.

    Example:
        >>> buffer = np.frombuffer(b"hello world", np.uint8)
        >>> data, offsets = gather_segments(buffer, np.array([6, 0]), np.array([11, 5]))
        >>> data.tobytes(), offsets.tolist()
        (b'worldhello', [0, 5, 10])
    """
    starts = np.asarray(starts, dtype=np.int64)
    lengths = np.asarray(ends, dtype=np.int64) - starts
    offsets = np.zeros(len(starts) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    data = np.empty(int(offsets[-1]), dtype=np.uint8)
    for lo in range(0, len(starts), _CHUNK):
        hi = min(lo + _CHUNK, len(starts))
        a, b = int(offsets[lo]), int(offsets[hi])
        if a == b:
            continue
        # Byte j of the output comes from j + (start of its segment - output offset of its segment).
        shift = np.repeat(starts[lo:hi] - offsets[lo:hi], lengths[lo:hi])
        data[a:b] = buffer[np.arange(a, b, dtype=np.int64) + shift]
    return data, offsets


class PathTable:
    """N relative paths in one uint8 buffer with int64 offsets, plus one ``root``; ``table[i]`` is ``root/rel_i``.

    Args:
        data: uint8 buffer of the concatenated relative paths (file-system encoding).
        offsets: int64, ``N + 1`` non-decreasing values from 0 to ``len(data)``.
        root: prefix joined with ``/`` to every path ("" for paths stored whole).

    Indexing with an int gives a ``str``; with a slice, a list or an integer array, a new table (:meth:`take`).
    """

    __slots__ = ("data", "offsets", "root", "_prefix")
    IS_PATH_TABLE = True  # ImageFileDataset takes any object of a class with this flag as a table

    def __init__(self, data: np.ndarray, offsets: np.ndarray, root: str | Path = "") -> None:
        data, offsets = np.asarray(data), np.asarray(offsets)
        if data.dtype != np.uint8 or data.ndim != 1:
            raise ValueError(f"data must be a 1-D uint8 array, got {data.dtype} shape {data.shape}")
        if offsets.ndim != 1 or len(offsets) < 1 or not np.issubdtype(offsets.dtype, np.integer):
            raise ValueError(
                f"offsets must be a 1-D integer array of N + 1 values, got {offsets.dtype} {offsets.shape}"
            )
        offsets = offsets.astype(np.int64, copy=False)
        if offsets[0] != 0 or offsets[-1] != len(data) or (len(offsets) > 1 and np.any(np.diff(offsets) < 0)):
            raise ValueError(f"offsets must rise from 0 to len(data) = {len(data)}, got {offsets[:3]}...{offsets[-1]}")
        self.data, self.offsets, self.root = data, offsets, str(root)
        self._prefix = (self.root.rstrip("/") or "/") + "/" if self.root else ""

    @classmethod
    def from_paths(cls, paths: Sequence[str | Path], root: str | Path = "") -> PathTable:
        """A table of ``paths`` (relative to ``root``, or whole when ``root`` is "").

        Example:
            >>> PathTable.from_paths([Path("a.png")])[0]
            'a.png'
        """
        encoded = [os.fsencode(p) for p in paths]
        lengths = np.fromiter((len(b) for b in encoded), dtype=np.int64, count=len(encoded))
        offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        return cls(np.frombuffer(b"".join(encoded), dtype=np.uint8).copy(), offsets, root)

    @classmethod
    def from_segments(
        cls, buffer: np.ndarray, starts: np.ndarray, ends: np.ndarray, root: str | Path = ""
    ) -> PathTable:
        """A table of the byte ranges ``buffer[starts[k]:ends[k]]`` (e.g. the path fields of a list file's bytes).

        Example:
            >>> PathTable.from_segments(np.frombuffer(b"a.jpg 0\\nb.jpg 1\\n", np.uint8), [0, 8], [5, 13])[1]
            'b.jpg'
        """
        data, offsets = gather_segments(np.asarray(buffer, dtype=np.uint8), starts, ends)
        return cls(data, offsets, root)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def relative(self, i: int) -> str:
        """Path ``i`` without the root."""
        n = len(self)
        i = int(i)
        if not -n <= i < n:
            raise IndexError(f"path index {i} out of range for a table of {n} paths")
        i %= n
        return os.fsdecode(self.data[self.offsets[i] : self.offsets[i + 1]].tobytes())

    def __getitem__(self, i: Any) -> Any:
        if isinstance(i, int | np.integer):
            path = self.relative(i)
            return path if path.startswith("/") else self._prefix + path  # an absolute path is kept as it is
        if isinstance(i, slice):
            return self.take(np.arange(len(self))[i])
        return self.take(i)

    def __iter__(self) -> Iterator[str]:
        data, offsets, prefix = self.data.tobytes(), self.offsets.tolist(), self._prefix
        for a, b in zip(offsets[:-1], offsets[1:], strict=True):
            path = os.fsdecode(data[a:b])
            yield path if path.startswith("/") else prefix + path

    def tolist(self) -> list[str]:
        """Every full path as a Python list (N ``str`` objects: for small tables)."""
        return list(self)

    def take(self, indices: Any) -> PathTable:
        """A new, repacked table of paths ``indices`` (in that order, repeats allowed), same root.

        Example:
            >>> PathTable.from_paths(["a", "bb", "ccc"]).take([2, 2, 0]).tolist()
            ['ccc', 'ccc', 'a']
        """
        indices = np.asarray(indices)
        if indices.ndim != 1 or (indices.size and not np.issubdtype(indices.dtype, np.integer)):
            raise ValueError(f"indices must be a 1-D integer array, got dtype {indices.dtype} shape {indices.shape}")
        indices = indices.astype(np.int64, copy=False)
        n = len(self)
        if indices.size and (indices.min() < -n or indices.max() >= n):
            raise IndexError(f"indices must lie in [-{n}, {n}), got min {indices.min()} and max {indices.max()}")
        indices = indices % max(n, 1)
        if len(indices) == n and np.array_equal(indices, np.arange(n)):
            return PathTable(self.data, self.offsets, self.root)  # the buffers are never written: share them
        return PathTable.from_segments(self.data, self.offsets[indices], self.offsets[indices + 1], self.root)

    def _slashes(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per path: start, end, and the position of its last ``/`` (start - 1 when it has none)."""
        starts, ends = self.offsets[:-1], self.offsets[1:]
        slashes = np.flatnonzero(self.data == _SLASH)
        k = np.searchsorted(slashes, ends) - 1  # last slash before the end
        last = np.where(k >= 0, slashes[np.maximum(k, 0)] if len(slashes) else starts - 1, starts - 1)
        last = np.where(last >= starts, last, starts - 1)
        return starts, ends, last

    def without_last_dir(self) -> PathTable:
        """Every path with its last directory removed: ``val/n01440764/x.JPEG`` becomes ``val/x.JPEG``.

        Example:
            >>> PathTable.from_paths(["val/n01/x.JPEG", "y.JPEG", "n02/z.JPEG"]).without_last_dir().tolist()
            ['val/x.JPEG', 'y.JPEG', 'z.JPEG']
        """
        starts, ends, last = self._slashes()
        slashes = np.flatnonzero(self.data == _SLASH)
        k = np.searchsorted(slashes, last) - 1  # the slash before the last one, if inside the path
        prev = slashes[np.maximum(k, 0)] if len(slashes) else starts - 1
        prev = np.where((k >= 0) & (prev >= starts) & (last >= starts), prev, starts - 1)
        keep_dir = np.where(last >= starts, prev + 1, starts)  # prefix kept: up to and including prev's slash
        seg_starts = np.stack([starts, np.where(last >= starts, last + 1, starts)], axis=1).ravel()
        seg_ends = np.stack([keep_dir, ends], axis=1).ravel()
        data, offsets = gather_segments(self.data, seg_starts, seg_ends)
        return PathTable(data, offsets[::2].copy(), self.root)

    def with_last_dir(self, names: Sequence[str], which: Any) -> PathTable:
        """Every path with directory ``names[which[i]]`` inserted before its file name: ``val/x.JPEG`` with name
        ``n01440764`` becomes ``val/n01440764/x.JPEG``.

        Example:
            >>> PathTable.from_paths(["val/x.JPEG", "y.JPEG"]).with_last_dir(["n01", "n02"], [1, 0]).tolist()
            ['val/n02/x.JPEG', 'n01/y.JPEG']
        """
        which = np.asarray(which, dtype=np.int64)
        if which.shape != (len(self),):
            raise ValueError(f"which must give one name index per path ({len(self)}), got shape {which.shape}")
        starts, ends, last = self._slashes()
        encoded = [os.fsencode(n) + b"/" for n in names]
        name_offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
        np.cumsum([len(b) for b in encoded], out=name_offsets[1:])
        buffer = np.concatenate([self.data, np.frombuffer(b"".join(encoded), dtype=np.uint8)])
        base = len(self.data)
        seg_starts = np.stack([starts, base + name_offsets[which], last + 1], axis=1).ravel()
        seg_ends = np.stack([last + 1, base + name_offsets[which + 1], ends], axis=1).ravel()
        data, offsets = gather_segments(buffer, seg_starts, seg_ends)
        return PathTable(data, offsets[::3].copy(), self.root)

    @property
    def nbytes(self) -> int:
        """Bytes held: the path buffer, the offsets and the root."""
        return int(self.data.nbytes + self.offsets.nbytes + len(self.root))

    def __getstate__(self) -> tuple[np.ndarray, np.ndarray, str]:
        return self.data, self.offsets, self.root

    def __setstate__(self, state: tuple[np.ndarray, np.ndarray, str]) -> None:
        data, offsets, root = state
        self.data, self.offsets, self.root = data, offsets, root
        self._prefix = (root.rstrip("/") or "/") + "/" if root else ""

    def __eq__(self, other: object) -> bool:
        if not getattr(type(other), "IS_PATH_TABLE", False):
            return NotImplemented
        return (
            self._prefix == other._prefix
            and np.array_equal(self.offsets, other.offsets)
            and np.array_equal(self.data, other.data)
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        first = f", first={self[0]!r}" if len(self) else ""
        return f"PathTable(n={len(self)}, root={self.root!r}{first}, nbytes={self.nbytes})"
