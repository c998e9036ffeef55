"""torch.distributed plumbing shared by every command that runs on many processes.

Processes are started by an existing launcher, never by langseg: ``torchrun`` (one or many nodes) sets
``RANK``/``WORLD_SIZE``/``LOCAL_RANK``; SLURM's ``srun`` sets ``SLURM_PROCID``/``SLURM_NTASKS``/
``SLURM_LOCALID`` (the job script exports ``MASTER_ADDR``/``MASTER_PORT``). :func:`init_distributed`
reads either, joins the process group (NCCL on CUDA, gloo elsewhere) and returns this process's place.
Work is split by :func:`split`; counts and sums are combined by :func:`all_reduce`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

import torch
import torch.distributed as dist

from .errors import LangsegError

T = TypeVar("T")


@dataclass(frozen=True)
class Place:
    """Where this process runs: its device, its rank and the number of processes."""

    device: str | None
    rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def launcher_env() -> dict[str, int] | None:
    """``{"rank", "world_size", "local_rank"}`` from torchrun's or SLURM's variables, or None."""
    env = os.environ
    if "RANK" in env and "WORLD_SIZE" in env:
        return {
            "rank": int(env["RANK"]),
            "world_size": int(env["WORLD_SIZE"]),
            "local_rank": int(env.get("LOCAL_RANK", "0")),
        }
    if "SLURM_PROCID" in env and int(env.get("SLURM_NTASKS", "1")) > 1:
        return {
            "rank": int(env["SLURM_PROCID"]),
            "world_size": int(env["SLURM_NTASKS"]),
            "local_rank": int(env.get("SLURM_LOCALID", "0")),
        }
    return None


def init_distributed(device: str | None) -> Place:
    """Join the process group the launcher prepared; returns this process's :class:`Place`.

    ``device`` None or ``"cuda"`` with CUDA present: one GPU per process (``cuda:LOCAL_RANK``, NCCL).
    Anything else: gloo on ``device`` (default CPU). Raises a one-line error when no launcher set the
    variables. Already initialized: returns the current place.
    """
    if dist.is_available() and dist.is_initialized():
        return Place(device, dist.get_rank(), dist.get_world_size())
    env = launcher_env()
    if env is None:
        raise LangsegError(
            "--distributed needs a launcher: run under torchrun or SLURM srun "
            "(RANK/WORLD_SIZE or SLURM_PROCID/SLURM_NTASKS are not set)"
        )
    if "RANK" not in os.environ:  # SLURM: torch's env:// rendezvous reads these names
        os.environ.update(
            RANK=str(env["rank"]), WORLD_SIZE=str(env["world_size"]), LOCAL_RANK=str(env["local_rank"])
        )
        if "MASTER_ADDR" not in os.environ or "MASTER_PORT" not in os.environ:
            raise LangsegError(
                "under srun, export MASTER_ADDR (the first node's host name) and "
                "MASTER_PORT (a free port) in the job script"
            )
    if torch.cuda.is_available() and device in (None, "cuda"):
        torch.cuda.set_device(env["local_rank"])
        dist.init_process_group("nccl")
        device = f"cuda:{env['local_rank']}"
    else:
        dist.init_process_group("gloo")
        device = device or "cpu"
    return Place(device, dist.get_rank(), dist.get_world_size())


def close_distributed() -> None:
    """Leave the process group, if one is open."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def world() -> tuple[int, int]:
    """``(rank, world_size)`` of the open process group, ``(0, 1)`` without one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def split(items: Sequence[T], rank: int, world_size: int) -> list[T]:
    """This rank's share of ``items``: the ``rank``-th of ``world_size`` contiguous slices.

    Every item goes to exactly one rank, also when ``len(items)`` is not a multiple of the world size;
    shares differ in length by at most one (the first ``len % world_size`` ranks take one more).
    Contiguous slices keep neighbours together: consecutive video frames, files of one folder.
    """
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is outside a world of {world_size}")
    base, extra = divmod(len(items), world_size)
    start = rank * base + min(rank, extra)
    return list(items[start : start + base + (rank < extra)])


def barrier() -> None:
    """Wait for every rank (no-op without a process group)."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()


def all_reduce(t: torch.Tensor) -> torch.Tensor:
    """Sum a tensor over all ranks when torch.distributed is initialized; else return it.

    The result lives where ``t`` was. NCCL reduces on the rank's current CUDA device.
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return t
    device = t.device
    work = t.clone()
    if dist.get_backend() == "nccl" and work.device.type != "cuda":
        work = work.to(torch.device("cuda", torch.cuda.current_device()))
    dist.all_reduce(work, op=dist.ReduceOp.SUM)
    return work.to(device)
