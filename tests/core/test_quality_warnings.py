"""quality_warnings.judge: the thresholds, the worst layers named, what to try; the formats both UIs use."""

import math

from slimscope.core.evaluate.latency import LatencyStats
from slimscope.core.evaluate.per_layer import LayerError
from slimscope.core.evaluate.quality_warnings import (
    ACCURACY_DROP_MAX,
    AGREEMENT_MIN,
    SQNR_MIN_DB,
    decibels_text,
    judge,
    percent_text,
)
from slimscope.core.evaluate.report import LatencyComparison

LAYERS = (
    LayerError("stem", "s", 31.0),
    LayerError("fc", "f", 4.2),
    LayerError("block3", "b", 12.5),
    LayerError("block1", "a", 18.0),
    LayerError("gone", "g", None, "pruned"),
    LayerError("same", "x", math.inf),
)


def test_the_thresholds():
    assert (AGREEMENT_MIN, SQNR_MIN_DB, ACCURACY_DROP_MAX) == (0.95, 20.0, 0.01)
    assert judge(agreement=0.95, sqnr_db=20.0, layers=LAYERS).warnings == ()
    assert judge(agreement=0.949).flagged == {"agreement"}
    assert judge(sqnr_db=19.9).flagged == {"sqnr_db"}
    assert judge(accuracy={"original": 0.9, "optimized": 0.8901}).warnings == ()  # 0.99 points
    assert judge(accuracy={"original": 0.9, "optimized": 0.889}).flagged == {"accuracy"}  # 1.1 points
    assert judge(sizes={"original": 100, "optimized": 100}).warnings == ()
    assert judge(sizes={"original": 100, "optimized": 101}).flagged == {"size_bytes"}
    fast, slow = LatencyStats(1.0, 1.1, 1, 9), LatencyStats(1.06, 1.2, 1, 9)
    assert judge(latency=(LatencyComparison(1, fast, slow),)).flagged == {"latency_ms"}
    assert judge(latency=(LatencyComparison(1, fast, LatencyStats(1.04, 1.1, 1, 9)),)).warnings == ()


def test_one_quality_warning_names_the_worst_layers_and_what_to_try():
    verdict = judge(
        accuracy={"original": 0.9, "optimized": 0.7}, agreement=0.62, sqnr_db=9.14,
        sqnr_on="the logits before Softmax", layers=LAYERS,
    )  # fmt: skip
    [warning] = verdict.warnings
    assert verdict.flagged == {"accuracy", "agreement", "sqnr_db"}
    assert warning.startswith("The optimized model's accuracy is 20.0 points LOWER than the original's")
    assert "top-1 agreement with the original is 62.0% (below 95.0%)" in warning
    assert "SQNR on the logits before Softmax is 9.1 dB (below 20 dB)" in warning
    assert "largest measured error: 'fc' 4.2 dB, 'block3' 12.5 dB, 'block1' 18.0 dB." in warning
    assert "float" in warning and "sensitivity" in warning and "gentler preset" in warning
    assert "\n" not in warning


def test_without_per_layer_errors_the_advice_stays():
    [warning] = judge(agreement=0.5).warnings
    assert "largest measured error" not in warning and "Try keeping" in warning


def test_agreement_and_sqnr_read_the_same_everywhere():
    assert percent_text(0.85) == "85.0%" and percent_text(None) == ""
    assert decibels_text(23.456) == "23.5 dB" and decibels_text(math.inf) == "identical"
    assert decibels_text(-1.72) == "-1.7 dB"
