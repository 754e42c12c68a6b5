"""Spreading a run over processes and machines: shards of a question list, and torchrun ranks.

Two ways, which combine:

* ``--shard i/n`` (:class:`Shard`): this process runs the questions whose position modulo ``n`` is ``i``.
  Shards need no launcher and no network between them: run them on any machines, into one folder or into
  folders copied together afterwards. Each writes its own part of the results (see
  :class:`gcache.io.ResultStore`), and whoever reads the folder merges the parts by question id.
* ``torchrun`` (:class:`Distributed`): ``torch.distributed`` with gloo on CPUs and NCCL on GPUs. Each rank
  takes a sub-shard of its shard (rank ``r`` of ``w`` under ``--shard i/n`` runs shard ``i + n·r`` of
  ``n·w``), so ``--shard`` splits the machines and torchrun splits the processes of one machine. Ranks meet
  once at the end of an evaluation (rank 0 then writes the summary) and, in training, at every step: each rank
  runs its :meth:`Distributed.share` of the batch and :meth:`Distributed.sync_gradients` sums the gradients.

A rank that dies makes torchrun stop the others (its report names the rank and the signal); every finished
question is already on disk, so rerunning the same command, with any number of ranks, runs only the rest.

    torchrun --nproc-per-node 8 -m gcache eval --method latentmas_seq --device cuda ... --out runs/x
    gcache eval ... --shard 0/3 --out runs/x      # on machine 0 (1, 2 on the others)
"""

from __future__ import annotations

import logging
import os
import re
import signal
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

__all__ = ["Shard", "World", "Distributed", "RankFailedError", "DEFAULT_TIMEOUT"]

T = TypeVar("T")

#: How long a rank waits for the others at a meeting point. Ranks of an evaluation finish their shares at
#: different times (hours apart on a long CPU run), so this is long; a dead rank is noticed by torchrun.
DEFAULT_TIMEOUT = timedelta(hours=24)


class RankFailedError(RuntimeError):
    """Another rank stopped (killed, crashed) before a meeting point; finished work is on disk."""


@dataclass(frozen=True)
class Shard:
    """The questions at positions ``index, index + count, index + 2·count, ...``.

    Args:
        index (int): which shard, ``0 <= index < count``. Default is 0.
        count (int): how many shards. Default is 1 (everything).

    Example:
        >>> Shard.parse("1/3").select(list(range(8)))
        [1, 4, 7]
        >>> Shard.parse("1/3").split(world_size=2, rank=1)  # rank 1 of 2 takes every other of shard 1's
        Shard(index=4, count=6)
    """

    index: int = 0
    count: int = 1

    def __post_init__(self) -> None:
        if self.count < 1 or not 0 <= self.index < self.count:
            raise ValueError(f"shard {self.index}/{self.count}: need 0 <= i < n, as in 0/2 and 1/2")

    @classmethod
    def parse(cls, text: str) -> "Shard":
        """``"i/n"`` -> ``Shard(i, n)``.

        Raises:
            ValueError: not of the form ``i/n`` with ``0 <= i < n``.
        """
        match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", str(text))
        if match is None:
            raise ValueError(f"shard {text!r}: expected i/n, e.g. 0/4 for the first of four shards")
        return cls(int(match.group(1)), int(match.group(2)))

    def select(self, items: Sequence[T]) -> list[T]:
        """The items whose position modulo ``count`` is ``index``."""
        return list(items[self.index::self.count])

    def split(self, world_size: int, rank: int) -> "Shard":
        """Rank ``rank`` of ``world_size``'s share of this shard (every ``world_size``-th of its items)."""
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in 0..{world_size - 1}")
        return Shard(self.index + self.count * rank, self.count * world_size)

    @property
    def part(self) -> str | None:
        """Name of this shard's part of a results folder (None for the whole, unsharded run)."""
        return None if self.count == 1 else f"shard-{self.index}-of-{self.count}"

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


@dataclass(frozen=True)
class World:
    """Where this process stands among torchrun's processes (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``).

    Args:
        rank (int): global rank. Default is 0.
        size (int): number of processes. Default is 1.
        local_rank (int): rank on this machine (which GPU it takes). Default is 0.
    """

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @classmethod
    def from_env(cls) -> "World":
        """The world torchrun describes in the environment; one process when it is not set."""
        try:
            return cls(rank=int(os.environ.get("RANK", 0)), size=int(os.environ.get("WORLD_SIZE", 1)),
                       local_rank=int(os.environ.get("LOCAL_RANK", 0)))
        except ValueError as err:
            raise ValueError(f"RANK / WORLD_SIZE / LOCAL_RANK in the environment are not integers: {err}") from None

    @property
    def is_main(self) -> bool:
        """Rank 0: the one that writes summaries, checkpoints and logs."""
        return self.rank == 0


