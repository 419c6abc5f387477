"""Optimizers, lr schedules and gradient clipping (engine/optim.py): the defaults build exactly what they
always did; adamw, cosine, no weight decay on norms and biases, and clipping do what their options say."""

from __future__ import annotations

import math

import pytest
import torch

from core.errors import ConfigError
from engine.config import load_config
from engine.optim import build_lr_scheduler, build_optimizer, clip_gradients, parameter_groups
from engine.schedule import lr_factor

from conftest import REPO


def train_config(*overrides: str):
    return load_config(REPO / "configs/quickstart.yaml", list(overrides)).train


def small_network() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Flatten(), torch.nn.Linear(4, 2)
    )


def test_the_defaults_are_sgd_on_every_parameter_and_the_step_schedule():
    cfg, network = train_config(), small_network()
    optimizer = build_optimizer(network, cfg, 0.05, fused=False)
    assert type(optimizer) is torch.optim.SGD and len(optimizer.param_groups) == 1
    group = optimizer.param_groups[0]
    assert len(group["params"]) == len(list(network.parameters()))
    assert (group["lr"], group["momentum"], group["nesterov"], group["weight_decay"]) == (0.05, 0.9, True, 5e-4)
    scheduler = build_lr_scheduler(optimizer, cfg, 4)
    assert type(scheduler) is torch.optim.lr_scheduler.LambdaLR  # engine/schedule.py's, unchanged
    assert scheduler.lr_lambdas[0](37) == lr_factor(37, 4, cfg.milestones, cfg.gamma, cfg.lr_warmup_epochs)


def test_adamw_without_weight_decay_on_norms_biases_and_a_vits_embeddings():
    pytest.importorskip("timm")
    from models import build_model

    from timm_models import TINY

    model = build_model("timm/vit_tiny_patch16_224", 5, timm_kwargs=TINY["timm/vit_tiny_patch16_224"][1])
    cfg = train_config(
        "train.optimizer=adamw", "train.betas=[0.8, 0.95]", "train.weight_decay=0.05", "train.weight_decay_norms=false"
    )
    optimizer = build_optimizer(model, cfg, 1e-3, fused=False)
    assert type(optimizer) is torch.optim.AdamW and optimizer.param_groups[0]["betas"] == (0.8, 0.95)
    decayed, undecayed = ({id(p) for p in group["params"]} for group in optimizer.param_groups)
    assert [group["weight_decay"] for group in optimizer.param_groups] == [0.05, 0.0]
    names = {id(p): name for name, p in model.named_parameters()}
    assert {names[i] for i in undecayed} >= {
        "net.pos_embed",
        "net.cls_token",
        "net.norm.weight",
        "net.head.bias",
        "net.blocks.0.attn.qkv.bias",
    }
    assert {names[i] for i in decayed} >= {
        "net.patch_embed.proj.weight",
        "net.blocks.0.attn.qkv.weight",
        "net.head.weight",
    }
    assert all(p.ndim >= 2 for i, p in ((id(p), p) for p in model.parameters()) if i in decayed)
    assert len(decayed) + len(undecayed) == len(list(model.parameters()))


def test_parameter_groups_keep_every_parameter_once():
    network = small_network()
    groups = parameter_groups(network, 0.1, decay_norms=False)
    assert sorted(len(g["params"]) for g in groups) == [2, 4]  # conv and linear weights; their biases, BN's two


def _lrs(scheduler, optimizer, steps: int) -> list[float]:
    lrs = []
    for _ in range(steps):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return lrs


def test_cosine_after_a_linear_per_step_warmup_and_its_resume():
    cfg = train_config("train.schedule=cosine", "train.epochs=5", "train.lr_warmup_epochs=1", "train.lr_min=0.001")
    steps_per_epoch, warmup, total, lr = 4, 4, 20, 0.1
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)
    scheduler = build_lr_scheduler(optimizer, cfg, steps_per_epoch)
    lrs = _lrs(scheduler, optimizer, 10)
    state = scheduler.state_dict()
    lrs += _lrs(scheduler, optimizer, total - 10)
    expected = [
        lr * (step + 1) / warmup
        if step < warmup
        else 0.001 + (lr - 0.001) * (1 + math.cos(math.pi * (step - warmup) / (total - warmup))) / 2
        for step in range(total)
    ]
    assert lrs == pytest.approx(expected, rel=1e-6)
    # a resumed run (a fresh optimizer and scheduler, the saved state loaded) goes on with the same lrs
    resumed = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)
    again = build_lr_scheduler(resumed, cfg, steps_per_epoch)
    again.load_state_dict(state)
    resumed.param_groups[0]["lr"] = expected[10]  # the optimizer's state_dict restores its lr
    assert _lrs(again, resumed, total - 10) == pytest.approx(expected[10:], rel=1e-6)


def test_cosine_without_warmup_and_with_too_long_a_warmup():
    cfg = train_config("train.schedule=cosine", "train.epochs=2", "train.lr_warmup_epochs=0")
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    lrs = _lrs(build_lr_scheduler(optimizer, cfg, 2), optimizer, 4)
    assert lrs == pytest.approx([1.0, (1 + math.cos(math.pi / 4)) / 2, 0.5, (1 + math.cos(3 * math.pi / 4)) / 2])
    cfg = train_config("train.schedule=cosine", "train.epochs=2", "train.lr_warmup_epochs=2")
    with pytest.raises(ConfigError, match="train.lr_warmup_epochs=2 leaves no epoch of the 2 to anneal"):
        build_lr_scheduler(optimizer, cfg, 2)


