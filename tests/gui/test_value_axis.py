"""The bar charts' value axis writes large counts with SI prefixes ("2 M"), not "2e+06"."""

from slimscope.gui.panels.layer_bar_chart import LayerBarChart


def test_large_values_get_one_si_prefix_per_axis(qtbot):
    chart = LayerBarChart("parameters per layer")
    qtbot.addWidget(chart)
    axis = chart.getAxis("bottom")
    assert axis is chart.value_axis
    assert axis.tickStrings([0.0, 1e6, 2e6, 2.5e6], 1.0, 5e5) == ["0", "1 M", "2 M", "2.5 M"]
    assert axis.tickStrings([0.0, 5e5, 1e6], 1.0, 5e5) == ["0", "0.5 M", "1 M"]
    assert axis.tickStrings([0.0, 50e3, 100e3], 1.0, 5e4) == ["0", "50 k", "100 k"]
    assert axis.tickStrings([0.0, 20.0, 40.0], 1.0, 20.0) == ["0", "20", "40"]  # dB: as they are
    chart.set_bars(["a", "b"], [1e6, 3.2e9], [chart.palette().text().color()] * 2, ["a", "b"])
    assert "x1e" not in axis.labelString()  # the prefix is on the ticks, not a scale in the label
