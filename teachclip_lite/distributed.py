"""torch.distributed, the few calls the kit needs: one process per GPU (or CPU worker) under torchrun.

`torchrun --standalone --nproc_per_node=N -m teachclip_lite train --config poc.yaml` starts N copies of
the same command; `setup()` joins them into one process group (NCCL on CUDA, gloo on CPU) from the
environment torchrun sets. Without torchrun every function here is a no-op for a world of one, so the
single-process path is the very same code.

How a global batch is trained by N processes (train.py): every rank builds the same global batch
(epoch_batches is seeded), takes its share of the rows (`shard`), encodes them, and `gather`s every rank's
embeddings with gradients (torch.distributed.nn.functional.all_gather), as CLIP training does. Each rank
then computes the loss of the whole global batch; the all-gather's backward sends each rank the gradient
of its own rows from every copy of the loss (N times the single-process gradient), and DDP's average over
the N ranks brings it back to exactly the gradient one process with the full batch computes.
"""
from __future__ import annotations

import os

import torch
import torch.distributed as dist


def launched() -> bool:
    """Started by torchrun (or another launcher that sets the env:// variables) with more than one process."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def setup() -> None:
    """Join the process group torchrun described (no-op without torchrun, or when already joined).

    NCCL on CUDA, each rank on its LOCAL_RANK GPU; gloo on CPU (where each rank also takes an even
    share of the cores).
    """
    if not launched() or dist.is_initialized():
        return
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group("nccl")
    else:
        dist.init_process_group("gloo")
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // size()))


def active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if active() else 0


def size() -> int:
    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    """Rank 0: the one that writes checkpoints, tables and logs."""
    return rank() == 0


def barrier() -> None:
    if active():
        dist.barrier()


def total(x: int) -> int:
    """The sum of an integer over the ranks (on every rank)."""
    if not active():
        return x
    t = torch.tensor([int(x)], dtype=torch.long, device=device() or "cpu")
    dist.all_reduce(t)
    return int(t.item())


def device() -> torch.device | None:
    """This rank's GPU under torchrun on CUDA, else None (the config decides)."""
    if active() and torch.cuda.is_available():
        return torch.device("cuda", torch.cuda.current_device())
    return None


def broadcast(obj):
    """Rank 0's Python object, on every rank."""
    if not active():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def shard(rows: torch.Tensor) -> tuple[torch.Tensor, list[int]]:
    """This rank's share of a global batch: (its rows, padded to the common length, how many rows each
    rank really holds). Shares are contiguous and in rank order, so gathering them restores `rows`.
    Padding repeats the share's first row (so every rank calls the model on equal shapes); `gather`
    drops it again, so it gets no gradient."""
    n = size()
    if n == 1:
        return rows, [len(rows)]
    parts = list(torch.tensor_split(rows, n))
    counts = [len(p) for p in parts]
    width = max(counts)
    mine = parts[rank()]
    if len(mine) == 0:
        mine = rows[:1]
    if len(mine) < width:
        mine = torch.cat([mine, mine[:1].expand(width - len(mine), *mine.shape[1:])])
    return mine, counts


def gather(x: torch.Tensor | None, counts: list[int]) -> torch.Tensor | None:
    """Every rank's rows of x, in rank order, with gradients flowing back to the rank that made them."""
    if x is None or len(counts) == 1:
        return x
    from torch.distributed.nn.functional import all_gather

    parts = all_gather(x.contiguous())
    return torch.cat([p[:c] for p, c in zip(parts, counts)])


def wrap(model: torch.nn.Module) -> torch.nn.Module:
    """The model under DistributedDataParallel when there is more than one rank, else itself."""
    if not active():
        return model
    from torch.nn.parallel import DistributedDataParallel as DDP

    dev = device()
    return DDP(model, device_ids=[dev] if dev is not None else None, broadcast_buffers=False)