def test_gradient_clipping_bounds_the_global_norm_and_zero_clips_nothing():
    network = small_network()
    optimizer = torch.optim.SGD(network.parameters(), lr=0.1)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    for max_norm, bounded in ((0.0, False), (1e-3, True)):
        optimizer.zero_grad()
        (network(torch.randn(4, 3, 3, 3)).square().sum() * 100).backward()
        clip_gradients(optimizer, scaler, max_norm)
        norm = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in network.parameters()]))
        assert (norm <= 1e-3 * (1 + 1e-4)) == bounded


def test_optimizer_options_are_typed_and_bounded():
    with pytest.raises(ConfigError, match="train.optimizer must be one of sgd, adamw"):
        train_config("train.optimizer=adam")
    with pytest.raises(ConfigError, match="train.betas must be two numbers"):
        train_config("train.betas=[0.9]")
    with pytest.raises(ConfigError, match=r"train.betas\[1\] must be < 1"):
        train_config("train.betas=[0.9, 1.0]")
    with pytest.raises(ConfigError, match="train.grad_clip must be >= 0"):
        train_config("train.grad_clip=-1")


def test_clipping_under_fp16_gradient_scaling_clips_the_unscaled_gradients_of_a_fused_adamw():
    network = small_network()
    cfg = train_config("train.optimizer=adamw")
    optimizer = build_optimizer(network, cfg, 1e-3, fused=True)  # as the builder makes it for amp=fp16
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10)
    before = [p.detach().clone() for p in network.parameters()]
    scaler.scale(network(torch.randn(4, 3, 3, 3)).square().sum() * 100).backward()
    clip_gradients(optimizer, scaler, 1e-3)
    norm = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in network.parameters()]))
    assert norm <= 1e-3 * (1 + 1e-4)  # unscaled, then clipped
    scaler.step(optimizer)
    scaler.update()
    assert all(not torch.equal(a, b) and torch.isfinite(b).all() for a, b in zip(before, network.parameters()))


NEW_TRAIN_KEYS = ("optimizer", "betas", "weight_decay_norms", "grad_clip", "schedule", "lr_min")


def test_a_run_saved_before_these_options_existed_resumes_under_their_defaults_only(tmp_path):
    """An unfinished run whose config.yaml and last.pt predate the options (they lack the keys) resumes as
    long as the new keys keep their defaults, the behaviour of the code that saved it."""
    import yaml

    import train
    from engine.checkpoint import load_checkpoint
    from engine.cli import status_of

    from conftest import SMOKE

    run_dir = tmp_path / "run"
    command = [
        "--config",
        "configs/quickstart.yaml",
        *SMOKE,
        "data.num_train=64",
        "data.num_test=32",
        "train.batch_size=32",
        "train.epochs=1",
        "--run-dir",
        str(run_dir),
    ]
    assert status_of(train.main, command) == 0
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    for key in NEW_TRAIN_KEYS:
        del saved["train"][key]
    del saved["model"]["timm_kwargs"], saved["model"]["timm_stages"]
    (run_dir / "config.yaml").write_text(yaml.safe_dump(saved, sort_keys=False))
    state = load_checkpoint(run_dir / "last.pt")
    state["config"] = saved
    torch.save(state, run_dir / "last.pt")
    metrics = run_dir / "metrics.json"
    metrics.write_text(metrics.read_text().replace('"finished": true', '"finished": false'))
    assert status_of(train.main, [*command[:-2], "train.optimizer=adamw", *command[-2:]]) == 2  # not a default
    assert status_of(train.main, command) == 0


def test_fused_sgd_after_a_skipped_first_step_updates_from_zero_momentum():
    """torch's fused SGD leaves its momentum buffers uninitialised when GradScaler skips its first step; the
    optimizer built here starts from zero buffers, so the next step is plain SGD's first step."""
    config = load_config(REPO / "configs/quickstart.yaml", ["train.momentum=0.9", "train.weight_decay=0"])
    torch.manual_seed(0)
    fused_net, plain_net = torch.nn.Linear(4, 3), torch.nn.Linear(4, 3)
    plain_net.load_state_dict(fused_net.state_dict())
    fused = build_optimizer(fused_net, config.train, lr=0.1, fused=True)
    plain = build_optimizer(plain_net, config.train, lr=0.1, fused=False)
    assert len(fused.state) == 2 and all(not state["momentum_buffer"].any() for state in fused.state.values())
    scaler = torch.amp.GradScaler("cpu")
    scaler.scale(fused_net(torch.full((2, 4), float("inf"))).sum()).backward()  # an overflow: the step is skipped
    scaler.step(fused)
    scaler.update()
    assert scaler.get_scale() < 65536.0 and torch.equal(fused_net.weight, plain_net.weight)
    gradients = [torch.randn_like(parameter) for parameter in fused_net.parameters()]
    for net, optimizer in ((fused_net, fused), (plain_net, plain)):
        for parameter, gradient in zip(net.parameters(), gradients):
            parameter.grad = gradient.clone()
        optimizer.step()
    for mine, theirs in zip(fused_net.parameters(), plain_net.parameters()):
        torch.testing.assert_close(mine, theirs)
