"""Decoded training audio on disk instead of in memory (issue 11, item 1).

:class:`AudioStore` is a ``Sequence[np.ndarray]``: clips are appended once, as float32 samples, to one file
in a directory of their own, and every ``store[i]`` reads that clip back with ``os.pread``. Peak memory
then does not grow with the number of clips: what a training step holds is its batch. Explicit reads
rather than ``np.memmap`` because the resident pages of a mapping count in the process's RSS and an epoch
touches all of them (``benchmarks/scale`` measures both); reads go through the page cache, which the
kernel reclaims."""

from __future__ import annotations

import os
import shutil
import tempfile
import weakref
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np

_ITEM = np.dtype(np.float32).itemsize


def _cleanup(fd: int | None, directory: str | None) -> None:
    if fd is not None:
        try:
            os.close(fd)
        except OSError:
            pass
    if directory is not None:
        shutil.rmtree(directory, ignore_errors=True)


class AudioStore(Sequence):
    """Clips' float32 samples in one file; ``store[i]`` reads clip ``i``, ``store.lengths`` their lengths.

    ``directory`` None: a private temporary directory, removed by :meth:`close` (or when the store is
    garbage-collected). A given directory is kept (the file ``audio.f32`` in it is rewritten)."""

    def __init__(self, directory: str | Path | None = None):
        own = directory is None
        self.directory = Path(tempfile.mkdtemp(prefix="edgeser-audio-")) if own else Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.path = self.directory / "audio.f32"
        self._fd: int | None = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        self._offsets: list[int] = [0]
        self._finalizer = weakref.finalize(self, _cleanup, self._fd, str(self.directory) if own else None)

    @classmethod
    def of(cls, wavs: Iterable[np.ndarray], directory: str | Path | None = None) -> AudioStore:
        """A store holding ``wavs`` (each consumed as it comes: the iterable may decode lazily)."""
        store = cls(directory)
        for w in wavs:
            store.append(w)
        return store

    def append(self, wav: np.ndarray) -> None:
        """Add one clip (1-D; stored as float32)."""
        if self._fd is None:
            raise ValueError("the audio store is closed")
        data = np.ascontiguousarray(wav, dtype=np.float32)
        if data.ndim != 1:
            raise ValueError(f"a clip must be 1-D, got shape {data.shape}")
        os.pwrite(self._fd, data.tobytes(), self._offsets[-1] * _ITEM)
        self._offsets.append(self._offsets[-1] + len(data))

    @property
    def lengths(self) -> np.ndarray:
        """``[N]`` samples per clip (no reading)."""
        return np.diff(np.asarray(self._offsets, dtype=np.int64))

    def __len__(self) -> int:
        return len(self._offsets) - 1

    def __getitem__(self, i):  # noqa: ANN001 (int or slice, as Sequence)
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"clip {i} of {n}")
        i %= n
        if self._fd is None:
            raise ValueError("the audio store is closed")
        start, stop = self._offsets[i], self._offsets[i + 1]
        buf = bytearray((stop - start) * _ITEM)
        got = os.preadv(self._fd, [buf], start * _ITEM)
        if got != len(buf):
            raise OSError(f"{self.path}: short read of clip {i} ({got} of {len(buf)} bytes)")
        return np.frombuffer(buf, dtype=np.float32)

    def __iter__(self) -> Iterator[np.ndarray]:
        for i in range(len(self)):
            yield self[i]

    def __getstate__(self) -> dict:
        # a DataLoader worker started by "spawn" (macOS, Windows) gets a reader of the same file
        return {"path": str(self.path), "offsets": self._offsets}

    def __setstate__(self, state: dict) -> None:
        self.path = Path(state["path"])
        self.directory = self.path.parent
        self._offsets = state["offsets"]
        self._fd = os.open(self.path, os.O_RDONLY)
        self._finalizer = weakref.finalize(self, _cleanup, self._fd, None)  # a reader never removes the file

    def close(self) -> None:
        """Close the file and remove a private directory; the store is unusable afterwards."""
        self._finalizer()
        self._fd = None


def lengths_of(wavs: Sequence[np.ndarray]) -> np.ndarray:
    """Samples per clip, without reading a store's audio."""
    lengths = getattr(wavs, "lengths", None)
    return np.asarray(lengths if lengths is not None else [len(w) for w in wavs], dtype=np.int64)
