"""Data-parallel training over processes started by ``torchrun`` (one process per GPU, or several CPU
processes): who this process is, and the few collective steps :func:`edgeser.adapt.engine.fit` needs.

``torchrun --nproc-per-node N --no-python edgeser train|adapt ...`` sets ``WORLD_SIZE``, ``RANK`` and
``LOCAL_RANK`` in each process; :func:`join` then opens the process group (NCCL on CUDA, gloo on CPU)
from torchrun's rendezvous (so several machines work the same way). Without those variables everything
here is a no-op for one process, and :func:`edgeser.adapt.engine.fit` runs as it always has.

The design, in one place (see ``docs/ADAPTATION.md``, "Data-parallel training"):

- every process runs the same code on the same data with the same seed, so every random draw of the
  loop (batches, crops, augmentation) is the same everywhere; each process trains on its share of each
  batch (:meth:`World.shard`) and DistributedDataParallel averages the gradients. The batch is the
  *global* batch, so a run on N processes takes the steps a one-process run takes, and a saved state
  resumes on any number of processes;
- batch norm normalises with the statistics of the whole batch, all shares together
  (:func:`shared_batch_norm`), as in one process, so all processes also keep the same running statistics;
- loss terms over the batch (diversity) see the whole batch (:func:`whole_batch`);
- whole-clip passes (pseudo-labels, the EMA teacher's samples, validation) are split over the processes
  and gathered (:func:`map_rows`);
- rank 0 alone writes checkpoints and state and prints; it asks the LALM first, and the others then read
  its answers from the shared cache (:func:`main_first`)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import timedelta

import numpy as np
import torch
import torch.distributed as dist

from ..errors import EdgeserError
from .audio_store import lengths_of
from .norm import FrameBatchNorm

#: how long a process waits for the others at a collective step (the LALM annotation by rank 0 included)
TIMEOUT = timedelta(hours=6)


@dataclass(frozen=True)
class World:
    """This process's place among the data-parallel processes (``size`` 1: a plain run)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that writes files and prints."""
        return self.rank == 0

    @property
    def parallel(self) -> bool:
        return self.size > 1

    def shard(self, items: np.ndarray) -> np.ndarray:
        """This process's share of a batch: every ``size``-th item from its rank on.

        >>> World(1, 2).shard(np.arange(5))
        array([1, 3])
        """
        return items[self.rank :: self.size]


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise EdgeserError(f"{name}={raw!r} is not an integer (set by torchrun for data-parallel runs)") from None


def world_from_env() -> World:
    """The world torchrun describes in ``WORLD_SIZE`` / ``RANK`` / ``LOCAL_RANK`` (one process without them)."""
    size = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    local = _env_int("LOCAL_RANK", rank)
    if size < 1 or not 0 <= rank < size:
        raise EdgeserError(f"RANK={rank} and WORLD_SIZE={size} do not describe a data-parallel process")
    return World(rank, size, local)


def current() -> World:
    """The world of the open process group, else the one the environment describes."""
    if dist.is_available() and dist.is_initialized():
        return World(dist.get_rank(), dist.get_world_size(), _env_int("LOCAL_RANK", dist.get_rank()))
    return world_from_env()


def device_for(world: World, spec: str | None) -> str | None:
    """The device of this process: ``cuda`` (or no choice, with CUDA present) becomes ``cuda:<local rank>``
    in a data-parallel run, so that each process has its own GPU; anything else is kept."""
    if not world.parallel:
        return spec
    if spec in (None, "cuda") and torch.cuda.is_available():
        return f"cuda:{world.local_rank}"
    if spec and spec.startswith("cuda:") and _env_int("LOCAL_WORLD_SIZE", 1) > 1:
        raise EdgeserError(
            f"--device {spec} would put every process of this machine on one GPU: under torchrun use --device cuda "
            "(process i takes cuda:<local rank>) and choose the GPUs with CUDA_VISIBLE_DEVICES"
        )
    return spec


def join(world: World, device: torch.device) -> bool:
    """Open the process group of a data-parallel run (NCCL for CUDA devices, gloo otherwise). Returns True
    when this call opened it (the caller then closes it with :func:`leave`)."""
    if not world.parallel or dist.is_initialized():
        return False
    if not dist.is_available():
        raise EdgeserError("this torch build has no torch.distributed: data-parallel training is not possible")
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend, timeout=TIMEOUT)
    return True


def backend() -> str:
    """The open process group's backend ("gloo", "nccl"), or "none"."""
    return str(dist.get_backend()) if dist.is_available() and dist.is_initialized() else "none"


def leave(opened: bool) -> None:
    """Close the process group :func:`join` opened (after all processes arrive)."""
    if opened and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def _active(world: World) -> bool:
    """A data-parallel world whose process group is open (collective steps happen only then)."""
    return world.parallel and dist.is_available() and dist.is_initialized()


