"""Where each published number is printed: the source strings the tables' notes quote (with the backbone, the
protocol and which accuracy), shared by the numbers of results/published.py."""

from __future__ import annotations

# ---------------------------------------------------------------- the Tf-FD paper's table (ECCV 2022 poster)
TFFD_PAPER = (
    "Tf-FD paper (ECCV 2022), CIFAR-100 table (its baseline, teacher and KD numbers: those of the KD "
    "benchmark it reuses)"
)

CRD_README = (
    "CRD benchmark README (HobbitLong/RepDistiller, table 1: teacher and student of the same type), "
    "its train_student.py defaults: 240 epochs, batch 64, SGD momentum 0.9 without Nesterov, lr 0.05 x0.1 "
    "at 150/180/210, wd 5e-4; the poster has no WRN-40-1"
)

# ---------------------------------------------------------------- self-distillation (CIFAR-100)
SELFKD_LIB = (
    "Self-KD-Lib README (winycg/Self-KD-Lib), CIFAR-100 table: PreAct ResNet-18, best epoch, "
    "its 200-epoch protocol (the one our configs follow)"
)
TF_KD_REPO = (
    "Tf-KD repository figures (yuanli2333/Teacher-free-Knowledge-Distillation): ResNet18 "
    "(post-activation, the architecture of our cifar_resnet18), its own protocol: 200 epochs, "
    "1-epoch warm-up, x0.2 at 60/120/160, RandomRotation(15)"
)
PS_KD_CALIBRATION = (
    "; NLL, ECE and AURC as its utils/metric.py computes them: NLL the mean test cross-entropy, "
    "ECE with 10 equal-width confidence bins (ours: 15), AURC x 10^3"
)
PS_KD_README = (
    "PS-KD README (lgcnsai/PS-KD-Pytorch): PreAct ResNet-18, its own protocol: 300 epochs, "
    "x0.1 at 150/225; top-1 = 100 - the error it reports (CE 24.18, PS-KD 20.82)" + PS_KD_CALIBRATION
)
PS_KD_README_CS_KD = (
    "PS-KD README (lgcnsai/PS-KD-Pytorch), its re-run of CS-KD: PreAct ResNet-18, "
    "protocol not given; top-1 = 100 - the error it reports (21.30)" + PS_KD_CALIBRATION
)
PS_KD_README_OTHERS = (
    "PS-KD README (lgcnsai/PS-KD-Pytorch), its runs of label smoothing and of TF-KD (Tf-KD's self "
    "or reg variant: not said): PreAct ResNet-18, protocol and settings not given (the repository "
    "has no code for either); top-1 = 100 - the error it reports (LS 20.94, TF-KD 22.88)" + PS_KD_CALIBRATION
)
CUTOUT_PAPER = (
    "Cutout paper (DeVries and Taylor, 2017; uoguelph-mlrg/Cutout): ResNet-18, its own protocol; "
    "top-1 = 100 - the error it reports (22.46 -> 21.96)"
)
CUTMIX_PAPER = (
    "CutMix (Yun et al., ICCV 2019; clovaai/CutMix-PyTorch): PyramidNet-200, its own protocol; "
    "top-1 = 100 - the error it reports (16.45 -> 14.23)"
)
BYOT_PAPER = (
    "BYOT paper (Zhang et al., ICCV 2019) as quoted by the luanyunteng/pytorch-be-your-own-teacher "
    "README: ResNet18, the deepest classifier (4/4)"
)
SELFKD_LIB_FRSKD = SELFKD_LIB + "; 77.71 before its commit cdb5c8d"
BAKE_PAPER = (
    "BAKE (Ge et al., 2021; yxgeee/BAKE small_scale): PreAct ResNet-18, its own protocol: batch 32 anchors "
    "x 4 same-class images, wd 1e-4, /10 at 50% and 75%; top-1 = 100 - the error it reports (21.28)"
)
ZIPF_REPO = (
    "Zipf's LS README (megvii-research/zipfls): PreAct ResNet-18, its own protocol: 200 epochs, wd 1e-4, "
    "/10 at 100/150; mean of its runs (77.38 +- 0.32)"
)
BYOT_REPO = (
    "luanyunteng/pytorch-be-your-own-teacher README, its own run: ResNet18 (post-activation), the "
    "deepest classifier (4/4), its own protocol: 200 epochs, /10 at 75/130/180"
)

