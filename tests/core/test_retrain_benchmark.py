"""The retraining benchmark's own parts (benchmarks/retrain_recovery.py): its recipes are valid, its test
accuracy is onnxruntime's top-1 over every image, its goals judge the numbers they print, and its
MobileNetV2 has the shape it claims. The benchmark itself is run by hand (minutes)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from networks import NarrowMobileNetV2, _divisible
from retrain_recovery import QUICK_TRAINING, ROWS, TRAINING, Row, goals, held_out_accuracy, make_recipe
from torch import nn


@pytest.mark.parametrize("network", sorted(TRAINING))
@pytest.mark.parametrize("quick", [False, True])
def test_every_row_is_a_valid_recipe_with_the_networks_training(network, quick):
    training = TRAINING[network] | (QUICK_TRAINING if quick else {})
    for _, prune, quantize in ROWS:
        spec = make_recipe(prune, quantize, training).training
        assert spec.batch_size == training.get("batch_size", 64)
        assert spec.qat.epochs == training["qat"]["epochs"]
        assert (spec.max_batches_per_epoch is not None) == quick


def test_held_out_accuracy_counts_every_image_in_onnxruntime(conv_net, run_onnx):
    x = np.random.default_rng(0).standard_normal((600, 3, 8, 8)).astype(np.float32)  # 3 chunks of 250
    predicted = run_onnx(conv_net.model, {"input": x})[0].argmax(axis=1)
    labels = predicted.copy()
    labels[::3] = (labels[::3] + 1) % 5  # every third image wrong
    assert held_out_accuracy(conv_net.model, x, labels) == pytest.approx(400 / 600)


def _row(label: str, retrained: float, speedup: float | None = None) -> Row:
    return Row(label, one_shot=0.0, retrained=retrained, seconds=1.0, model=None, speedup=speedup)  # type: ignore[arg-type]


def test_goals_are_met_only_within_one_point_and_at_the_speedup():
    dense = 0.98
    met = goals(dense, [_row("unstructured 80 %", 0.9705), _row("channels 50 %", 0.975, 1.5),
                        _row("int4 weights", 0.98)])  # fmt: skip
    assert [line.split(": ")[1].split(" ")[0] for line in met] == ["yes", "yes", "yes"]
    assert "(0.95 pt)" in met[0] and "1.50×" in met[1]
    missed = goals(dense, [_row("unstructured 80 %", 0.9695), _row("channels 50 %", 0.98, 1.49),
                           _row("int4 weights", 0.95)])  # fmt: skip
    assert [line.split(": ")[1].split(" ")[0] for line in missed] == ["no", "no", "no"]
    assert "(3.00 pt)" in missed[2]


def test_narrow_mobilenetv2_has_inverted_residuals_at_multiples_of_eight():
    assert [_divisible(c * 0.5) for c in (32, 16, 24, 96, 160, 320)] == [16, 8, 16, 48, 80, 160]
    net = NarrowMobileNetV2(width=0.5, head=640, stem_stride=1).eval()
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
    assert all(conv.out_channels % 8 == 0 for conv in convs)
    assert sum(conv.groups > 1 for conv in convs) == 17  # one depthwise conv per block
    assert sum(getattr(block, "use_res_connect", False) for block in net.features) == 10
    assert net(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
