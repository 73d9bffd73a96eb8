"""ResNet-18 and MobileNetV2 in plain torch.nn, layer for layer as torchvision defines them.

torchvision does not import beside the pinned torch build, so the two reference architectures are written
out from their papers (He et al. 2016, "Deep Residual Learning"; Sandler et al. 2018, "MobileNetV2").
Module names follow torchvision's (conv1, layer1.0.downsample, features.1.conv, classifier.1, ...) so the
ONNX node names read like the models people know, and with the default 1000-class heads the parameter
counts match the references exactly (`python benchmarks/networks.py` checks them). The benchmark builds them
with `num_classes=10` and trains them on digits (see build_benchmark_models.py); only the last Linear changes.
"""

from __future__ import annotations

import torch
from torch import nn

RESNET18_PARAMS = 11_689_512
MOBILENETV2_PARAMS = 3_504_872


# --- ResNet-18 ---------------------------------------------------------------------------------------


class BasicBlock(nn.Module):
    """Two 3x3 convs with a residual; a 1x1 conv + BN projects the shortcut when the shape changes."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        # bias=False everywhere a BatchNorm follows: its beta already is the bias.
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample: nn.Module | None = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class ResNet18(nn.Module):
    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        # Stage 1 keeps the resolution the maxpool already halved; stages 2-4 halve it in their first block.
        self.layer1 = _resnet_stage(64, 64, stride=1)
        self.layer2 = _resnet_stage(64, 128, stride=2)
        self.layer3 = _resnet_stage(128, 256, stride=2)
        self.layer4 = _resnet_stage(256, 512, stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(512, num_classes)
        _init_resnet(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def _resnet_stage(cin: int, cout: int, stride: int, blocks: int = 2) -> nn.Sequential:
    return nn.Sequential(
        BasicBlock(cin, cout, stride), *[BasicBlock(cout, cout, 1) for _ in range(blocks - 1)]
    )


def _init_resnet(model: nn.Module) -> None:
    # torchvision's scheme: He-normal (fan_out) convs, BN at identity; fc keeps nn.Linear's default.
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


# --- MobileNetV2 -------------------------------------------------------------------------------------

# (expand ratio t, output channels c, repeats n, first stride s), Table 2 of the MobileNetV2 paper.
MOBILENETV2_STAGES = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
                      (6, 160, 3, 2), (6, 320, 1, 1)]  # fmt: skip


def conv_bn_relu6(cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU6(inplace=True),
    )


class InvertedResidual(nn.Module):
    """1x1 expand (skipped when t == 1) -> 3x3 depthwise -> 1x1 linear projection (no activation)."""

    def __init__(self, cin: int, cout: int, stride: int, expand_ratio: int) -> None:
        super().__init__()
        hidden = cin * expand_ratio
        self.use_res_connect = stride == 1 and cin == cout
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers.append(conv_bn_relu6(cin, hidden, 1))
        layers += [
            conv_bn_relu6(hidden, hidden, 3, stride, groups=hidden),
            nn.Conv2d(hidden, cout, 1, bias=False),
            nn.BatchNorm2d(cout),  # linear bottleneck: a ReLU here would destroy information
        ]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_res_connect else self.conv(x)


class MobileNetV2(nn.Module):
    def __init__(self, num_classes: int = 1000, dropout: float = 0.2) -> None:
        super().__init__()
        # Width 1.0: every channel count in the table is already a multiple of 8, so torchvision's
        # _make_divisible rounding is the identity and is left out.
        features: list[nn.Module] = [conv_bn_relu6(3, 32, 3, 2)]
        cin = 32
        for t, c, n, s in MOBILENETV2_STAGES:
            for i in range(n):
                features.append(InvertedResidual(cin, c, s if i == 0 else 1, t))
                cin = c
        features.append(conv_bn_relu6(cin, 1280, 1))
        self.features = nn.Sequential(*features)
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(1280, num_classes))
        _init_mobilenetv2(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = nn.functional.adaptive_avg_pool2d(self.features(x), 1)
        return self.classifier(torch.flatten(x, 1))


def _init_mobilenetv2(model: nn.Module) -> None:
    # torchvision's scheme: He-normal (fan_out) convs with zero bias, BN at identity, classifier N(0, 0.01).
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0, 0.01)
            nn.init.zeros_(m.bias)


class NarrowMobileNetV2(nn.Module):
    """MobileNetV2 at a width multiplier (channels rounded to multiples of 8, as the paper's models do),
    for small grey images: real inverted residual blocks (1x1 expand, 3x3 depthwise, linear 1x1
    projection, BatchNorm, ReLU6, residual Adds) with a narrower 1x1 head than the reference's 1280.

    Used by retrain_recovery.py: width 0.5, one input channel, 28 x 28 digits, stride-1 stem.
    """

    def __init__(self, width: float = 0.5, in_channels: int = 1, num_classes: int = 10,
                 head: int = 640, stem_stride: int = 2, dropout: float = 0.2) -> None:  # fmt: skip
        super().__init__()
        stem = _divisible(32 * width)
        features: list[nn.Module] = [conv_bn_relu6(in_channels, stem, 3, stem_stride)]
        cin = stem
        for t, c, n, s in MOBILENETV2_STAGES:
            cout = _divisible(c * width)
            for i in range(n):
                features.append(InvertedResidual(cin, cout, s if i == 0 else 1, t))
                cin = cout
        features.append(conv_bn_relu6(cin, head, 1))
        self.features = nn.Sequential(*features)
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(head, num_classes))
        _init_mobilenetv2(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = nn.functional.adaptive_avg_pool2d(self.features(x), 1)
        return self.classifier(torch.flatten(x, 1))


class VggDigits(nn.Module):
    """A VGG-style digit classifier (Simonyan & Zisserman 2015, the BatchNorm variant): stacks of 3x3 convs
    with BatchNorm and ReLU between 2x2 max-pools, then two fully connected layers with dropout. Written
    the way such a network is commonly written for MNIST, not shaped after Slimscope's demo; used by
    retrain_recovery.py as a network nobody here tuned the retraining for (1 x 28 x 28 input).
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 10, widths: tuple[int, ...] = (32, 64, 128),
                 hidden: int = 256, dropout: float = 0.3) -> None:  # fmt: skip
        super().__init__()
        layers: list[nn.Module] = []
        cin = in_channels
        for stage, cout in enumerate(widths):
            for _ in range(1 if stage < 2 else 2):  # VGG-A style: one conv in the first stages, two after
                layers += [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]
                cin = cout
            layers.append(nn.MaxPool2d(2))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(cin * 3 * 3, hidden), nn.ReLU(), nn.Dropout(dropout),
            nn.Linear(hidden, num_classes),
        )  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def _divisible(channels: float, divisor: int = 8) -> int:
    """The nearest multiple of `divisor` (at least `divisor`), never more than 10 % below `channels`:
    the rounding MobileNetV2's width multipliers use."""
    rounded = max(divisor, int(channels + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * channels else rounded


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


if __name__ == "__main__":
    for name, net, expected in [
        ("ResNet-18", ResNet18(), RESNET18_PARAMS),
        ("MobileNetV2", MobileNetV2(), MOBILENETV2_PARAMS),
    ]:
        got = count_parameters(net)
        assert got == expected, f"{name}: {got:,} parameters, reference has {expected:,}"
        shape = tuple(net.eval()(torch.zeros(1, 3, 224, 224)).shape)
        assert shape == (1, 1000), f"{name}: output shape {shape}"
        # The benchmark's variant: 10 classes, run at 64 x 64 (its training size) as well as 224 x 224.
        small = type(net)(num_classes=10).eval()
        shape_small = tuple(small(torch.zeros(1, 3, 64, 64)).shape)
        assert shape_small == (1, 10), f"{name}, 10 classes at 64x64: output shape {shape_small}"
        print(
            f"{name}: {got:,} parameters (matches reference), output {shape}; "
            f"10-class variant {count_parameters(small):,} parameters, output {shape_small} at 64x64"
        )
