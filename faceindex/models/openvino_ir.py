"""Reading an OpenVINO IR (v10/v11 `.xml` + `.bin`) in numpy, without the openvino package: `read_ir`.

The xml is the graph (layers, typed ports with static shapes, edges), the bin holds the Const blobs at (offset,
size). `read_ir` parses and checks both into an `IrModel` whose layers are in topological order; any defect is a
one-line ModelError. `openvino.py` runs the model (its numpy reference) and lowers it to ONNX.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import ModelError

SUPPORTED_OPS = frozenset({"Parameter", "Const", "Convert", "Convolution", "GroupConvolution", "Add", "Multiply",
                           "AvgPool", "PReLU", "Sigmoid", "Result"})
DTYPES = {"f16": np.float16, "f32": np.float32, "f64": np.float64, "i64": np.int64, "i32": np.int32,
           "i16": np.int16, "i8": np.int8, "u8": np.uint8, "u16": np.uint16, "u32": np.uint32, "u64": np.uint64,
           "boolean": np.bool_}

Key = tuple[int, int]  # (layer id, output port): one tensor of the graph


@dataclass(frozen=True)
class IrLayer:
    """One layer of the IR: its inputs (by input port order) and output ports with their static shapes."""

    id: int
    name: str
    type: str
    attrs: dict[str, str]
    inputs: tuple[Key, ...]
    outputs: dict[int, tuple[int, ...]]
    value: np.ndarray | None = field(default=None, repr=False)  # a Const's blob, in its stored type

    def ints(self, attr: str) -> list[int]:
        """A comma-separated integer attribute ("1, 1")."""
        return _ints(self.attrs[attr])


@dataclass
class IrModel:
    """A parsed IR: layers in topological order (every layer after the layers it reads)."""

    name: str
    version: int
    layers: list[IrLayer]
    source: str = ""

    @property
    def ops(self) -> Counter:
        """Layer count per op type."""
        return Counter(layer.type for layer in self.layers)

    @property
    def parameters(self) -> list[IrLayer]:
        return [layer for layer in self.layers if layer.type == "Parameter"]

    @property
    def results(self) -> list[IrLayer]:
        return [layer for layer in self.layers if layer.type == "Result"]

    def shape(self, key: Key) -> tuple[int, ...]:
        """The static shape the xml gives for a tensor (batch as in the file)."""
        return self._by_id()[key[0]].outputs[key[1]]

    def _by_id(self) -> dict[int, IrLayer]:
        cache = self.__dict__.get("_ids")
        if cache is None:
            cache = self.__dict__["_ids"] = {layer.id: layer for layer in self.layers}
        return cache


def _ints(text: str) -> list[int]:
    text = text.strip()
    return [int(v) for v in text.split(",")] if text else []


def read_ir(xml_path: str | Path, bin_path: str | Path | None = None) -> IrModel:
    """Parse an OpenVINO IR into an IrModel; any defect (malformed xml, a truncated or foreign .bin, an unknown op,
    a dangling edge, a cycle) is a one-line ModelError."""
    xml_path = Path(xml_path)
    bin_path = Path(bin_path) if bin_path is not None else xml_path.with_suffix(".bin")
    try:
        root = ET.parse(xml_path).getroot()
    except ET.ParseError as e:
        raise ModelError(f"{xml_path}: malformed OpenVINO IR xml ({e})") from e
    except OSError as e:
        raise ModelError(f"cannot read {xml_path}: {e}") from e
    try:
        blob = bin_path.read_bytes()
    except OSError as e:
        raise ModelError(f"cannot read {bin_path}: {e}") from e
    try:
        return _parse(root, blob, xml_path, bin_path)
    except ModelError:
        raise
    except (KeyError, ValueError, TypeError, AttributeError) as e:  # a missing or unreadable attribute
        raise ModelError(f"{xml_path}: not a readable OpenVINO IR ({type(e).__name__}: {e})") from e


def _parse(root: ET.Element, blob: bytes, xml_path: Path, bin_path: Path) -> IrModel:
    if root.tag != "net" or root.find("layers") is None or root.find("edges") is None:
        raise ModelError(f"{xml_path}: not an OpenVINO IR (root <{root.tag}> without <layers> and <edges>)")
    version = int(root.get("version", "0"))
    if version not in (10, 11):
        raise ModelError(f"{xml_path}: OpenVINO IR version {version} is not supported (10 or 11)")
    raw: dict[int, tuple[ET.Element, dict[int, tuple[int, ...]], list[int]]] = {}
    used_end = 0
    values: dict[int, np.ndarray] = {}
    for el in root.find("layers"):  # type: ignore[union-attr]
        lid, kind = int(el.get("id")), el.get("type", "")  # type: ignore[arg-type]
        if kind not in SUPPORTED_OPS:
            raise ModelError(f"{xml_path}: unsupported OpenVINO op {kind!r} (layer {el.get('name')!r}); "
                             f"supported: {', '.join(sorted(SUPPORTED_OPS))}")
        if lid in raw:
            raise ModelError(f"{xml_path}: two layers with id {lid}")
        outs = {int(p.get("id")): tuple(int(d.text) for d in p.findall("dim"))  # type: ignore[arg-type]
                for p in (el.find("output") if el.find("output") is not None else [])}
        in_ports = [int(p.get("id")) for p in (el.find("input") if el.find("input") is not None else [])]
        raw[lid] = (el, outs, in_ports)
        if kind == "Const":
            values[lid], end = _const(el, blob, xml_path, bin_path)
            used_end = max(used_end, end)
    if used_end != len(blob):
        raise ModelError(f"{bin_path}: {len(blob)} bytes, but the graph's constants end at byte {used_end}: "
                         f"a .bin of another model")

    inputs: dict[int, dict[int, Key]] = {lid: {} for lid in raw}
    for e in root.find("edges"):  # type: ignore[union-attr]
        src, sport = int(e.get("from-layer")), int(e.get("from-port"))  # type: ignore[arg-type]
        dst, dport = int(e.get("to-layer")), int(e.get("to-port"))  # type: ignore[arg-type]
        if src not in raw or sport not in raw[src][1] or dst not in raw or dport not in raw[dst][2]:
            raise ModelError(f"{xml_path}: edge {src}:{sport} -> {dst}:{dport} names a missing layer or port")
        if dport in inputs[dst]:
            raise ModelError(f"{xml_path}: layer {dst} port {dport} has two inputs")
        inputs[dst][dport] = (src, sport)

    layers: dict[int, IrLayer] = {}
    for lid, (el, outs, in_ports) in raw.items():
        missing = [p for p in in_ports if p not in inputs[lid]]
        if missing:
            raise ModelError(f"{xml_path}: input port {missing[0]} of layer {lid} ({el.get('name')!r}) is not connected")
        data = el.find("data")
        layers[lid] = IrLayer(lid, el.get("name", str(lid)), el.get("type", ""),
                              dict(data.attrib) if data is not None else {},
                              tuple(inputs[lid][p] for p in sorted(in_ports)), outs, values.get(lid))
    order = _topological(layers, xml_path)
    if not any(layer.type == "Parameter" for layer in order) or not any(layer.type == "Result" for layer in order):
        raise ModelError(f"{xml_path}: the graph has no Parameter or no Result")
    return IrModel(root.get("name", ""), version, order, str(xml_path))


def _const(el: ET.Element, blob: bytes, xml_path: Path, bin_path: Path) -> tuple[np.ndarray, int]:
    data = el.find("data")
    if data is None:
        raise ModelError(f"{xml_path}: Const layer {el.get('id')} has no <data>")
    etype = data.get("element_type", "")
    if etype not in DTYPES:
        raise ModelError(f"{xml_path}: Const element type {etype!r} is not supported")
    dtype = np.dtype(DTYPES[etype])
    shape = tuple(_ints(data.get("shape", "")))
    offset, size = int(data.get("offset")), int(data.get("size"))  # type: ignore[arg-type]
    count = int(np.prod(shape, dtype=np.int64))
    if size != count * dtype.itemsize or offset < 0:
        raise ModelError(f"{xml_path}: Const {el.get('name')!r}: {size} bytes for shape {shape} of {etype}")
    if offset + size > len(blob):
        raise ModelError(f"{bin_path}: truncated or mismatched weights ({len(blob)} bytes; Const {el.get('name')!r} "
                         f"needs bytes {offset}..{offset + size})")
    return np.frombuffer(blob, dtype, count, offset).reshape(shape).copy(), offset + size


def _topological(layers: dict[int, IrLayer], xml_path: Path) -> list[IrLayer]:
    """Kahn's order, ties broken by layer id (the file's order for a well-formed IR)."""
    import heapq

    pending = {lid: len({src for src, _ in layer.inputs}) for lid, layer in layers.items()}
    users: dict[int, set[int]] = {lid: set() for lid in layers}
    for lid, layer in layers.items():
        for src, _ in layer.inputs:
            users[src].add(lid)
    ready = [lid for lid, n in pending.items() if n == 0]
    heapq.heapify(ready)
    order = []
    while ready:
        lid = heapq.heappop(ready)
        order.append(layers[lid])
        for u in users[lid]:
            pending[u] -= 1
            if pending[u] == 0:
                heapq.heappush(ready, u)
    if len(order) != len(layers):
        raise ModelError(f"{xml_path}: the graph has a cycle")
    return order
