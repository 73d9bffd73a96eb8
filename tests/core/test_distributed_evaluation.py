"""Large evaluations on worker processes: the same accuracy and agreement as in this process, SQNR equal
to rounding, running numbers streamed, and the `evaluate` verb's --workers option."""

import json

import pytest

from slimscope.core.cli import main
from slimscope.core.data import load_dataset
from slimscope.core.evaluate import RunningMetrics, iter_evaluate
from slimscope.core.executor import LocalExecutor
from slimscope.core.export import export_model
from slimscope.core.loading import load_model
from slimscope.core.optimize import iter_optimize
from slimscope.core.recipe import default_recipe
from slimscope.core.tasks import run_sync
from slimscope.resources import DEMO_CALIBRATION, DEMO_DATA, DEMO_MODEL


@pytest.fixture(scope="module")
def optimized():
    loaded = load_model(DEMO_MODEL)
    calib = load_dataset(DEMO_CALIBRATION, limit=64).x
    return loaded, run_sync(iter_optimize(loaded, default_recipe(), calib)).model


def test_workers_give_the_in_process_numbers(optimized):
    loaded, model = optimized
    data = load_dataset(DEMO_DATA)
    local = run_sync(iter_evaluate(loaded.model, model, data, latency=False))
    seen = []
    with LocalExecutor(workers=2) as executor:
        remote = run_sync(
            iter_evaluate(loaded.model, model, data, latency=False, executor=executor), seen.append
        )
    assert remote.samples == local.samples == 1000
    assert remote.accuracy == local.accuracy and remote.agreement == local.agreement
    assert remote.sqnr_db == pytest.approx(local.sqnr_db, rel=1e-9)
    assert remote.cosine == pytest.approx(local.cosine, rel=1e-9)
    running = [p.partial for p in seen if isinstance(p.partial, RunningMetrics)]
    assert len(running) >= 2 and running[-1].samples == 1000  # chunks of 256 streamed as they finished


def test_evaluate_verb_with_workers(optimized, tmp_path, capsys):
    loaded, model = optimized
    target = tmp_path / "small.onnx"
    export_model(model, target, protected=[loaded.source])
    code = main(["evaluate", str(DEMO_MODEL), str(target), "--data", str(DEMO_DATA), "--no-latency",
                 "--workers", "2", "--json"])  # fmt: skip
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert report["samples"] == 1000 and report["accuracy"]["original"] == pytest.approx(0.985)
