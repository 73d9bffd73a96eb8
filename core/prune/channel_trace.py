"""The channel tracer's bookkeeping: which tensor carries which layer's output channels, and where.

Every layer whose output channels may be removed opens a channel *space* (its channels 0..C-1). A
tensor's `ChannelLayout` says, along its channel axis, which span of which space each position holds:
one segment after a Conv, several after a Concat, and untracked spans (space None) for channels nobody
may remove (a graph input concatenated in). An op that combines two activations element by element
couples their spaces — position i of one is position i of the other — so a union-find joins them
into one group that must drop the same indices. Everything that must shrink when a space loses
channels is a `ChannelCut` on one constant input of one node.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import numpy_helper


@dataclass(frozen=True)
class Segment:
    """A run of consecutive channels of one space, as they sit along a tensor's channel axis."""

    space: int | None  # None: channels that stay (from a graph input or an op the tracer stops at)
    start: int  # the space's channel at the segment's first position
    length: int


@dataclass(frozen=True)
class ChannelLayout:
    """What a tensor's channel axis holds."""

    # Counted from the end (-3 for NCHW), because elementwise broadcasting aligns axes from the end.
    axis: int
    segments: tuple[Segment, ...]
    block: int = 1  # consecutive elements per channel along the axis: H*W after Flatten of [N,C,H,W]

    @property
    def channels(self) -> int:
        return sum(segment.length for segment in self.segments)

    @property
    def size(self) -> int:
        """Elements along the axis."""
        return self.channels * self.block

    def spaces(self) -> list[int]:
        return list(dict.fromkeys(s.space for s in self.segments if s.space is not None))

    def positioned(self) -> Iterable[tuple[int, Segment]]:
        """(position of the segment's first channel on the axis, segment)."""
        position = 0
        for segment in self.segments:
            yield position, segment
            position += segment.length

    def labels(self) -> list[tuple[int | None, int]]:
        """(space, channel of that space) at every channel position."""
        return [(s.space, s.start + i) for s in self.segments for i in range(s.length)]


def layout_from_labels(labels: list[tuple[int | None, int]], axis: int, block: int) -> ChannelLayout:
    """The inverse of `ChannelLayout.labels`: consecutive channels of one space become one segment."""
    segments: list[Segment] = []
    for space, channel in labels:
        last = segments[-1] if segments else None
        if last is not None and last.space == space and last.start + last.length == channel:
            segments[-1] = Segment(space, last.start, last.length + 1)
        else:
            segments.append(Segment(space, channel, 1))
    return ChannelLayout(axis, tuple(segments), block)


@dataclass(frozen=True)
class ChannelCut:
    """Removing channel c of a group (start <= c < start + length) removes, from the constant `tensor`
    that node `node` reads at input `slot`, the `block` positions from offset + (c - start) * block
    along `axis`."""

    node: int
    slot: int
    tensor: str
    axis: int
    offset: int
    start: int
    length: int
    block: int = 1


class ChannelRefusal(Exception):
    """An op the tracer cannot follow for these channels; `why` completes "<Op> '<name>' ..."."""

    def __init__(self, why: str):
        super().__init__(why)
        self.why = why


@dataclass
class SpaceRecord:
    """Everything found out about one space while tracing; spaces coupled later merge into a group."""

    channels: int
    producers: list[str] = field(default_factory=list)  # layers whose outputs are these channels
    consumers: list[str] = field(default_factory=list)  # layers whose inputs shrink
    cuts: list[ChannelCut] = field(default_factory=list)
    weight_cuts: list[tuple[str, ChannelCut]] = field(default_factory=list)  # (producer, its weight's cut)
    tensors: set[str] = field(default_factory=set)  # values whose channel count changes
    reshapes: set[int] = field(default_factory=set)  # Reshape nodes whose [N, F] target becomes [0, -1]
    reason: str | None = None  # why these channels must stay


