"""Calibration: activation ranges from onnxruntime's calibrators, cached by content.

Ranges depend on the model, the data and the method only, not on which layers are quantized or to
how many bits, so a one-layer edit re-quantizes with the ranges of the previous run. The cache keys
are content hashes (blake2b of the model's serialized bytes and of the data's bytes), never object
identities, so an equal model loaded twice still hits.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import tempfile
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, create_calibrator
from onnxruntime.quantization.calibrate import TensorsData

from slimscope.core.errors import DatasetError, QuantizationError
from slimscope.core.quantize.ort_options import OP_TYPES_TO_QUANTIZE
from slimscope.core.quantize.prepare import PreparedModel
from slimscope.core.tasks import Progress, Task

# Samples per run when the model's batch dimension is free: fewer runs, bounded memory (histogram
# methods keep every activation of a run until it is binned).
DYNAMIC_BATCH = 8

_PROTOBUF_LIMIT = 2**31 - 2**20  # larger models are saved with their weights in a side file

# Settings of onnxruntime's calibrators. Ranges are kept asymmetric here; symmetric activations are
# made symmetric by the quantizer, so one set of ranges serves every layer setting.
_CALIBRATOR_OPTIONS = {
    CalibrationMethod.MinMax: {"symmetric": False},
    CalibrationMethod.Percentile: {"symmetric": False, "percentile": 99.999, "num_bins": 2048},
    CalibrationMethod.Entropy: {"symmetric": False, "num_bins": 128, "num_quantized_bins": 128},
}


@dataclass(frozen=True)
class CalibrationData:
    """Model-ready feeds, one onnxruntime run each, and a hash of their content."""

    feeds: tuple[dict[str, np.ndarray], ...]
    digest: str
    notes: tuple[str, ...] = ()

    @property
    def input_shapes(self) -> dict[str, tuple[int, ...]]:
        """Shapes of one run's inputs (the first)."""
        return {name: tuple(value.shape) for name, value in self.feeds[0].items()}


def calibration_data(
    model: onnx.ModelProto, calibration: Sequence[dict[str, np.ndarray]] | np.ndarray
) -> CalibrationData:
    """Feeds for `model` from a list of input feeds, or from an array of samples for a one-input model
    (split into runs of the model's fixed batch size, or of `DYNAMIC_BATCH` when it is free)."""
    inputs = _graph_inputs(model)
    if isinstance(calibration, np.ndarray):
        feeds, notes = _split_samples(calibration, inputs)
    else:
        feeds, notes = [_check_feed(dict(feed), inputs) for feed in calibration], []
    if not feeds:
        raise DatasetError("Quantization needs calibration data, and none was given.")
    digest = hashlib.blake2b(digest_size=16)
    for feed in feeds:
        for name in sorted(feed):
            value = feed[name]
            digest.update(f"{name}:{value.dtype.str}:{value.shape};".encode())
            digest.update(value.tobytes())
    return CalibrationData(tuple(feeds), digest.hexdigest(), tuple(notes))


def model_digest(model: onnx.ModelProto) -> str:
    return hashlib.blake2b(model.SerializeToString(), digest_size=16).hexdigest()


@dataclass
class _Entry:
    prepared: PreparedModel  # what the ranges were measured on; they fit this model's tensor names
    source: onnx.ModelProto | None = None  # the model before preparing, to derive pruned copies from
    ranges: dict[CalibrationMethod, TensorsData] = field(default_factory=dict)
    # Precomputed weight scales and zero points of `prepared.model` (see weight_params.py).
    weight_params: dict = field(default_factory=dict)


