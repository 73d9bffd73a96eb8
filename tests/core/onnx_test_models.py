"""ONNX models and helpers for the OnnxModule tests: tiny float graphs a few ops each, a hand-built QDQ
graph with the quantized forms the demo lacks, and small conveniences (run, compare, export)."""

from __future__ import annotations

import functools
import io
import warnings
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper

from slimscope.core.train.onnx_module import OnnxModule

DEMO = Path(__file__).resolve().parents[2] / "resources" / "demo"
RNG = np.random.default_rng(0)


@functools.cache
def digits() -> tuple[np.ndarray, np.ndarray]:
    """256 test samples of the demo and their labels."""
    data = np.load(DEMO / "digits_test.npz")
    return data["x"][:256].astype(np.float32), data["y"][:256].astype(np.int64)


def init(name: str, value, dtype=np.float32) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(value, dtype=dtype), name)


def weights(name: str, *shape: int, scale: float = 0.5) -> onnx.TensorProto:
    return init(name, RNG.standard_normal(shape) * scale)


def graph_model(nodes, initializers, input_shape, opset=13, output_shape=None) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes,
        "test",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", *input_shape])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, output_shape)],
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=8)
    return model


def node(op: str, inputs: list[str], outputs: list[str], **attrs) -> onnx.NodeProto:
    return helper.make_node(op, inputs, outputs, name=f"{op}_{outputs[0]}", **attrs)


# --- tiny float models, a few ops each ---------------------------------------------------------------


def conv_pool_model() -> tuple[onnx.ModelProto, tuple[int, ...]]:
    nodes = [
        node("Conv", ["x", "w1", "b1"], ["c1"], pads=[0, 1, 1, 0], dilations=[2, 2]),
        node("BatchNormalization", ["c1", "g", "beta", "mean", "var"], ["n1"], epsilon=1e-3),
        node("Relu", ["n1"], ["r1"]),
        node("Conv", ["r1", "w2"], ["c2"], auto_pad="SAME_UPPER", strides=[2, 2], group=2),
        node("Conv", ["r1", "w3"], ["c3"], auto_pad="SAME_LOWER", strides=[2, 2]),
        node("Add", ["c2", "c3"], ["a"]),
        node("MaxPool", ["a"], ["m"], kernel_shape=[2, 2], strides=[2, 2], ceil_mode=1),
        node("AveragePool", ["a"], ["p1"], kernel_shape=[2, 2], pads=[0, 0, 1, 1], strides=[2, 2]),
        node(
            "AveragePool",
            ["a"],
            ["p2"],
            kernel_shape=[3, 3],
            pads=[1, 1, 1, 1],
            strides=[2, 2],
            count_include_pad=1,
        ),
        node("Concat", ["m", "p1", "p2"], ["cat"], axis=1),
        node("GlobalAveragePool", ["cat"], ["gap"]),
        node("GlobalMaxPool", ["cat"], ["gmp"]),
        node("Sub", ["gap", "gmp"], ["d"]),
        node("Flatten", ["d"], ["f"], axis=1),
        node("Gemm", ["f", "fc_w", "fc_b"], ["y"], transB=1, alpha=0.5, beta=2.0),
    ]
    inits = [
        weights("w1", 4, 3, 3, 3), weights("b1", 4), weights("g", 4), weights("beta", 4),
        weights("mean", 4), init("var", RNG.uniform(0.5, 2.0, 4)),
        weights("w2", 4, 2, 4, 4), weights("w3", 4, 4, 2, 2), weights("fc_w", 5, 12), weights("fc_b", 5),
    ]  # fmt: skip
    return graph_model(nodes, inits, (3, 12, 12)), (3, 12, 12)