class ChannelTrace:
    """The state of one tracing run over a graph in node order."""

    def __init__(self, model: onnx.ModelProto, shapes: dict[str, tuple]):
        self.graph = model.graph
        self.shapes = shapes
        self.weights = {t.name: t for t in model.graph.initializer}
        self._constant_nodes = {
            node.output[0]: node for node in model.graph.node if node.op_type == "Constant" and node.output
        }
        self.producer_of = {out: i for i, node in enumerate(model.graph.node) for out in node.output if out}
        self.users: dict[str, list[tuple[int, int]]] = {}
        for index, node in enumerate(model.graph.node):
            for slot, name in enumerate(node.input):
                if name:
                    self.users.setdefault(name, []).append((index, slot))
        self.layouts: dict[str, ChannelLayout] = {}
        self.records: list[SpaceRecord] = []
        self._parent: list[int] = []

    # --- spaces and their coupling -----------------------------------------------------------------

    def new_space(self, channels: int, producer: str) -> int:
        self.records.append(SpaceRecord(channels, [producer]))
        self._parent.append(len(self._parent))
        return len(self.records) - 1

    def root(self, space: int) -> int:
        while self._parent[space] != space:
            self._parent[space] = self._parent[self._parent[space]]  # path halving
            space = self._parent[space]
        return space

    def couple(self, a: int, b: int) -> None:
        """The two spaces must drop the same channel indices from now on."""
        root_a, root_b = self.root(a), self.root(b)
        if root_a != root_b:
            self._parent[max(root_a, root_b)] = min(root_a, root_b)

    def refuse(self, spaces: Iterable[int], reason: str) -> None:
        for space in spaces:
            if self.records[space].reason is None:
                self.records[space].reason = reason

    # --- what a tensor holds ----------------------------------------------------------------------

    def set_layout(self, tensor: str, layout: ChannelLayout) -> None:
        if not tensor:
            return
        self.layouts[tensor] = layout
        for space in layout.spaces():
            self.records[space].tensors.add(tensor)

    def add_cuts(self, layout: ChannelLayout, node: int, slot: int, axis: int, producer: str | None = None):
        """Every tracked segment of `layout` cuts input `slot` of `node` along `axis` of that constant."""
        tensor = self.graph.node[node].input[slot]
        for position, segment in layout.positioned():
            if segment.space is None:
                continue
            cut = ChannelCut(node, slot, tensor, axis, position * layout.block, segment.start, segment.length,
                             layout.block)  # fmt: skip
            record = self.records[segment.space]
            record.cuts.append(cut)
            if producer is not None:
                record.weight_cuts.append((producer, cut))
                if producer not in record.producers:
                    record.producers.append(producer)

    def add_consumer(self, layout: ChannelLayout, layer: str) -> None:
        for space in layout.spaces():
            if layer not in self.records[space].consumers:
                self.records[space].consumers.append(layer)

    # --- what the graph says ------------------------------------------------------------------------

    def dims(self, tensor: str) -> tuple | None:
        return self.shapes.get(tensor)

    def channel_index(self, tensor: str, layout: ChannelLayout) -> int:
        """The channel axis of `tensor` counted from the front; refuses when the rank is unknown."""
        dims = self.dims(tensor)
        if dims is None:
            raise ChannelRefusal("has an input of unknown rank")
        return len(dims) + layout.axis

    def is_weight(self, name: str) -> bool:
        return name in self.weights

    def constant(self, name: str) -> np.ndarray | None:
        """The value of an initializer or Constant node output (small shape-like inputs), else None."""
        if name in self.weights:
            return numpy_helper.to_array(self.weights[name])
        node = self._constant_nodes.get(name)
        if node is not None:
            for attribute in node.attribute:
                if attribute.name == "value":
                    return numpy_helper.to_array(attribute.t)
        return None

    def weight_dims(self, name: str) -> tuple[int, ...]:
        return tuple(self.weights[name].dims)

    def spatial_size(self, tensor: str) -> int | None:
        """Elements per channel of an [N, C, ...] tensor, when its shape is known."""
        dims = self.dims(tensor)
        if dims is None or len(dims) < 2 or any(not isinstance(d, int) for d in dims[2:]):
            return None
        return math.prod(dims[2:])


def node_label(node: onnx.NodeProto) -> str:
    """How messages name a node: its name, else its first output."""
    return node.name or (node.output[0] if node.output else node.op_type)


def attribute(node: onnx.NodeProto, name: str, default=None):
    for attr in node.attribute:
        if attr.name == name:
            return onnx.helper.get_attribute_value(attr)
    return default


def optional_input(node: onnx.NodeProto, slot: int) -> str | None:
    return node.input[slot] if slot < len(node.input) and node.input[slot] else None
