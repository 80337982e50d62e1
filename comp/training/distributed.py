"""Data-parallel training: one fold over several processes with torch.distributed (DDP), launched by torchrun.

`comp train --fold K --devices N` relaunches itself through torchrun (torch.distributed.run) on this
machine; `torchrun --nproc-per-node N -m comp train --fold K` is the same thing, and torchrun's own flags
(--nnodes, --node-rank, --rdzv-backend, --rdzv-endpoint) take it to several machines. Each process finds
its place in torchrun's environment (RANK, LOCAL_RANK, WORLD_SIZE) and trains on its own device:
cuda:LOCAL_RANK with NCCL, or the CPU with gloo.

train.batch_size is the global batch: every optimizer step's batch is split evenly over the processes, so
the same config takes the same steps on one device or on N, under the same learning rate, and a fold
trained on N devices resumes on one (and back). Validation shards the fold's rows without padding and
gathers the logits, so every row counts exactly once. Only rank 0 writes files and prints.
"""

from __future__ import annotations

import os
import socket
from contextlib import closing, contextmanager

import numpy as np
import torch
import torch.distributed as dist
from rich.console import Console
from torch import nn
from torch.utils.data import Sampler

from comp.config import TrainConfig
from comp.device import resolve_device, usable_cpu_count
from comp.errors import CompError

# ----------------------------------------------------------------------------- where this process stands


def under_torchrun() -> bool:
    return dist.is_available() and dist.is_torchelastic_launched()


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", 0))


def is_main_process() -> bool:
    """Rank 0 (or the only process): the one that writes artifacts and prints progress."""
    return rank() == 0


def quiet_other_ranks(*consoles: Console) -> None:
    """Silence everything but rank 0's output, so N processes print one report."""
    for console in consoles:
        console.quiet = not is_main_process()


def rank_device(name: str) -> torch.device:
    """This process's device: the configured one, or under DDP its type with the index LOCAL_RANK."""
    device = resolve_device(name)
    if world_size() == 1 or device.type == "cpu":
        return device
    if device.type != "cuda":
        raise CompError(
            f"Data-parallel training runs on CUDA GPUs (NCCL) or on the CPU (gloo), not on {device}.",
            hint="Set train.device to auto, cuda or cpu.",
        )
    return torch.device("cuda", local_rank())


# ----------------------------------------------------------------------------- the process group


@contextmanager
def process_group(device_name: str, devices: int = 1):
    """Join torchrun's process group for the block (NCCL for CUDA, gloo for the CPU); a no-op outside torchrun.

    devices: what --devices asked for; under torchrun it must be 1 or the number of processes."""
    if not under_torchrun() or dist.is_initialized():
        yield
        return
    processes = int(os.environ["WORLD_SIZE"])
    if devices not in (1, processes):
        raise CompError(
            f"--devices {devices}, but torchrun started {processes} processes.",
            hint="Under torchrun leave --devices out: torchrun's own flags set the processes.",
        )
    device = resolve_device(device_name)
    backend = "gloo"
    if device.type == "cuda":
        if local_rank() >= torch.cuda.device_count():
            raise CompError(
                f"Process {local_rank()} of this machine has no GPU: only {torch.cuda.device_count()} are visible.",
                hint="Start at most that many processes per machine (--devices, torchrun --nproc-per-node).",
            )
        torch.cuda.set_device(local_rank())
        backend = "nccl"
    dist.init_process_group(backend)
    try:
        yield
    finally:
        dist.destroy_process_group()


def check_batch_split(batch_size: int, n: int) -> None:
    """The global batch must split evenly over the n processes."""
    if batch_size % n:
        raise CompError(
            f"train.batch_size={batch_size} does not split evenly over {n} processes: train.batch_size "
            "is the global batch, each process takes an equal share.",
            hint=f"Use a multiple of {n}, e.g. --set train.batch_size={batch_size // n * n or n}.",
        )


# ----------------------------------------------------------------------------- model


def check_sync_bn(sync_bn: bool, device: torch.device) -> None:
    if sync_bn and device.type != "cuda":
        raise CompError(
            "train.sync_bn needs CUDA GPUs: torch's SyncBatchNorm does not run on the CPU.",
            hint="Set train.sync_bn: false for CPU (gloo) training.",
        )


def prepare_model(model: nn.Module, sync_bn: bool) -> nn.Module:
    """With train.sync_bn under DDP, batch norms that normalise over the global batch (same weights and buffers)."""
    if not sync_bn or world_size() == 1:
        return model
    check_sync_bn(sync_bn, next(model.parameters()).device)
    return nn.SyncBatchNorm.convert_sync_batchnorm(model)


def data_parallel(model: nn.Module, find_unused_parameters: bool = False) -> nn.Module:
    """The model under DDP (gradients averaged over the processes); the model itself in a single process.

    find_unused_parameters: some parameters get no gradient in some steps (a frozen backbone).
    """
    if world_size() == 1:
        return model
    device = next(model.parameters()).device
    return nn.parallel.DistributedDataParallel(
        model,
        device_ids=[device.index] if device.type == "cuda" else None,
        find_unused_parameters=find_unused_parameters,
    )


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside DDP. Evaluate that one: the wrapper's forward can synchronise the processes, which
    hold different numbers of validation batches."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def broadcast_buffers(model: nn.Module) -> None:
    """Give every process rank 0's buffers (batch-norm statistics drift apart per shard), so all evaluate
    the weights rank 0 saves."""
    if world_size() == 1:
        return
    for buffer in model.buffers():
        dist.broadcast(buffer.data, src=0)