def shape_ops_model() -> tuple[onnx.ModelProto, tuple[int, ...]]:
    """Shape arithmetic that must follow the running batch size."""
    nodes = [
        node("Shape", ["x"], ["s"]),
        node("Gather", ["s", "zero"], ["batch"], axis=0),
        node("Unsqueeze", ["batch", "axes0"], ["batch1"]),
        node("Concat", ["batch1", "minus_one"], ["target"], axis=0),
        node("Transpose", ["x"], ["t"], perm=[0, 2, 3, 1]),
        node("Split", ["t", "split"], ["s1", "s2"], axis=3),
        node("Slice", ["s1", "starts", "ends", "slice_axes", "steps"], ["sl"]),
        node("ReduceMean", ["s2"], ["rm"], axes=[1], keepdims=1),
        node("ReduceSum", ["sl", "axes2"], ["rs"], keepdims=1),
        node("ReduceMax", ["sl"], ["rx"], axes=[3], keepdims=1),
        node("Squeeze", ["rm", "axes1"], ["sq"]),
        node("Reshape", ["sq", "zero_minus_one"], ["rsh"]),
        node("Expand", ["rx", "expand_to"], ["ex"]),
        node("Less", ["ex", "half"], ["lt"]),
        node("Where", ["lt", "ex", "rs"], ["w"]),
        node("Cast", ["lt"], ["lt_f"], to=TensorProto.FLOAT),
        node("Max", ["w", "lt_f", "rs"], ["mx"]),
        node("Mean", ["mx", "rs"], ["mn"]),
        node("Reshape", ["mn", "target"], ["flat"]),
        node("Shape", ["flat"], ["fs"], start=1),
        node(
            "ConstantOfShape", ["fs"], ["ones"], value=helper.make_tensor("v", TensorProto.FLOAT, [1], [0.5])
        ),
        node("Mul", ["flat", "ones"], ["scaled"]),
        node("Concat", ["scaled", "rsh"], ["y"], axis=1),
    ]
    inits = [
        init("zero", 0, np.int64), init("axes0", [0], np.int64), init("minus_one", [-1], np.int64),
        init("split", [1, 2], np.int64), init("starts", [5, 0], np.int64), init("ends", [0, 100], np.int64),
        init("slice_axes", [1, 2], np.int64), init("steps", [-2, 2], np.int64), init("axes2", [3], np.int64),
        init("axes1", [1], np.int64), init("zero_minus_one", [0, -1], np.int64),
        init("expand_to", [1, 1, 1, 3], np.int64), init("half", 0.5),
    ]  # fmt: skip
    return graph_model(nodes, inits, (3, 6, 6), opset=15), (3, 6, 6)


def activations_model() -> tuple[onnx.ModelProto, tuple[int, ...]]:
    nodes = [
        node("Clip", ["x", "lo", "hi"], ["c"]),
        node("HardSwish", ["c"], ["hs"]),
        node("HardSigmoid", ["x"], ["hg"], alpha=0.3, beta=0.4),
        node("LeakyRelu", ["x"], ["lr"], alpha=0.2),
        node("PRelu", ["x", "slope"], ["pr"]),
        node("Sigmoid", ["hs"], ["sg"]),
        node("Tanh", ["hg"], ["th"]),
        node("Erf", ["lr"], ["er"]),
        node("Abs", ["pr"], ["ab"]),
        node("Sqrt", ["ab"], ["sq"]),
        node("Exp", ["sg"], ["ex"]),
        node("Log", ["ex"], ["lg"]),
        node("Pow", ["th", "two"], ["pw"]),
        node("Neg", ["pw"], ["ng"]),
        node("Div", ["er", "ex"], ["dv"]),
        node("Sum", ["sq", "lg", "ng", "dv"], ["sm"]),
        node("Identity", ["sm"], ["id"]),
        node("Dropout", ["id"], ["dr"]),
        node("InstanceNormalization", ["dr", "in_s", "in_b"], ["inn"]),
        node("LayerNormalization", ["inn", "ln_s", "ln_b"], ["ln"], axis=-1),
        node("MatMul", ["ln", "mm_w"], ["mm"]),
        node("Add", ["mm", "mm_b"], ["mmb"]),
        node("Einsum", ["mmb", "ein"], ["es"], equation="nchw,wk->nchk"),
        node("Min", ["es", "cap"], ["mi"]),
        node("Softmax", ["mi"], ["smx"], axis=1),
        node("LogSoftmax", ["mi"], ["lsm"], axis=-1),
        node("Add", ["smx", "lsm"], ["y"]),
    ]
    inits = [
        init("lo", -1.0), init("hi", 2.0), init("slope", RNG.uniform(0, 0.5, (2, 1, 1))), init("two", 2.0),
        weights("in_s", 2), weights("in_b", 2), weights("ln_s", 5), weights("ln_b", 5),
        weights("mm_w", 5, 4), weights("mm_b", 4), weights("ein", 4, 3), init("cap", 1.5),
    ]  # fmt: skip
    return graph_model(nodes, inits, (2, 4, 5), opset=17), (2, 4, 5)


