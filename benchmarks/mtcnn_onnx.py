"""MTCNN's three face networks (P-Net, R-Net, O-Net) in plain PyTorch, exported to ONNX.

facenet-pytorch ships the pretrained weights as state dicts (`facenet_pytorch/data/{p,r,o}net.pt`) but
its package imports torchvision, which does not import beside our torch build; so the architecture (from
the MTCNN paper, Zhang et al. 2016) is written here and only the tensors are read, with
`weights_only=True`. The ONNX files are real pretrained face models for the development set.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

# MTCNN's preprocessing: (pixel - 127.5) / 128
MEAN, STD = 0.5, 128 / 255


def _conv_prelu(name: int, cin: int, cout: int, kernel: int) -> list[tuple[str, nn.Module]]:
    return [(f"conv{name}", nn.Conv2d(cin, cout, kernel)), (f"prelu{name}", nn.PReLU(cout))]


class PNet(nn.Module):
    """Proposal network: 12×12 windows (fully convolutional), face score and box offsets."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 10, 3), nn.PReLU(10)
        self.pool1 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.conv2, self.prelu2 = nn.Conv2d(10, 16, 3), nn.PReLU(16)
        self.conv3, self.prelu3 = nn.Conv2d(16, 32, 3), nn.PReLU(32)
        self.conv4_1, self.conv4_2 = nn.Conv2d(32, 2, 1), nn.Conv2d(32, 4, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.prelu3(self.conv3(self.prelu2(self.conv2(x))))
        return torch.softmax(self.conv4_1(x), dim=1), self.conv4_2(x)


class RNet(nn.Module):
    """Refinement network: 24×24 crops."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 28, 3), nn.PReLU(28)
        self.conv2, self.prelu2 = nn.Conv2d(28, 48, 3), nn.PReLU(48)
        self.conv3, self.prelu3 = nn.Conv2d(48, 64, 2), nn.PReLU(64)
        self.pool = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.dense4, self.prelu4 = nn.Linear(576, 128), nn.PReLU(128)
        self.dense5_1, self.dense5_2 = nn.Linear(128, 2), nn.Linear(128, 4)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.pool(self.prelu1(self.conv1(x)))
        x = self.pool(self.prelu2(self.conv2(x)))
        x = self.prelu3(self.conv3(x)).permute(0, 3, 2, 1).flatten(1)
        x = self.prelu4(self.dense4(x))
        return torch.softmax(self.dense5_1(x), dim=1), self.dense5_2(x)


class ONet(nn.Module):
    """Output network: 48×48 crops, score, box and five landmarks."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 32, 3), nn.PReLU(32)
        self.conv2, self.prelu2 = nn.Conv2d(32, 64, 3), nn.PReLU(64)
        self.conv3, self.prelu3 = nn.Conv2d(64, 64, 3), nn.PReLU(64)
        self.conv4, self.prelu4 = nn.Conv2d(64, 128, 2), nn.PReLU(128)
        self.pool3, self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True), nn.MaxPool2d(2, 2, ceil_mode=True)
        self.dense5, self.prelu5 = nn.Linear(1152, 256), nn.PReLU(256)
        self.dense6_1, self.dense6_2, self.dense6_3 = nn.Linear(256, 2), nn.Linear(256, 4), nn.Linear(256, 10)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.pool3(self.prelu1(self.conv1(x)))
        x = self.pool3(self.prelu2(self.conv2(x)))
        x = self.pool2(self.prelu3(self.conv3(x)))
        x = self.prelu4(self.conv4(x)).permute(0, 3, 2, 1).flatten(1)
        x = self.prelu5(self.dense5(x))
        return torch.softmax(self.dense6_1(x), dim=1), self.dense6_2(x), self.dense6_3(x)


NETWORKS = {"pnet": (PNet, 12), "rnet": (RNet, 24), "onet": (ONet, 48)}


def export_mtcnn(name: str, weights: Path, out: Path, opset: int = 13) -> Path:
    """Load `weights` (a state dict, weights_only) into network `name` and export it to `out`."""
    network, size = NETWORKS[name]
    model = network().eval()
    model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    example = torch.zeros(1, 3, size, size)
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.onnx.export(model, (example,), str(out), dynamo=False, opset_version=opset, input_names=["input"],
                      dynamic_axes={"input": {0: "batch", **({2: "height", 3: "width"} if name == "pnet" else {})}})  # fmt: skip
    return out