# Tf-FD's IJCNN 2022 version: "Teacher-free Distillation via Regularizing Intermediate Representation" (TFD).
# Its text is index.md of the released repository's gh-pages branch at commit c4fd201 (not in the current file).
IJCNN = "Tf-FD's IJCNN 2022 version (TFD; lliai/Teacher-free-Distillation, gh-pages branch, index.md at c4fd201)"
IJCNN_CIFAR = (
    "CIFAR-100, the protocol its text states (CRD's): 240 epochs, batch 64, SGD wd 5e-4, lr 0.05 x0.1 "
    "at 150/180/210; lambda_inter 0.005, lambda_intra 0.0004"
)
IJCNN_FD = (
    IJCNN
    + ", table tab:cifar-FD (vs feature distillation), "
    + IJCNN_CIFAR
    + "; 'top-1 best accuracies (%) for our method over 3 runs'"
)
IJCNN_OTHER = (
    IJCNN
    + ", table tab:other (vs KD, VID, PKT, RKD, CC, CRD), "
    + IJCNN_CIFAR
    + "; 'top-1 the best accuracies (%) for our method over 3 runs'"
)
IJCNN_BOTH = (
    IJCNN
    + ", tables tab:cifar-FD and tab:other (the same number in both), "
    + IJCNN_CIFAR
    + "; 'top-1 best accuracies (%) for our method over 3 runs'"
)
IJCNN_ABLATION = (
    IJCNN
    + ", table tab:Ablation-other-training (TFD with other training techniques, ResNet32), "
    + IJCNN_CIFAR
    + "; mean of 3 runs (the ablation section's rule); + Logit KD: teacher ResNet110; "
    "the smoothing value, the Cutout size and the AutoAugment policy are not given"
)
IJCNN_IMAGENET = (
    IJCNN + ", table tab:imagnet-sota: ImageNet ResNet-18 (ResNet-34, 73.40, the teacher of the "
    "teacher-based rows), 100 epochs, lr 0.1 x0.1 at 30/60/90 (batch size and weight decay not "
    "stated); 'all results of other methods are reproduced under the same training settings'"
)
IJCNN_LS = "; TFD† = TFD + label smoothing (its value not given)"

# ---------------------------------------------------------------- ImageNet (configs/imagenet/)
IMAGENET_RECIPE = "the standard 100-epoch recipe (batch 256, lr 0.1, /10 at 30/60/90, wd 1e-4)"
TFFD_IJCNN = IJCNN_IMAGENET + "; the ECCV paper reports +0.91 over its own baseline, without the absolute numbers"
USKD_REPO = (
    "USKD (Yang et al., ICCV 2023; yzd-v/cls_KD nkd.md): ImageNet ResNet-18 in mmcls, "
    + IMAGENET_RECIPE
    + " (res18_sd_img.py)"
)
USKD_R50 = (
    "USKD (Yang et al., ICCV 2023; yzd-v/cls_KD nkd.md): ImageNet ResNet-50 in mmcls, "
    + IMAGENET_RECIPE
    + " (res50_sd_img.py on resnet50_8xb32_in1k.py)"
)
USKD_MV1 = (
    "USKD (Yang et al., ICCV 2023; yzd-v/cls_KD nkd.md): ImageNet MobileNet (V1, the repository's own "
    "mmcls backbone), " + IMAGENET_RECIPE + " (mv1_sd_img.py on mobilenet_v1.py)"
)
USKD_MV2 = (
    "USKD (Yang et al., ICCV 2023; yzd-v/cls_KD nkd.md): ImageNet MobileNetV2 in mmcls, mmcls's MobileNetV2 "
    "recipe: 300 epochs, batch 256, lr 0.045 x0.98 after every epoch, wd 4e-5 (mv2_sd_img.py on "
    "mobilenet-v2_8xb32_in1k.py)"
)