def resize_pad_model() -> tuple[onnx.ModelProto, tuple[int, ...]]:
    nodes = [
        node(
            "Resize",
            ["x", "", "scales2"],
            ["r1"],
            mode="nearest",
            coordinate_transformation_mode="asymmetric",
            nearest_mode="floor",
        ),
        node("Resize", ["x", "", "", "sizes"], ["r2"], mode="linear", axes=[2, 3]),
        node(
            "Resize",
            ["x", "", "", "sizes"],
            ["r3"],
            mode="linear",
            coordinate_transformation_mode="align_corners",
            axes=[2, 3],
        ),
        node("Resize", ["x", "", "", "sizes"], ["r4"], mode="nearest", axes=[2, 3]),
        node("Add", ["r2", "r3"], ["r23"]),
        node("Sub", ["r23", "r4"], ["r234"]),
        node("Pad", ["r1", "pads_reflect"], ["p1"], mode="reflect"),
        node("Pad", ["r234", "pads_edge"], ["p2"], mode="edge"),
        node("Pad", ["p2", "pads_const", "pad_value"], ["p3"], mode="constant"),
        node("Concat", ["p1", "p3"], ["cat"], axis=1),
        node("DepthToSpace", ["cat"], ["d2s"], blocksize=2, mode="DCR"),
        node("SpaceToDepth", ["d2s"], ["s2d"], blocksize=2),
        node("DepthToSpace", ["s2d"], ["crd"], blocksize=2, mode="CRD"),
        node(
            "ConvTranspose",
            ["crd", "wt", "bt"],
            ["ct"],
            strides=[2, 2],
            pads=[1, 0, 1, 2],
            output_padding=[1, 1],
        ),
        node(
            "ConvTranspose", ["crd", "wt"], ["ct2"], strides=[2, 2], pads=[1, 1, 1, 1], output_padding=[1, 1]
        ),
        node("Sub", ["ct", "ct2"], ["y"]),
    ]
    inits = [
        init("scales2", [1, 1, 2, 2]), init("sizes", [8, 8], np.int64),
        init("pads_reflect", [0, 0, 1, 2, 0, 0, 2, 1], np.int64), init("pads_edge", [0, 0, 2, 1, 0, 0, 1, 2], np.int64),
        init("pads_const", [0, 0, 1, 1, 0, 0, 1, 1], np.int64), init("pad_value", 0.25),
        weights("wt", 1, 3, 3, 3), weights("bt", 3),
    ]  # fmt: skip
    return graph_model(nodes, inits, (2, 5, 5), opset=18), (2, 5, 5)


def opset18_model() -> tuple[onnx.ModelProto, tuple[int, ...]]:
    nodes = [
        node("Conv", ["x", "w"], ["c"], pads=[1, 1], strides=[2]),  # 1-D
        node("Gelu", ["c"], ["g"]),
        node("ReduceMean", ["g", "axes"], ["rm"], keepdims=1),
        node("Split", ["g"], ["s1", "s2", "s3"], axis=2, num_outputs=3),
        node("Concat", ["s3", "s1", "s2", "rm"], ["cat"], axis=2),
        node("Clip", ["cat", "", "hi"], ["cl"]),
        node("Greater", ["cl", "zero"], ["gt"]),
        node("Equal", ["cl", "zero"], ["eq"]),
        node("Cast", ["gt"], ["gt_f"], to=TensorProto.FLOAT),
        node("Cast", ["eq"], ["eq_f"], to=TensorProto.FLOAT),
        node("Add", ["gt_f", "eq_f"], ["ge"]),
        node("Mul", ["ge", "cl"], ["y"]),
    ]
    inits = [weights("w", 4, 3, 3), init("axes", [2], np.int64), init("hi", 0.7), init("zero", 0.0)]
    return graph_model(nodes, inits, (3, 13), opset=20), (3, 13)


