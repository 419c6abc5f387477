"""The ImageNet self-KD configs (configs/imagenet/resnet18_{uskd,ps_kd,cs_kd}[_tffd].yaml; USKD on ResNet-50,
MobileNet and MobileNetV2) and what PS-KD's ImageNet-sized table needs: host storage and a narrower dtype
(losses/ps_kd.py)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from core.errors import ConfigError
from core.typed_config import to_dict
from losses import StepOutput, TrainingSetup
from losses.ps_kd import ProgressiveSelfKD, PSKDConfig
from losses.uskd import USKDConfig

from conftest import REPO


# ---------------------------------------------------------------- the configs
@pytest.mark.parametrize("method, terms", [("uskd", ["ce", "uskd"]), ("ps_kd", ["ps_kd"]), ("cs_kd", ["ce", "cs_kd"])])
@pytest.mark.parametrize("with_tffd", [False, True], ids=["alone", "with_tffd"])
def test_imagenet_configs_hold_the_100_epoch_recipe_and_the_methods_settings(method, terms, with_tffd):
    from engine.config import load_config

    config = load_config(REPO / f"configs/imagenet/resnet18_{method}{'_tffd' if with_tffd else ''}.yaml")
    assert config.loss.terms == terms + (["tffd"] if with_tffd else [])
    assert (config.model.name, config.data.name) == ("resnet18", "imagenet")
    train = config.train
    assert (train.epochs, train.batch_size, train.lr, train.momentum, train.nesterov) == (100, 256, 0.1, 0.9, False)
    assert (train.milestones, train.gamma, train.weight_decay, train.lr_warmup_epochs) == ([30, 60, 90], 0.1, 1e-4, 0)
    if method == "uskd":  # yzd-v/cls_KD res18_sd_img.py
        assert config.loss.uskd == USKDConfig(alpha=1.0, beta=0.1, mu=0.005, stage=-2, rank_from="code")
    if method == "ps_kd":
        assert config.loss.ps_kd == PSKDConfig(alpha_T=0.8, storage="cpu", dtype="float16")
    if method == "cs_kd":
        assert (config.loss.cs_kd.weight, config.loss.cs_kd.temperature) == (1.0, 4.0)
    if with_tffd:  # resnet18_tffd.yaml's term, and nothing else changes
        reference = load_config(REPO / "configs/imagenet/resnet18_tffd.yaml").loss.tffd
        assert config.loss.tffd == reference and reference.stages == [2, 3, 4]
        plus, alone = to_dict(config), to_dict(load_config(REPO / f"configs/imagenet/resnet18_{method}.yaml"))
        plus["loss"]["terms"], plus["loss"]["tffd"] = alone["loss"]["terms"], alone["loss"]["tffd"]
        assert plus == alone


# USKD on the other ImageNet backbones of yzd-v/cls_KD's table: (model, the configs' prefix, the width of the
# stage its config's ``channel`` names for the weak head, the recipe: epochs, lr, weight decay)
USKD_BACKBONES = [
    ("resnet50", "resnet50", 1024, (100, 0.1, 1e-4)),
    ("mobilenetv1", "mobilenetv1", 512, (100, 0.1, 1e-4)),
    ("mobilenetv2_imagenet", "mobilenetv2", 320, (300, 0.045, 4e-5)),
]


@pytest.mark.parametrize("model, prefix, channels, recipe", USKD_BACKBONES)
def test_uskd_configs_put_the_weak_head_where_cls_kd_does(model, prefix, channels, recipe):
    from engine.config import load_config
    from models import build_model

    config = load_config(REPO / f"configs/imagenet/{prefix}_uskd.yaml")
    assert (config.model.name, config.loss.terms) == (model, ["ce", "uskd"])
    assert (config.loss.uskd.alpha, config.loss.uskd.beta, config.loss.uskd.mu) == (1.0, 0.1, 0.005)
    assert (config.train.epochs, config.train.lr, config.train.weight_decay) == recipe
    with torch.no_grad():
        _, feats = build_model(model, 1000).eval()(torch.zeros(1, 3, 64, 64))
    assert feats[config.loss.uskd.stage].shape[1] == channels
    plus, alone = to_dict(load_config(REPO / f"configs/imagenet/{prefix}_uskd_tffd.yaml")), to_dict(config)
    assert plus["loss"]["terms"] == ["ce", "uskd", "tffd"]
    assert plus["loss"]["tffd"] == to_dict(load_config(REPO / f"configs/imagenet/{prefix}_tffd.yaml"))["loss"]["tffd"]
    plus["loss"]["terms"], plus["loss"]["tffd"] = alone["loss"]["terms"], alone["loss"]["tffd"]
    assert plus == alone


def test_the_mobilenetv2_recipe_is_mmcls_steplr_of_0_98_per_epoch():
    from engine.config import load_config
    from engine.schedule import lr_factor

    train = load_config(REPO / "configs/imagenet/mobilenetv2_ce.yaml").train
    assert (train.batch_size, train.momentum, train.nesterov, train.lr_warmup_epochs) == (256, 0.9, False, 0)
    steps = 3  # per epoch
    for epoch in range(train.epochs):
        factor = lr_factor(epoch * steps + 1, steps, train.milestones, train.gamma, train.lr_warmup_epochs)
        assert factor == pytest.approx(0.98**epoch, rel=1e-12)


# ---------------------------------------------------------------- PS-KD: storage and dtype
def ps_kd(**options) -> ProgressiveSelfKD:
    term = ProgressiveSelfKD(PSKDConfig(**options))
    term.attach(TrainingSetup(num_samples=6, num_classes=4, epochs=3, feature_shapes=()))
    return term


def two_epochs(term: ProgressiveSelfKD):
    """The losses and logit gradients of two epochs of two steps each, on fixed logits."""
    generator = torch.Generator().manual_seed(0)
    out = []
    for epoch in (1, 2):
        for indices in (torch.tensor([4, 1, 0]), torch.tensor([2, 5, 3])):
            logits = torch.randn(3, 4, generator=generator, requires_grad=True)
            targets = torch.randint(0, 4, (3,), generator=generator)
            loss = term(StepOutput(logits, [], targets, epoch, indices=indices))["ps_kd"]
            loss.backward()
            out.append((loss.detach(), logits.grad))
    return out


def test_host_storage_trains_as_device_storage_and_is_no_buffer():
    device, host = ps_kd(), ps_kd(storage="cpu")
    for (loss_a, grad_a), (loss_b, grad_b) in zip(two_epochs(device), two_epochs(host)):
        torch.testing.assert_close(loss_a, loss_b, rtol=0, atol=0)
        torch.testing.assert_close(grad_a, grad_b, rtol=0, atol=0)
    assert torch.equal(device.past, host.past) and torch.equal(device.seen, host.seen)
    # moving the term and broadcasting its buffers leave the host table alone; the checkpoint keeps it
    assert "past" in dict(device.named_buffers()) and set(dict(host.named_buffers())) == {"seen"}
    assert set(host.state_dict()) == set(device.state_dict()) == {"past", "seen"}
    assert torch.equal(host.state_dict()["past"], host.past)


def test_the_table_loads_into_either_storage_and_any_dtype():
    trained = ps_kd()
    two_epochs(trained)
    for options in ({"storage": "cpu"}, {"storage": "cpu", "dtype": "float16"}, {"dtype": "bfloat16"}):
        term = ps_kd(**options)
        term.load_state_dict(trained.state_dict())
        assert term.past.dtype == {"float16": torch.float16, "bfloat16": torch.bfloat16}.get(
            options.get("dtype"), torch.float32
        )
        torch.testing.assert_close(term.past.float(), trained.past, rtol=2**-8, atol=0)
        assert torch.equal(term.seen, trained.seen)
        back = ps_kd()
        back.load_state_dict(term.state_dict())  # and back into the default
        torch.testing.assert_close(back.past, term.past.float(), rtol=0, atol=0)


def test_a_host_table_of_another_shape_or_none_fails_to_load():
    term = ps_kd(storage="cpu")
    other = ProgressiveSelfKD(PSKDConfig())
    other.attach(TrainingSetup(num_samples=7, num_classes=4, epochs=3, feature_shapes=()))
    with pytest.raises(RuntimeError, match=r"size mismatch for past: copying a param with shape \(7, 4\)"):
        term.load_state_dict(other.state_dict())
    with pytest.raises(RuntimeError, match='Missing key.*"past"'):
        term.load_state_dict({"seen": torch.zeros(6, dtype=torch.bool)})


def test_float16_rounds_each_probability_within_2_to_the_minus_11_and_the_target_is_float32():
    term = ps_kd(storage="cpu", dtype="float16")
    logits = torch.tensor([[9.0, 0.0, -4.0, -20.0], [1.0, 1.0, 0.5, 0.0], [0.0, 0.1, 0.2, 0.3]])
    indices, targets = torch.tensor([0, 3, 5]), torch.tensor([0, 1, 2])
    term(StepOutput(logits, [], targets, 1, indices=indices))
    probs = logits.softmax(1)
    stored = term.past[indices]
    assert stored.dtype == torch.float16 and term._read(indices).dtype == torch.float32
    # round to nearest: within 2^-11 of a normal number, within half of 2^-24 below 2^-14
    assert ((stored.float() - probs).abs() <= torch.maximum(probs * 2**-11, torch.tensor(2.0**-25))).all()
    assert stored[0, 3] == 0  # softmax ~ 2e-13: below float16's smallest step
    # the next epoch's loss is within that rounding of the float32 table's
    reference = ps_kd()
    reference(StepOutput(logits, [], targets, 1, indices=indices))
    loss, exact = (t(StepOutput(logits.flip(0), [], targets, 2, indices=indices))["ps_kd"] for t in (term, reference))
    torch.testing.assert_close(loss, exact, rtol=1e-3, atol=0)
    one_hot = F.one_hot(targets, 4).float()
    alpha = 0.8 * 2 / 3
    expected = F.cross_entropy(logits.flip(0), (1 - alpha) * one_hot + alpha * stored.float())
    torch.testing.assert_close(loss, expected)


def test_bfloat16_rounds_within_2_to_the_minus_8():
    term = ps_kd(dtype="bfloat16")
    logits = torch.randn(3, 4)
    term(StepOutput(logits, [], torch.tensor([0, 1, 2]), 1, indices=torch.tensor([0, 1, 2])))
    assert ((term.past[:3].float() - logits.softmax(1)).abs() <= logits.softmax(1) * 2**-8).all()


def test_unknown_storage_or_dtype_is_a_config_error():
    with pytest.raises(ConfigError, match="storage must be one of device, cpu"):
        PSKDConfig(storage="gpu")
    with pytest.raises(ConfigError, match="dtype must be one of float32, float16, bfloat16"):
        PSKDConfig(dtype="half")