@contextlib.contextmanager
def main_first(world: World) -> Iterator[None]:
    """Rank 0 runs the block first, then the others: e.g. rank 0 asks the LALM and fills the answer cache,
    the others then read the same answers from it instead of asking (and paying) again."""
    if _active(world) and not world.is_main:
        dist.barrier()
    yield
    if _active(world) and world.is_main:
        dist.barrier()


def _gather_padded(part: torch.Tensor, world: World, differentiable: bool = False) -> list[torch.Tensor]:
    """All processes' ``part`` (rows may differ in number; other dims equal; on the backend's device), in rank
    order. ``differentiable``: the gather keeps gradients (its backward sums the processes' gradients)."""
    n = _to_collective(torch.tensor([part.shape[0]], dtype=torch.int64))
    sizes = [torch.zeros_like(n) for _ in range(world.size)]
    dist.all_gather(sizes, n)
    counts = [int(c.item()) for c in sizes]
    most = max(counts)
    if part.shape[0] < most:
        part = torch.cat([part, part.new_zeros((most - part.shape[0], *part.shape[1:]))])
    if differentiable:
        from torch.distributed.nn.functional import all_gather

        parts = list(all_gather(part))
    else:
        parts = [torch.empty_like(part) for _ in range(world.size)]
        dist.all_gather(parts, part)
    return [p[:c] for p, c in zip(parts, counts)]


def all_rows(t: torch.Tensor, world: World) -> torch.Tensor:
    """The rows of ``t`` from every process, concatenated in rank order (``t`` itself in one process)."""
    if not _active(world):
        return t
    return torch.cat(_gather_padded(_to_collective(t.detach()), world)).to(t.device)


def whole_batch(t: torch.Tensor, world: World) -> torch.Tensor:
    """The rows of ``t`` from every process (rank order), *with* gradients: a batch-level loss term (e.g. the
    entropy of the batch's mean prediction) computed on it is the one-process term. Every process computes
    the same value; the gather's backward sums the processes' gradients and DistributedDataParallel divides
    by their number, so each share gets the one-process gradient."""
    if not _active(world):
        return t
    return torch.cat(_gather_padded(t, world, differentiable=True))


def _to_collective(t: torch.Tensor) -> torch.Tensor:
    # gloo gathers CPU tensors, NCCL device tensors
    backend = dist.get_backend()
    return t.cuda() if backend == "nccl" else t.cpu()


def map_rows(fn: Callable[[np.ndarray], np.ndarray], n: int, world: World) -> np.ndarray:
    """``fn(indices)`` -> one row per index, run over all ``n`` items: in a data-parallel run each process
    computes every ``size``-th row and all processes get all rows, in order."""
    if not _active(world) or n < world.size:
        return fn(np.arange(n))
    mine = world.shard(np.arange(n))
    part = np.ascontiguousarray(fn(mine))
    t = _to_collective(torch.from_numpy(part))
    parts = _gather_padded(t, world)
    out = np.empty((n, *part.shape[1:]), part.dtype)
    for r, p in enumerate(parts):
        out[r :: world.size] = p.cpu().numpy()
    return out


def mean_over(values: Sequence[float], world: World) -> list[float]:
    """The mean of each value over the processes (e.g. a per-epoch loss each computed on its share)."""
    if not _active(world) or not values:
        return list(values)
    t = _to_collective(torch.tensor(list(values), dtype=torch.float64))
    dist.all_reduce(t)
    return [float(v) / world.size for v in t.cpu().tolist()]


@contextlib.contextmanager
def shared_batch_norm(net: torch.nn.Module, world: World) -> Iterator[None]:
    """Within the block, the batch norms of ``net`` normalise with the statistics of the whole batch, all
    processes' shares together, as one process would (``torch.nn.SyncBatchNorm`` is GPU-only, and replacing
    the modules would change what is exported); the modules are left as they were afterwards."""
    if not _active(world):
        yield
        return
    from torch.distributed.nn.functional import all_reduce  # differentiable: the statistics carry gradients

    norms = [m for m in net.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for m in norms:
        m.reduce = all_reduce
        if not isinstance(m, FrameBatchNorm):
            m.forward = FrameBatchNorm.forward.__get__(m)  # this instance only
    try:
        yield
    finally:
        for m in norms:
            del m.reduce
            if not isinstance(m, FrameBatchNorm):
                del m.forward


class Subset(Sequence[np.ndarray]):
    """The clips ``wavs[i]`` for ``i`` in ``indices`` as a sequence (no copy of the audio)."""

    def __init__(self, wavs: Sequence[np.ndarray], indices: np.ndarray):
        self.wavs, self.indices = wavs, indices

    def __len__(self) -> int:
        return len(self.indices)

    @property
    def lengths(self) -> np.ndarray:
        """Samples per clip, without reading a store's audio."""
        return lengths_of(self.wavs)[self.indices]

    def __getitem__(self, i):  # type: ignore[override]
        if isinstance(i, slice):
            return [self.wavs[int(j)] for j in self.indices[i]]
        return self.wavs[int(self.indices[i])]