def old_opset_model() -> tuple[onnx.ModelProto, tuple[int, ...]]:
    """Opset 9 forms: attributes where newer opsets take inputs, Upsample, 2-D Softmax."""
    nodes = [
        node("Clip", ["x"], ["c"], min=-0.5, max=0.8),
        node("Upsample", ["c", "scales"], ["u"], mode="nearest"),
        node("Pad", ["u"], ["p"], pads=[0, 0, 1, 0, 0, 0, 0, 1], mode="constant", value=0.3),
        node("Slice", ["p"], ["s"], starts=[1, 0], ends=[100, -1], axes=[2, 3]),
        node("ReduceMean", ["s"], ["r"], axes=[3], keepdims=1),
        node("Squeeze", ["r"], ["q"], axes=[3]),
        node("Unsqueeze", ["q"], ["uq"], axes=[1]),
        node("Softmax", ["uq"], ["y"], axis=2),
    ]
    return graph_model(nodes, [init("scales", [1, 1, 2, 2])], (2, 3, 4), opset=9), (2, 3, 4)


def misc_ops_model() -> tuple[onnx.ModelProto, tuple[int, ...]]:
    """Rounding, logic, index and range ops, and a Gemm with a transposed data operand."""
    nodes = [
        node("Floor", ["x"], ["fl"]),
        node("Ceil", ["x"], ["ce"]),
        node("Sign", ["x"], ["sg"]),
        node("Elu", ["x"], ["el"], alpha=0.7),
        node("Softplus", ["x"], ["sp"]),
        node("Abs", ["x"], ["ab"]),
        node("Add", ["ab", "one"], ["ab1"]),
        node("Reciprocal", ["ab1"], ["rc"]),
        node("Sum", ["fl", "ce", "sg", "el", "sp", "rc"], ["s1"]),
        node("Tile", ["s1", "reps"], ["tl"]),
        node("ArgMax", ["tl"], ["am"], axis=2, keepdims=1),
        node("CastLike", ["am", "x"], ["amf"]),
        node("ReduceMin", ["tl", "axis2"], ["rmn"], keepdims=1),
        node("LessOrEqual", ["tl", "rmn"], ["le"]),
        node("GreaterOrEqual", ["tl", "zero"], ["ge"]),
        node("And", ["le", "ge"], ["nd"]),
        node("Not", ["ge"], ["ng"]),
        node("Or", ["nd", "ng"], ["o"]),
        node("Cast", ["o"], ["bo"], to=TensorProto.FLOAT),
        node("Gather", ["tl", "idx"], ["g"], axis=1),
        node("Shape", ["x"], ["sh"]),
        node("Gather", ["sh", "two"], ["last"]),
        node("Range", ["zero_i", "last", "one_i"], ["rg"]),
        node("Cast", ["rg"], ["rgf"], to=TensorProto.FLOAT),
        node("Size", ["x"], ["sz"]),
        node("Cast", ["sz"], ["szf"], to=TensorProto.FLOAT),
        node("Flatten", ["g"], ["f"]),
        node("Transpose", ["f"], ["ft"]),
        node("Gemm", ["ft", "gw", "gb"], ["gm"], transA=1, alpha=1.5, beta=0.5),
        node("Add", ["gm", "rgf"], ["o1"]),
        node("Div", ["o1", "szf"], ["o2"]),
        node("Flatten", ["bo"], ["f1"]),
        node("Flatten", ["amf"], ["f2"]),
        node("Flatten", ["rmn"], ["f3"]),
        node("Constant", [], ["half"], value_float=0.5),
        node("Mul", ["o2", "half"], ["o3"]),
        node("ArgMin", ["tl"], ["amn"], axis=1, keepdims=0),
        node("Cast", ["amn"], ["f4"], to=TensorProto.FLOAT),
        node("Concat", ["o3", "f1", "f2", "f3", "f4"], ["y"], axis=1),
    ]
    inits = [
        init("one", 1.0), init("reps", [1, 1, 2], np.int64), init("axis2", [2], np.int64), init("zero", 0.0),
        init("idx", [-1, 0], np.int64), init("two", 2, np.int64), init("zero_i", 0, np.int64),
        init("one_i", 1, np.int64), weights("gw", 16, 4), weights("gb", 4),
    ]  # fmt: skip
    return graph_model(nodes, inits, (3, 4), opset=18), (3, 4)


TINY_MODELS = [
    conv_pool_model,
    shape_ops_model,
    activations_model,
    resize_pad_model,
    opset18_model,
    old_opset_model,
    misc_ops_model,
]


