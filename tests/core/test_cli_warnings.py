"""The command line warns when a recipe costs too much, in one WARNING line naming layers and what to try."""

import numpy as np

from slimscope.core.cli import main
from slimscope.core.recipe import QuantSpec
from slimscope.core.recipe_files import save_recipe
from slimscope.core.recipe_presets import preset_recipe
from slimscope.resources import DEMO_DATA, DEMO_MODEL


def test_optimize_prints_a_warning_line_with_the_worst_layers_and_a_next_step(tmp_path, capsys):
    with np.load(DEMO_DATA) as test:
        np.savez(tmp_path / "calib.npz", x=test["x"][:64])
        np.savez(tmp_path / "eval.npz", x=test["x"][500:700], y=test["y"][500:700])
    crushed = preset_recipe("int8").with_defaults(quantize=QuantSpec(weight_bits=2))
    save_recipe(crushed, tmp_path / "r.json")
    code = main(["optimize", str(DEMO_MODEL), "--recipe", str(tmp_path / "r.json"), "-o", str(tmp_path / "o.onnx"),
                 "--calib", str(tmp_path / "calib.npz"), "--eval", str(tmp_path / "eval.npz"), "--no-latency"])  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0
    warnings = [line for line in out.splitlines() if line.startswith("WARNING: ")]
    quality = [line for line in warnings if "agreement with the original is" in line]
    assert len(quality) == 1, out
    assert "(below 95.0%)" in quality[0] and "The layers with the largest measured error: '" in quality[0]
    assert "sensitivity" in quality[0] and "gentler preset" in quality[0]
    agreement = next(line for line in out.splitlines() if line.startswith("top-1 agreement: "))
    assert agreement.endswith("%") and "." in agreement  # "top-1 agreement: 41.5%", as the window shows it
    assert any(line.startswith("SQNR on the outputs: ") and line.endswith(" dB") for line in out.splitlines())


def test_a_gentle_recipe_prints_no_quality_warning(tmp_path, capsys):
    with np.load(DEMO_DATA) as test:
        np.savez(tmp_path / "data.npz", x=test["x"][:200], y=test["y"][:200])
    save_recipe(preset_recipe("int8"), tmp_path / "r.json")
    code = main(["optimize", str(DEMO_MODEL), "--recipe", str(tmp_path / "r.json"), "-o", str(tmp_path / "o.onnx"),
                 "--eval", str(tmp_path / "data.npz"), "--no-latency"])  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0 and "agreement with the original is" not in out and "LOWER" not in out
