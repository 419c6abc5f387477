"""The fast path of the Tf-FD term: the same losses as ``intra_fd`` and ``inter_fd`` in
``losses/tffd.py`` (read those for the method), computed so that Tf-FD costs next to nothing on top of
cross-entropy. ``tests/test_tffd.py`` checks values and gradients against the readable functions.

Each loss value is the ``F.mse_loss`` of the readable version on tensors of the same values, so it is
bit-for-bit the same in fp32; the work around it is what differs. All losses whose gradient flows
into one stage feature are one autograd function (``_FeatureLosses``) whose backward writes that
feature's whole Tf-FD gradient into a single buffer, where autograd would build a zero-filled scatter
per channel half and per pooled copy and add them up one by one. The channel-sorted copy of the
feature is freed after the forward pass; the backward needs only the feature, which the network keeps.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

_MEAN = 1  # aten.mse_loss_backward's code for reduction="mean"


def feature_losses(feature: torch.Tensor, order: Optional[torch.Tensor], detach_salient: bool,
                   deeper: Sequence[torch.Tensor]) -> tuple[torch.Tensor, ...]:
    """``intra_fd(feature)`` if ``order`` (its channels by descending salience) is given, then
    ``inter_fd(feature, d)`` for each ``d`` in ``deeper``, computed together so that the backward forms
    ``feature``'s gradient in one buffer."""
    return _FeatureLosses.apply(feature, order, detach_salient, *(d.detach() for d in deeper))


class _FeatureLosses(torch.autograd.Function):
    """intra_fd of ``feature`` (when ``order``, its channels by salience, is given), then inter_fd of
    ``feature`` towards each of ``targets`` (detached deeper features)."""

    @staticmethod
    def forward(ctx, feature, order, detach_salient, *targets):
        ctx.set_materialize_grads(False)  # unused losses send no gradient: skip them
        ctx.shape, ctx.dtype, ctx.has_intra = feature.shape, feature.dtype, order is not None
        losses, saved = [], []
        if order is not None:
            half = feature.shape[1] // 2
            ranked = _gather_channels(feature, order[: 2 * half])  # salient half, then redundant half
            losses.append(F.mse_loss(ranked[:, half:], ranked[:, :half]))
            ctx.intra_numel = ranked.numel() // 2
            saved += [feature, *_partners(order, detach_salient)]
        for target in targets:
            channels = min(feature.shape[1], target.shape[1])
            pooled = _adaptive_avg_pool(feature[:, :channels], target.shape[-2:])
            target = target[:, :channels]
            losses.append(F.mse_loss(pooled, target))
            saved += [pooled, target]
        ctx.save_for_backward(*saved)
        return tuple(losses)

    @staticmethod
    @once_differentiable
    def backward(ctx, *loss_grads):
        saved, grad = ctx.saved_tensors, None
        if ctx.has_intra:
            (feature, partner, coefficient), saved = saved[:3], saved[3:]
            if loss_grads[0] is not None:
                scale = loss_grads[0] * (2.0 / ctx.intra_numel)
                grad = _intra_grad(feature.to(scale.dtype), partner, coefficient, scale)
            loss_grads = loss_grads[1:]
        for index, loss_grad in enumerate(loss_grads):
            if loss_grad is not None:
                pooled, target = (t.to(loss_grad.dtype) for t in saved[2 * index : 2 * index + 2])
                pooled_grad = torch.ops.aten.mse_loss_backward(loss_grad, pooled, target, _MEAN)
                grad = _add_pooling_grad(grad, pooled_grad, ctx.shape)
        return (None if grad is None else grad.to(ctx.dtype), None, None) + (None,) * len(loss_grads)


