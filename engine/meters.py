"""Metrics accumulated on the device and read once per logging interval: no host sync per step."""

from __future__ import annotations

import torch

from .distributed import all_reduce_max, all_reduce_sum


def correct_topk(logits: torch.Tensor, targets: torch.Tensor, ks=(1, 5)) -> torch.Tensor:
    """Number of samples whose target is among the top-k predictions, for each k (a device tensor)."""
    k_max = min(max(ks), logits.shape[1])
    hits = logits.topk(k_max, dim=1).indices.eq(targets[:, None])
    return torch.stack([hits[:, : min(k, k_max)].any(dim=1).sum() for k in ks]).float()


class DeviceMeter:
    """Batch-weighted sums of named losses, top-1/top-5 hits and the sample count, kept on the device.

    ``flush`` reads and resets them in one host sync; it also reports the first step whose losses
    were not finite, and which names were bad then.
    """

    def __init__(self, device: torch.device):
        self.device = device
        self.names: list[str] = []
        self._reset()

    def _reset(self) -> None:
        self.sums: torch.Tensor | None = None  # [losses..., hits@1, hits@5, count]
        self.first_bad_step = torch.full((), -1.0, device=self.device)
        self.bad_names: torch.Tensor | None = None

    def update(self, losses: dict[str, torch.Tensor], logits: torch.Tensor, targets: torch.Tensor, step: int) -> None:
        if not self.names:
            self.names = list(losses)
        values = torch.stack([losses[name].detach().float() for name in self.names])
        batch = targets.shape[0]
        row = torch.cat([values * batch, correct_topk(logits.detach(), targets), values.new_full((1,), batch)])
        if self.sums is None:
            self.sums = torch.zeros_like(row)
            self.bad_names = torch.zeros_like(values)
        self.sums += row
        finite = torch.isfinite(values)
        first = (self.first_bad_step < 0) & ~finite.all()
        self.bad_names = torch.where(first, (~finite).float(), self.bad_names)
        self.first_bad_step = torch.where(first, torch.full((), float(step), device=self.device), self.first_bad_step)

    def flush(self, reduce: bool = False) -> dict:
        """{name: sum, 'hits1', 'hits5', 'count', 'first_bad_step', 'bad_names'}; then reset.
        ``reduce`` sums over all ranks and agrees on the first bad step (collectives)."""
        if self.sums is None:
            return {"count": 0, "first_bad_step": -1, "bad_names": []}
        sums = all_reduce_sum(self.sums.clone()) if reduce else self.sums
        first_bad_step, bad_names = self.first_bad_step, self.bad_names
        if reduce:
            first_bad_step, bad_names = _first_bad_on_any_rank(first_bad_step, bad_names)
        packed = torch.cat([sums, first_bad_step.view(1), bad_names]).tolist()
        n = len(self.names)
        out = dict(zip(self.names, packed[:n]))
        out.update(
            hits1=packed[n],
            hits5=packed[n + 1],
            count=int(packed[n + 2]),
            first_bad_step=int(packed[n + 3]),
            bad_names=[name for name, bad in zip(self.names, packed[n + 4 :]) if bad],
        )
        self._reset()
        return out


def _first_bad_on_any_rank(first_bad_step: torch.Tensor, bad_names: torch.Tensor):
    """The earliest bad step of any rank and the names bad on any rank (a collective). A loss can go
    non-finite on one rank only; every rank must then stop at the same step, with the same message."""
    negated = torch.where(first_bad_step < 0, float("-inf"), -first_bad_step)  # max of -step = earliest step
    packed = all_reduce_max(torch.cat([negated.view(1), bad_names]))
    return torch.where(packed[0].isinf(), -1.0, -packed[0]), packed[1:]


def add_sums(total: dict, part: dict) -> dict:
    """Accumulate flushed sums on the host."""
    for key, value in part.items():
        if key not in ("first_bad_step", "bad_names"):
            total[key] = total.get(key, 0) + value
    return total


def means(sums: dict, names: list[str]) -> dict:
    """Per-sample means of ``names`` and top-1/top-5 accuracy in percent."""
    count = max(sums.get("count", 0), 1)
    out = {name: sums[name] / count for name in names if name in sums}
    out["acc1"], out["acc5"] = 100.0 * sums.get("hits1", 0) / count, 100.0 * sums.get("hits5", 0) / count
    return out