class CalibrationCache:
    """Calibration ranges by (model hash, data hash, method), for the last `max_entries` model and data
    pairs; each entry also holds the prepared model the ranges were measured on (a copy of the model)."""

    def __init__(self, max_entries: int = 4):
        self.max_entries = max_entries
        self.calibrations = 0  # how many calibrations ran (a repeat run that hits adds none)
        self._entries: OrderedDict[tuple[str, str], _Entry] = OrderedDict()

    def prepared(self, model_hash: str, data_hash: str) -> PreparedModel | None:
        entry = self._entries.get((model_hash, data_hash))
        if entry is None:
            return None
        self._entries.move_to_end((model_hash, data_hash))
        return entry.prepared

    def store_prepared(
        self, model_hash: str, data_hash: str, prepared: PreparedModel, source: onnx.ModelProto | None = None
    ) -> None:
        self._entries[(model_hash, data_hash)] = _Entry(prepared, source)
        self._entries.move_to_end((model_hash, data_hash))
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def derive_prepared(self, model: onnx.ModelProto, layers: list, data_hash: str) -> PreparedModel | None:
        """A prepared model for `model` made from a cached entry whose source differs from `model` only by
        zeroed weights (a pruning edit), newest entry first; None when no entry qualifies."""
        from slimscope.core.quantize.pruned_prepare import prepare_from_base

        for key, entry in reversed(self._entries.items()):
            if key[1] != data_hash or entry.source is None:
                continue
            derived = prepare_from_base(entry.source, entry.prepared, model, layers)
            if derived is not None:
                self._entries.move_to_end(key)  # a base that serves edits stays cached
                return derived
        return None

    def weight_params(self, model_hash: str, data_hash: str) -> dict:
        """The memo of weight scales and zero points for the prepared model of this pair (a fresh,
        unkept one when the pair has no entry)."""
        entry = self._entries.get((model_hash, data_hash))
        return {} if entry is None else entry.weight_params

    def ranges(self, model_hash: str, data_hash: str, method: CalibrationMethod) -> TensorsData | None:
        entry = self._entries.get((model_hash, data_hash))
        return None if entry is None else entry.ranges.get(method)

    def store_ranges(
        self, model_hash: str, data_hash: str, method: CalibrationMethod, ranges: TensorsData
    ) -> None:
        entry = self._entries.get((model_hash, data_hash))
        if entry is not None:  # ranges belong to a prepared model; without it they cannot be reused
            entry.ranges[method] = ranges
        self.calibrations += 1

    def clear(self) -> None:
        self._entries.clear()


def iter_calibrate(
    model: onnx.ModelProto, data: CalibrationData, method: CalibrationMethod
) -> Task[TensorsData]:
    """Run onnxruntime's calibrator for `method` over the feeds, one run per step; return the ranges.

    The calibrator takes a file: the model goes into a private temporary folder (its augmented copy
    and onnxruntime's `-inferred` file land there too), removed also when the generator is closed.
    """
    label = method.name.lower()
    large = model.ByteSize() > _PROTOBUF_LIMIT
    with tempfile.TemporaryDirectory(prefix="slimscope-calibrate-") as folder:
        path = Path(folder) / "model.onnx"
        onnx.save_model(model, path, save_as_external_data=large)
        try:
            calibrator = create_calibrator(
                path,
                list(OP_TYPES_TO_QUANTIZE),
                augmented_model_path=str(Path(folder) / "augmented.onnx"),
                calibrate_method=method,
                use_external_data_format=large,
                extra_options=_CALIBRATOR_OPTIONS[method],
            )
        except Exception as exc:  # its graph augmentation raises ValueError/KeyError on untyped tensors
            text = str(exc).strip()
            first = (text.splitlines()[0][:300] if text else "") or type(exc).__name__
            raise QuantizationError(f"onnxruntime cannot calibrate this model: {first}") from exc
        try:
            for index, feed in enumerate(data.feeds):
                _collect(calibrator, feed)
                yield Progress(
                    (index + 1) / len(data.feeds),
                    f"Calibrating ({label}): run {index + 1} of {len(data.feeds)}",
                )
            with contextlib.redirect_stdout(io.StringIO()):  # the histogram collector prints
                ranges = calibrator.compute_data()
        finally:
            calibrator.infer_session = None  # release the session before its files are removed
    return TensorsData(ranges.calibration_method, dict(ranges.data))