def _partners(order: torch.Tensor, detach_salient: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """``partner[c]``: the channel that channel c is compared with (itself for the channel an odd
    count leaves out); ``coefficient[c]``: 1 where c gets gradient, else 0."""
    half = order.numel() // 2
    partner = torch.arange(order.numel(), device=order.device)
    partner[order[:half]] = order[half : 2 * half]
    partner[order[half : 2 * half]] = order[:half]
    coefficient = torch.ones(order.numel(), device=order.device)
    if detach_salient:
        coefficient[order[:half]] = 0.0
    return partner, coefficient


def _intra_grad(feature, partner, coefficient, scale) -> torch.Tensor:
    """d MSE / d feature[:, c] = 2 / numel * (feature[:, c] - feature[:, partner[c]]), the salient and
    the redundant side alike; 0 for a channel compared with itself. One gather, two in-place ops."""
    grad = _gather_channels(feature, partner)
    torch.sub(feature, grad, out=grad)
    return grad.mul_(scale * coefficient.view(1, -1, 1, 1))


def _gather_channels(feature: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``feature[:, index]``. A contiguous feature is gathered as rows of its (N*C) x (H*W) view:
    PyTorch spreads a gather of rows over threads, one of channels (index_select on dim 1) not."""
    if not feature.is_contiguous():
        return feature.index_select(1, index)
    batch, channels = feature.shape[:2]
    rows = (torch.arange(batch, device=index.device)[:, None] * channels + index).flatten()
    return feature.view(batch * channels, -1).index_select(0, rows).view(batch, index.numel(), *feature.shape[2:])


def _adaptive_avg_pool(feature: torch.Tensor, size) -> torch.Tensor:
    """``F.adaptive_avg_pool2d(feature, size)``, the same numbers, faster on CPUs where it can be.

    PyTorch's CPU kernel for channels-first input is scalar. For windows of power-of-two sides it is
    matched exactly (each window summed row by row from its first element, then divided by a power
    of two, which is exact) by four strided adds for 2 x 2 windows and by ``avg_pool2d`` for larger
    ones, 2-4x faster. The output keeps the input's memory format, as PyTorch's does. A 1x1 output
    is computed as a mean() instead, so it is left alone."""
    windows = [full // part if full % part == 0 else 0 for full, part in zip(feature.shape[-2:], size)]
    power_of_two = all(k > 0 and k & (k - 1) == 0 for k in windows)
    if feature.device.type != "cpu" or tuple(size) == (1, 1) or not power_of_two:
        return F.adaptive_avg_pool2d(feature, size)
    if windows == [2, 2]:
        pooled = feature[:, :, 0::2, 0::2] + feature[:, :, 0::2, 1::2]
        return pooled.add_(feature[:, :, 1::2, 0::2]).add_(feature[:, :, 1::2, 1::2]).div_(2).div_(2)
    return F.avg_pool2d(feature, windows)


def _add_pooling_grad(grad: Optional[torch.Tensor], pooled_grad: torch.Tensor, shape) -> torch.Tensor:
    """``grad`` (None: zeros of ``shape``) plus the gradient through adaptive average pooling of the
    first channels of a ``shape`` feature, given the gradient ``pooled_grad`` of the pooled output."""
    n, c, h, w = pooled_grad.shape
    height, width = shape[-2:]
    if grad is None:
        grad = pooled_grad.new_zeros(shape)
    if height % h or width % w:  # overlapping windows: PyTorch's own backward
        like = pooled_grad.new_empty((n, c, height, width))
        grad[:, :c] += torch.ops.aten._adaptive_avg_pool2d_backward(pooled_grad, like)
        return grad
    kh, kw = height // h, width // w
    share = pooled_grad / kh / kw  # divided as PyTorch's backward divides
    # Nearest upsampling as two broadcasts whose innermost dimension is a whole row: one 6-d
    # broadcast whose innermost dimension is the kw-wide window is several times slower on CPUs.
    rows = share.unsqueeze(-1).expand(n, c, h, w, kw).reshape(n, c, h, width)
    grad[:, :c].view(n, c, h, kh, width).add_(rows.unsqueeze(3))
    return grad
