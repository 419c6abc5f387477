"""train.py under torchrun, plus what the DDP tests need from inside the live process group.

    torchrun --nproc_per_node=2 tests/ddp_probe.py [--inject KIND --rank R --step S] --config FILE ...
    python tests/ddp_probe.py [--inject KIND --step S] --config FILE ...       (one process, rank 0)

- After training, every rank gathers all ranks' parameters and buffers (BatchNorm statistics), and
  rank 0 prints ``probe: replica max abs diff: parameters <x> buffers <y>``: 0.0 where the replicas
  are identical, as DDP promises (not without a process group).
- ``--inject`` disturbs rank R alone during training step S (counted over the run), from a forward
  hook on its first loss term; the other ranks carry on as usual:
  ``sigterm``: the process sends itself SIGTERM (a preemption notice reaching one process);
  ``nan``: the loss term returns NaN;
  ``fail``: the loss term raises an exception.

Production code has no test hooks: this script wraps ``Trainer.fit`` and then runs ``train.main``; the tests'
one-process runs take the same faults in their own process (conftest.run_train_with_fault).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys

import torch
import torch.distributed as dist

import train
from engine.checkpoint import unwrap
from engine.cli import status_of
from engine.trainer import Trainer


def replica_max_abs_diff(tensors) -> float:
    """The largest difference between any rank's ``tensors`` and rank 0's (a collective)."""
    state = torch.cat([tensor.detach().double().flatten() for tensor in tensors])
    replicas = [torch.empty_like(state) for _ in range(dist.get_world_size())]
    dist.all_gather(replicas, state)
    return max((replica - replicas[0]).abs().max().item() for replica in replicas)


def injection(kind: str, rank: int, step: int):
    """A forward hook for a loss term that acts at the term's ``step``-th call."""
    calls = 0

    def hook(term, inputs, losses):
        nonlocal calls
        calls += 1
        if calls != step:
            return losses
        if kind == "sigterm":
            os.kill(os.getpid(), signal.SIGTERM)
            return losses
        if kind == "nan":
            return {name: value * float("nan") for name, value in losses.items()}
        raise RuntimeError(f"injected failure on rank {rank} at step {step}")

    return hook


def probed_fit(fit, inject: str | None, rank: int, step: int):
    """``Trainer.fit`` (given as ``fit``) with the injection, then the replicas compared."""

    def fit_then_compare(self):
        if inject and self.dist.rank == rank:
            self.exp.terms[0].register_forward_hook(injection(inject, rank, step))
        code = fit(self)
        if not dist.is_initialized():
            return code
        network = unwrap(self.exp.network)  # the model and the terms' own parameters (BYOT's heads)
        parameters, buffers = replica_max_abs_diff(network.parameters()), replica_max_abs_diff(network.buffers())
        if self.dist.is_main:
            print(f"probe: replica max abs diff: parameters {parameters!r} buffers {buffers!r}", flush=True)
        return code

    return fit_then_compare


def main() -> int:
    parser = argparse.ArgumentParser(allow_abbrev=False)
    parser.add_argument("--inject", choices=("sigterm", "nan", "fail"))
    parser.add_argument("--rank", type=int, default=0)
    parser.add_argument("--step", type=int, default=1)
    probe, train_args = parser.parse_known_args()
    print(f"probe: rank {os.environ.get('RANK', '0')} pid {os.getpid()}", flush=True)
    Trainer.fit = probed_fit(Trainer.fit, probe.inject, probe.rank, probe.step)
    return status_of(train.main, train_args)


if __name__ == "__main__":
    sys.exit(main())
