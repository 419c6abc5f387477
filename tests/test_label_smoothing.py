"""Label smoothing (loss.ce.label_smoothing, label_smoothing_to) against the released Tf-FD code's and
Self-KD-Lib's smoothed target written out by hand, and the configs that use it: Self-KD-Lib's LS row and
the IJCNN version's TFD† (Tf-FD + label smoothing) on CIFAR-100 and ImageNet."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from core.typed_config import to_dict
from engine.config import load_config
from losses import StepOutput
from losses.ce import CEConfig, CrossEntropy

from conftest import REPO, method_config

LOGITS = torch.tensor([[2.0, -1.0, 0.5, 0.0], [0.3, 0.2, -0.4, 1.5], [-1.0, 0.0, 3.0, 0.5]])
TARGETS = torch.tensor([0, 3, 1])


def smoothed_by_hand(eps: float, to_others: bool, targets: torch.Tensor = TARGETS) -> torch.Tensor:
    """utils.py's loss_label_smoothing (lliai/Teacher-free-Distillation @ 6c15ec6) and Self-KD-Lib's LabelSmooth:
    eps/(K-1) on each other class and 1 - eps on the target; torch's: eps/K everywhere plus 1 - eps on the target."""
    classes = LOGITS.shape[1]
    off = eps / (classes - 1) if to_others else eps / classes
    target = torch.full_like(LOGITS, off)
    target[range(len(targets)), targets] = 1 - eps if to_others else 1 - eps + eps / classes
    return -(target * LOGITS.log_softmax(1)).sum(1).mean()


@pytest.mark.parametrize("to", ["all", "others"])
def test_ce_against_the_smoothed_target_by_hand(to):
    loss = CrossEntropy(CEConfig(label_smoothing=0.1, label_smoothing_to=to))(StepOutput(LOGITS, [], TARGETS, 1))
    torch.testing.assert_close(loss["ce"], smoothed_by_hand(0.1, to == "others"))


def test_against_mixed_labels_it_is_the_mixture_of_the_two_smoothed_losses():
    mixed = 0.7 * F.one_hot(TARGETS, 4).float() + 0.3 * F.one_hot(TARGETS.roll(1), 4).float()
    step = StepOutput(LOGITS, [], TARGETS, 1, target_probs=mixed)
    loss = CrossEntropy(CEConfig(label_smoothing=0.1, label_smoothing_to="others"))(step)["ce"]
    expected = 0.7 * smoothed_by_hand(0.1, True) + 0.3 * smoothed_by_hand(0.1, True, TARGETS.roll(1))
    torch.testing.assert_close(loss, expected)


def test_the_method_config_is_the_released_scripts_and_self_kd_libs_epsilon(tmp_path):
    config = method_config(tmp_path, "label_smoothing")
    assert config.loss.terms == ["ce"]
    assert (config.loss.ce.label_smoothing, config.loss.ce.label_smoothing_to) == (0.1, "others")


@pytest.mark.parametrize("model", ["resnet20", "resnet32", "wrn_16_2", "wrn_40_1"])
def test_tfd_dagger_configs_are_tffd_with_label_smoothing_under_the_ijcnn_protocol(model):
    config = load_config(REPO / f"configs/cifar100/{model}_label_smoothing_tffd.yaml")
    assert config.model.name == model and config.loss.terms == ["ce", "tffd"]
    assert (config.loss.ce.label_smoothing, config.loss.ce.label_smoothing_to) == (0.1, "others")
    assert (config.loss.tffd.lambda_inter, config.loss.tffd.lambda_intra) == (5e-3, 4e-4)  # the IJCNN text's
    crd = load_config(REPO / "configs/cifar100/wrn_16_2_kd.yaml").train  # the KD-benchmark (CRD) protocol
    assert config.train == crd and (crd.batch_size, crd.lr, crd.epochs) == (64, 0.05, 240)


@pytest.mark.parametrize("method", ["cutout", "autoaugment"])
def test_resnet32_ablation_configs_are_tffd_plus_the_method_under_the_ijcnn_protocol(method):
    plus = to_dict(load_config(REPO / f"configs/cifar100/resnet32_{method}_tffd.yaml"))
    tffd_ls = to_dict(load_config(REPO / "configs/cifar100/resnet32_label_smoothing_tffd.yaml"))
    assert plus["train"] == tffd_ls["train"] and plus["loss"]["tffd"] == tffd_ls["loss"]["tffd"]
    assert plus["loss"]["terms"] == ["ce", "tffd"] and plus["loss"]["ce"]["label_smoothing"] == 0
    assert (plus["batch"]["transforms"], plus["data"]["augment"]) == (
        (["cutout"], []) if method == "cutout" else ([], ["autoaugment"])
    )


def test_imagenet_tfd_dagger_is_resnet18_tffd_with_label_smoothing():
    plus = to_dict(load_config(REPO / "configs/imagenet/resnet18_label_smoothing_tffd.yaml"))
    tffd = to_dict(load_config(REPO / "configs/imagenet/resnet18_tffd.yaml"))
    assert (plus["loss"]["ce"]["label_smoothing"], plus["loss"]["ce"]["label_smoothing_to"]) == (0.1, "others")
    plus["loss"]["ce"] = tffd["loss"]["ce"]
    assert plus == tffd  # the same terms, stages, lambdas and 100-epoch recipe