class _OneFeed(CalibrationDataReader):
    def __init__(self, feed: dict[str, np.ndarray]):
        self._feeds = [feed]

    def get_next(self) -> dict | None:
        return self._feeds.pop() if self._feeds else None


def _collect(calibrator, feed: dict[str, np.ndarray]) -> None:
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # the histogram collector prints; keep stdout clean
            calibrator.collect_data(_OneFeed(feed))
    except Exception as exc:  # onnxruntime's run errors are untyped: wrong shape, dtype, value
        first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
        raise DatasetError(f"The calibration data does not fit the model: {first}") from exc


def _graph_inputs(model: onnx.ModelProto) -> dict[str, onnx.ValueInfoProto]:
    inits = {t.name for t in model.graph.initializer}
    return {v.name: v for v in model.graph.input if v.name not in inits}


def _dims(value: onnx.ValueInfoProto, rank: int) -> list[int | None]:
    """The input's dims, None where free; all free (at the data's rank) when the model gives no shape."""
    if not value.type.tensor_type.HasField("shape"):
        return [None] * rank
    # -1 or 0 is how some exporters write a free size (the loader names those; models built in memory
    # may still carry them)
    return [d.dim_value if d.dim_value > 0 else None for d in value.type.tensor_type.shape.dim]


def _numpy_type(value: onnx.ValueInfoProto) -> np.dtype:
    return np.dtype(onnx.helper.tensor_dtype_to_np_dtype(value.type.tensor_type.elem_type))


def _split_samples(
    samples: np.ndarray, inputs: dict[str, onnx.ValueInfoProto]
) -> tuple[list[dict], list[str]]:
    if len(inputs) != 1:
        raise DatasetError(
            f"The model has {len(inputs)} inputs; give calibration data as a list of feeds naming each input."
        )
    name, value = next(iter(inputs.items()))
    dims = _dims(value, samples.ndim)
    if samples.ndim != len(dims) or any(
        d is not None and d != s for d, s in zip(dims[1:], samples.shape[1:], strict=True)
    ):
        shown = "×".join(str(d) if d is not None else "?" for d in dims)
        raise DatasetError(
            f"Calibration samples have shape {'×'.join(map(str, samples.shape))}, but the model's input "
            f"{name!r} takes {shown}."
        )
    samples = _as_input_type(samples, value, name)
    batch = dims[0] if dims and dims[0] else DYNAMIC_BATCH
    usable = len(samples) - len(samples) % batch if dims and dims[0] else len(samples)
    if usable == 0:
        raise DatasetError(f"The model runs {batch} samples at a time, and only {len(samples)} were given.")
    left = len(samples) - usable
    notes = [f"Calibration left out {left} sample{'s' * (left != 1)} that do not fill a batch of {batch}."]
    feeds = [{name: samples[start : start + batch]} for start in range(0, usable, batch)]
    return feeds, notes if usable < len(samples) else []


def _check_feed(feed: dict[str, np.ndarray], inputs: dict[str, onnx.ValueInfoProto]) -> dict[str, np.ndarray]:
    missing, extra = sorted(set(inputs) - set(feed)), sorted(set(feed) - set(inputs))
    if missing or extra:
        problem = f"lacks input {missing[0]!r}" if missing else f"names {extra[0]!r}, which is not an input"
        raise DatasetError(
            f"A calibration feed {problem} (the model's inputs: {', '.join(map(repr, inputs))})."
        )
    return {name: _as_input_type(np.asarray(value), inputs[name], name) for name, value in feed.items()}


def _as_input_type(values: np.ndarray, value: onnx.ValueInfoProto, name: str) -> np.ndarray:
    wanted = _numpy_type(value)
    if values.dtype == wanted:
        return np.ascontiguousarray(values)
    if wanted.kind == "f" and values.dtype.kind in "fiu":  # float64 or integer images into a float input
        return np.ascontiguousarray(values, dtype=wanted)
    raise DatasetError(
        f"Calibration data for input {name!r} is {values.dtype}, but the model takes {wanted}."
    )