class Distributed:
    """``torch.distributed`` for one run, or nothing at all when there is one process.

    Args:
        device (str): the run's ``--device``. Under torchrun, ``cuda`` becomes ``cuda:<LOCAL_RANK>``.
        world (World | None): default :meth:`World.from_env`.
        timeout (timedelta): how long a meeting point waits. Default is :data:`DEFAULT_TIMEOUT`.

    The backend is NCCL for CUDA devices and gloo otherwise. Under torchrun, SIGTERM (what torchrun sends the
    surviving ranks when one fails) stops the rank like Ctrl-C, so it exits with a line saying how to resume.

    Example:
        >>> dist = Distributed("cpu")
        >>> dist.setup()          # joins torchrun's group when WORLD_SIZE > 1
        >>> dist.gather(42)       # one entry from every rank, in rank order (one rank here)
        [42]
        >>> dist.cleanup()
    """

    def __init__(self, device: str = "cpu", world: World | None = None, timeout: timedelta = DEFAULT_TIMEOUT) -> None:
        self.world = world or World.from_env()
        self.timeout = timeout
        self.device = f"cuda:{self.world.local_rank}" if device == "cuda" and self.world.size > 1 else device
        self.backend = "nccl" if self.device.startswith("cuda") else "gloo"
        self._owns_group = False
        self._previous_sigterm = None

    @property
    def enabled(self) -> bool:
        return self.world.size > 1

    def setup(self) -> None:
        """Join the process group (created by torchrun's environment) when there are several processes."""
        import torch  # here, not at the top: validating ``--shard`` needs no torch
        import torch.distributed

        if not self.enabled or torch.distributed.is_initialized():
            return
        if self.backend == "nccl":
            torch.cuda.set_device(torch.device(self.device))
        torch.distributed.init_process_group(self.backend, timeout=self.timeout)
        self._owns_group = True
        if threading.current_thread() is threading.main_thread():
            self._previous_sigterm = signal.signal(signal.SIGTERM, _interrupt)
        logger.info("rank %d of %d (%s, %s)", self.world.rank, self.world.size, self.backend, self.device)

    def gather(self, obj: Any, what: str = "the end of the run") -> list[Any]:
        """Every rank's ``obj``, in rank order; also a meeting point (each waits for all).

        Raises:
            RankFailedError: another rank stopped before reaching this point.
        """
        if not self.enabled:
            return [obj]
        import torch.distributed

        out: list[Any] = [None] * self.world.size
        try:
            torch.distributed.all_gather_object(out, obj)
        except (RuntimeError, ConnectionError) as err:  # gloo/NCCL report a dead peer as one of these
            raise RankFailedError(f"rank {self.world.rank}: another rank stopped before {what} ({err}); what was "
                                  f"finished is saved: rerun the same command to resume") from None
        return out

    def share(self, items: Sequence[T]) -> list[T]:
        """This rank's share of ``items`` (every ``size``-th, from position ``rank``); all of them for one process."""
        return Shard().split(self.world.size, self.world.rank).select(items)

    def broadcast(self, obj: T, what: str = "the start") -> T:
        """Rank 0's ``obj`` on every rank (e.g. the weights everyone starts from)."""
        if not self.enabled:
            return obj
        import torch.distributed

        box = [obj]
        try:
            torch.distributed.broadcast_object_list(box, src=0)
        except (RuntimeError, ConnectionError) as err:
            raise RankFailedError(f"rank {self.world.rank}: another rank stopped before {what} ({err}); rerun the "
                                  "same command to resume") from None
        return box[0]

    def sync_gradients(self, params: Sequence["torch.Tensor"]) -> None:
        """Sum the gradients of ``params`` over the ranks, in place, with one flat all-reduce.

        With each rank's loss its share of the whole batch's loss (every term divided by the whole batch's count),
        the sum is the gradient one process would get on the whole batch, however unevenly it was split. A
        parameter that no rank gave a gradient keeps ``grad = None`` (so Adam skips it, as in one process).

        Raises:
            RankFailedError: another rank stopped before this step's all-reduce.
        """
        if not self.enabled:
            return
        import torch
        import torch.distributed

        parts = []
        for p in params:
            g = p.grad if p.grad is not None else torch.zeros_like(p)
            parts += [g.reshape(-1), torch.full((1,), float(p.grad is not None), device=g.device, dtype=g.dtype)]
        flat = torch.cat(parts).to(self.device)  # [sum of numels + one "has a gradient" count per parameter]
        try:
            torch.distributed.all_reduce(flat)
        except (RuntimeError, ConnectionError) as err:
            raise RankFailedError(f"rank {self.world.rank}: another rank stopped during a gradient all-reduce "
                                  f"({err}); rerun the same command to resume from the last checkpoint") from None
        offset = 0
        for p in params:
            n = p.numel()
            grad, had = flat[offset:offset + n], flat[offset + n]
            offset += n + 1
            p.grad = grad.view_as(p).to(p.device, p.dtype).clone() if had > 0 else None

    def cleanup(self) -> None:
        import torch.distributed

        if self._owns_group and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
        self._owns_group = False
        if self._previous_sigterm is not None:
            signal.signal(signal.SIGTERM, self._previous_sigterm)
            self._previous_sigterm = None

    def __repr__(self) -> str:
        return f"Distributed(rank={self.world.rank}, size={self.world.size}, backend={self.backend!r})"


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt(f"signal {signum}")