# ----------------------------------------------------------------------------- data


def shard_batch(batch: list, position: int | None = None, count: int | None = None) -> list:
    """This process's equal share of a global batch (contiguous, in rank order)."""
    position, count = rank() if position is None else position, world_size() if count is None else count
    share = len(batch) // count
    return batch[position * share : (position + 1) * share]


class ShardSampler(Sampler[int]):
    """A contiguous share of range(n) per process: across processes every row exactly once, no padding
    (torch's DistributedSampler repeats rows to even the shares out, which would count them twice)."""

    def __init__(self, n: int, position: int, count: int):
        self.indices = np.array_split(np.arange(n), count)[position].tolist()

    def __len__(self) -> int:
        return len(self.indices)

    def __iter__(self):
        return iter(self.indices)


def validation_sampler(n: int) -> ShardSampler | None:
    """This process's validation rows under DDP; None (all rows, in order) in a single process."""
    if world_size() == 1:
        return None
    if n < world_size():
        raise CompError(
            f"{n} validation rows cannot be shared by {world_size()} processes.",
            hint="Use fewer devices, or fewer folds (folds.k) for more validation rows each.",
        )
    return ShardSampler(n, rank(), world_size())


# ----------------------------------------------------------------------------- collectives


def _collective_device() -> torch.device:
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


def gather_rows(local: torch.Tensor) -> torch.Tensor:
    """Every process's rows, concatenated in rank order (the order of ShardSampler's shares); `local` alone
    in a single process. Shares may differ in length."""
    if world_size() == 1:
        return local
    device = _collective_device()
    size = torch.tensor([local.shape[0]], device=device)
    sizes = [torch.zeros_like(size) for _ in range(world_size())]
    dist.all_gather(sizes, size)
    longest = int(max(sizes).item())
    padded = torch.zeros((longest, *local.shape[1:]), dtype=local.dtype, device=device)
    padded[: local.shape[0]] = local.to(device)
    parts = [torch.empty_like(padded) for _ in sizes]
    dist.all_gather(parts, padded)
    return torch.cat([part[: int(n.item())] for part, n in zip(parts, sizes, strict=True)]).to(local.device)


def mean_over_processes(values: torch.Tensor) -> torch.Tensor:
    """The element-wise mean over the processes (e.g. each batch's loss over its shares); `values` alone
    in a single process. Every process gets the same numbers, so all stop together on a bad one."""
    if world_size() == 1:
        return values
    total = values.to(_collective_device(), copy=True)
    dist.all_reduce(total)  # in place; gloo has no AVG
    return (total / world_size()).to(values.device)


# ----------------------------------------------------------------------------- launching


def free_port() -> int:
    with closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def check_devices(train: TrainConfig, n_processes: int) -> None:
    """n_processes fit this machine: a GPU each with CUDA, or processes sharing the CPU; train.sync_bn only on GPUs."""
    device = resolve_device(train.device)
    if device.type == "cuda" and n_processes > torch.cuda.device_count():
        raise CompError(
            f"--devices {n_processes}, but only {torch.cuda.device_count()} GPU(s) are visible.",
            hint="Lower --devices, or check CUDA_VISIBLE_DEVICES.",
        )
    if device.type not in ("cuda", "cpu"):
        raise CompError(
            f"Data-parallel training runs on CUDA GPUs or on the CPU, not on {device}.",
            hint="Set train.device to auto, cuda or cpu, or train on one device.",
        )
    check_sync_bn(train.sync_bn, device)
    check_batch_split(train.batch_size, n_processes)


def torchrun_arguments(n_processes: int, comp_arguments: list[str]) -> list[str]:
    """torchrun's command line for `comp <comp_arguments>` in n processes on this machine (static rendezvous
    on 127.0.0.1 at a free port)."""
    return [
        f"--nproc-per-node={n_processes}",
        "--nnodes=1",
        "--master-addr=127.0.0.1",
        f"--master-port={free_port()}",
        "-m",
        "comp",
        *comp_arguments,
    ]


def launch(n_processes: int, comp_arguments: list[str]) -> None:
    """Run `comp <comp_arguments>` in n processes under torchrun, and wait; a failed process is a CompError."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    # torchrun would give each process 1 thread; on the CPU they share the cores instead.
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, usable_cpu_count() // n_processes)))
    try:
        run(parse_args(torchrun_arguments(n_processes, comp_arguments)))
    except ChildFailedError as exc:
        failed = ", ".join(f"rank {r} (exit code {f.exitcode})" for r, f in sorted(exc.failures.items()))
        raise CompError(
            f"Data-parallel training over {n_processes} processes stopped: {failed} failed; its messages are above.",
            hint="Fix the cause and continue with --resume.",
        ) from None