def hand_qdq_model() -> onnx.ModelProto:
    """The QDQ forms onnxruntime's quantizer can write beyond the demo's: a per-tensor int8 weight, a 3-bit
    weight in int8 codes, an asymmetric uint8 per-channel weight, per-channel activation quantization, a
    QuantizeLinear read through a Reshape, a float Gemm bias, and int16 activations."""
    rng = np.random.default_rng(5)
    w = rng.integers(-127, 128, (4, 3, 3, 3))
    w[0, 0, 0, 0] = 127
    w4 = rng.integers(-3, 4, (4, 3, 1, 1))
    w4[:, 0, 0, 0] = 3
    s_in, s_w = np.float32(0.02), np.float32(0.01)
    inits = [
        init("s_in", s_in), init("zp_in", 128, np.uint8), init("w", w, np.int8), init("s_w", s_w),
        init("zp_w", 0, np.int8), init("b", rng.integers(-500, 500, 4), np.int32), init("s_b", s_in * s_w),
        init("zp_b", 0, np.int32), init("w4", w4, np.int8), init("s_w4", rng.uniform(0.05, 0.1, 4)),
        init("zp_w4", np.zeros(4), np.int8), init("s_c4", rng.uniform(0.02, 0.05, 4)),
        init("zp_c4", [100, 120, 128, 90], np.uint8), init("s_r", 0.04), init("zp_r", 128, np.uint8),
        init("shape", [0, -1], np.int64), init("w2", rng.integers(0, 256, (5, 144)), np.uint8),
        init("s_w2", rng.uniform(0.001, 0.002, 5)), init("zp_w2", rng.integers(100, 150, 5), np.uint8),
        init("c_bias", rng.standard_normal(5)), init("s_g", 0.001), init("zp_g", 0, np.int16),
    ]  # fmt: skip
    nodes = [
        node("QuantizeLinear", ["x", "s_in", "zp_in"], ["xq"]),
        node("DequantizeLinear", ["xq", "s_in", "zp_in"], ["a"]),
        node("DequantizeLinear", ["w", "s_w", "zp_w"], ["wf"]),
        node("DequantizeLinear", ["b", "s_b", "zp_b"], ["bf"]),
        node("Conv", ["a", "wf", "bf"], ["c1"], pads=[1, 1, 1, 1]),
        node("DequantizeLinear", ["w4", "s_w4", "zp_w4"], ["w4f"], axis=0),
        node("Conv", ["a", "w4f"], ["c2"]),
        node("Add", ["c1", "c2"], ["c"]),
        node("QuantizeLinear", ["c", "s_c4", "zp_c4"], ["cq"], axis=1),
        node("DequantizeLinear", ["cq", "s_c4", "zp_c4"], ["cd"], axis=1),
        node("QuantizeLinear", ["cd", "s_r", "zp_r"], ["rq"]),
        node("Reshape", ["rq", "shape"], ["rq2"]),
        node("DequantizeLinear", ["rq2", "s_r", "zp_r"], ["r"]),
        node("DequantizeLinear", ["w2", "s_w2", "zp_w2"], ["w2f"], axis=0),
        node("Gemm", ["r", "w2f", "c_bias"], ["g"], transB=1),
        node("QuantizeLinear", ["g", "s_g", "zp_g"], ["gq"]),
        node("DequantizeLinear", ["gq", "s_g", "zp_g"], ["y"]),
    ]
    model = graph_model(nodes, inits, (3, 6, 6), opset=21, output_shape=["N", 5])
    model.ir_version = 10
    return model


def run_unoptimized(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    """onnxruntime evaluating the QDQ graph as written (no fusion into integer kernels)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})[0]


def output_step(model: onnx.ModelProto) -> float:
    """The quantization step of the model's output (the scale of its last DequantizeLinear)."""
    last = next(n for n in model.graph.node if n.output[0] == model.graph.output[0].name)
    assert last.op_type == "DequantizeLinear"
    return float(next(numpy_helper.to_array(t) for t in model.graph.initializer if t.name == last.input[1]))


def arrays(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}


def forward(module: OnnxModule, x: np.ndarray) -> np.ndarray:
    module.eval()
    with torch.no_grad():
        return module(torch.from_numpy(x)).numpy()


def export(net: torch.nn.Module, size: int, **options) -> onnx.ModelProto:
    buffer = io.BytesIO()
    # The TorchScript exporter is chosen on purpose; its warnings are not under test.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net.eval(), (torch.randn(1, 3, size, size),), buffer, dynamo=False, opset_version=17,
                          input_names=["input"], output_names=["logits"], dynamic_axes={"input": {0: "n"}},
                          **options)  # fmt: skip
    return onnx.load_from_string(buffer.getvalue())
