"""Intel's face-reidentification-retail-0095: the OpenVINO IR read in numpy, its ONNX graph proved against a float64
numpy reference on real LFW faces, batching, the sha256-keyed cache, and broken model files."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from faceindex.errors import ModelError

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

from faceindex.models import omz, openvino  # noqa: E402
from faceindex.models.align import warp_chip  # noqa: E402
from faceindex.models.onnx_util import sources_sha256  # noqa: E402

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
LFW = DATA / "lfw" / "images"
# two photos each of six people (deep-funneled LFW)
PEOPLE = ["Colin_Powell", "Tony_Blair", "Serena_Williams", "Hugo_Chavez", "Junichiro_Koizumi", "Laura_Bush"]


def arcface_points(shape) -> np.ndarray:
    """ArcFace's 5 points from dlib's 68 (iBUG): eye centres (viewer's left first), nose tip, mouth corners."""
    p = np.array([[shape.part(i).x, shape.part(i).y] for i in range(68)], np.float64)
    return np.stack([p[36:42].mean(0), p[42:48].mean(0), p[30], p[48], p[54]])


@pytest.fixture(scope="module")
def faces() -> tuple[list[str], np.ndarray]:
    """(person names, (12, 128, 128, 3) chips) aligned on dlib's 68-point landmarks."""
    if not LFW.is_dir():
        pytest.skip(f"LFW images not found at {LFW} (../shared/data)")
    dlib = pytest.importorskip("dlib")
    from faceindex.models.dlib_onnx import default_weights_path

    det = dlib.get_frontal_face_detector()
    sp = dlib.shape_predictor(str(default_weights_path("shape_predictor_68_face_landmarks.dat")))
    names, chips = [], []
    for person in PEOPLE:
        for i in (1, 2):
            img = dlib.load_rgb_image(str(LFW / person / f"{person}_{i:04d}.jpg"))
            rects = det(img, 1)
            assert rects, f"no face in {person}_{i:04d}"
            box = max(rects, key=lambda r: r.area())
            names.append(person)
            chips.append(warp_chip(img, arcface_points(sp(img, box)), 128))
    return names, np.stack(chips)


@pytest.fixture(scope="module")
def ir() -> openvino.IrModel:
    return openvino.read_ir(omz.XML_FILE, omz.BIN_FILE)


@pytest.fixture(scope="module")
def embedder(tmp_path_factory) -> omz.OmzEmbedder:
    return omz.OmzEmbedder(cache_dir=tmp_path_factory.mktemp("omz-cache"))


def bgr_nchw(chips: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(chips[..., ::-1].transpose(0, 3, 1, 2), np.float32)


# ------------------------------------------------------------------------------------------------ the IR


def test_ir_is_read_in_full(ir):
    assert ir.version == 11
    assert ir.ops == Counter({"Const": 209, "Convert": 209, "Add": 92, "Convolution": 63, "PReLU": 48,
                              "GroupConvolution": 17, "Multiply": 16, "AvgPool": 15, "Sigmoid": 15,
                              "Parameter": 1, "Result": 1})
    (param,) = ir.parameters
    assert param.outputs == {0: (1, 3, 128, 128)}
    (result,) = ir.results
    assert ir.shape(result.inputs[0]) == (1, 256, 1, 1)
    consts = [layer for layer in ir.layers if layer.type == "Const"]
    assert {c.value.dtype for c in consts} == {np.dtype(np.float16)}  # FP16 weights, converted to FP32 at load
    assert sum(c.value.size for c in consts) * 2 == omz.BIN_FILE.stat().st_size  # every byte of the .bin used
    first_conv = next(layer for layer in ir.layers if layer.type == "Convolution")
    assert ir.shape(first_conv.inputs[1]) == (64, 3, 3, 3) and first_conv.ints("strides") == [2, 2]
    seen: set[int] = set()
    for layer in ir.layers:  # topological: every layer after what it reads
        assert all(src in seen for src, _ in layer.inputs)
        seen.add(layer.id)


def test_onnx_graph_is_folded(ir):
    folded, literal = openvino.build_onnx(ir), openvino.build_onnx(ir, fold=False)
    ops = Counter(n.op_type for n in folded.graph.node)
    literal_ops = Counter(n.op_type for n in literal.graph.node)
    # conv biases and the input scale in the weights; PReLU's shared slope as LeakyRelu; pools over the whole map
    assert literal_ops["Add"] == 92 and literal_ops["Mul"] == 16
    assert literal_ops["PRelu"] == 48 and literal_ops["AveragePool"] == 15
    assert ops["Conv"] == 80 and ops["LeakyRelu"] == 48 and ops["GlobalAveragePool"] == 15
    assert ops["Add"] == 12 + 1 and ops["Mul"] == 15  # residual adds + the input shift; the squeeze-excite scales
    assert not {"PRelu", "AveragePool", "Cast"} & set(ops)
    dims = [d.dim_param or d.dim_value for d in folded.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["N", 3, 128, 128]


def test_onnx_equals_numpy_reference_on_real_faces(ir, embedder, faces):
    _, chips = faces
    x = bgr_nchw(chips[::3])  # 4 faces of 4 people
    ref = openvino.reference_forward(ir, x).reshape(len(x), -1)
    got = embedder.embed(chips[::3]).astype(np.float64)
    cos = (ref * got).sum(1) / (np.linalg.norm(ref, axis=1) * np.linalg.norm(got, axis=1))
    max_abs = float(np.abs(ref - got).max())
    print(f"\n{len(x)} LFW faces: min cosine {cos.min():.9f}, max |onnx - numpy| {max_abs:.3g}, "
          f"max |numpy| {np.abs(ref).max():.3g}")
    assert cos.min() >= 0.99999
    assert max_abs < 1e-4
    # the literal (unfolded) translation agrees too: folding changed nothing but speed
    import onnxruntime as ort

    sess = ort.InferenceSession(openvino.build_onnx(ir, fold=False).SerializeToString(),
                                providers=["CPUExecutionProvider"])
    literal = sess.run(None, {"input": x})[0].reshape(len(x), -1)
    assert np.abs(literal - got).max() < 1e-4


def test_reference_semantics_on_a_tiny_graph():
    """The reference's ops against hand-computed values: conv padding/stride, per-channel PReLU, exclude-pad pool."""
    x = np.arange(16, dtype=np.float64).reshape(1, 1, 4, 4)
    w = np.ones((1, 1, 1, 3, 3))
    out = openvino._ref_conv(x, w, 1, [2, 2], [1, 1], [1, 1], [1, 1])
    assert out.shape == (1, 1, 2, 2)
    assert out[0, 0, 0, 0] == 0 + 1 + 4 + 5  # the window at (-1, -1) sees only the top-left 2x2
    assert out[0, 0, 1, 1] == x[0, 0, 1:4, 1:4].sum()
    layer = openvino.IrLayer(0, "p", "AvgPool", {"kernel": "3,3", "strides": "2,2", "pads_begin": "1,1",
                                                 "pads_end": "1,1", "exclude-pad": "true"}, (), {})
    assert openvino._ref_avgpool(x, layer)[0, 0, 0, 0] == pytest.approx((0 + 1 + 4 + 5) / 4)
    slope = openvino._channel_slope(np.array([0.5, 2.0]), 4, 2)
    assert slope.shape == (2, 1, 1)


# ------------------------------------------------------------------------------------------------ the embedder


def test_batching_and_shapes(embedder, faces):
    _, chips = faces
    batched = embedder.embed(chips[:10])  # 4 + 4 + 2 internally
    one_by_one = np.concatenate([embedder.embed(c) for c in chips[:10]])
    assert batched.shape == (10, 256) and batched.dtype == np.float32
    assert np.abs(batched - one_by_one).max() < 1e-5
    assert embedder.embed(np.zeros((0, 128, 128, 3), np.uint8)).shape == (0, 256)
    norms = np.linalg.norm(batched, axis=1)
    assert not np.allclose(norms, 1.0, atol=1e-3), "raw descriptors, not normalised"
    with pytest.raises(ValueError):
        embedder.embed(np.zeros((2, 150, 150, 3), np.uint8))
    with pytest.raises(ValueError):
        embedder.embed(chips[:2].astype(np.float32))
    assert embedder.dim == 256 and embedder.input_size == 128


def test_channel_order_is_bgr(embedder, faces):
    """The network was trained on BGR: feeding it RGB (the chips as they are) must give other numbers."""
    _, chips = faces
    swapped = embedder.embed(np.ascontiguousarray(chips[:2, :, :, ::-1]))
    assert np.abs(swapped - embedder.embed(chips[:2])).max() > 1e-2
    sess = embedder._session()
    direct = sess.run(None, {"input": bgr_nchw(chips[:2])})[0].reshape(2, -1)
    assert np.abs(direct - embedder.embed(chips[:2])).max() < 1e-6


def test_same_person_scores_higher_than_different_people(embedder, faces):
    names, chips = faces
    e = embedder.embed(chips)
    e /= np.linalg.norm(e, axis=1, keepdims=True)
    sim = e @ e.T
    same = np.array(names)[:, None] == np.array(names)[None, :]
    off_diag = ~np.eye(len(names), dtype=bool)
    mated, non_mated = sim[same & off_diag], sim[~same]
    print(f"\nmated cosine min {mated.min():.3f}, non-mated max {non_mated.max():.3f}")
    assert mated.min() > non_mated.max()


# ------------------------------------------------------------------------------------------------ cache


def test_cache_is_keyed_by_both_files_and_reused(tmp_path, faces):
    _, chips = faces
    first = omz.OmzEmbedder(cache_dir=tmp_path)
    assert first.model_path is None, "nothing is built before first use"
    a = first.embed(chips[:2])
    digest = sources_sha256([omz.XML_FILE, omz.BIN_FILE])
    assert first.built and first.model_path is not None
    assert first.model_path.name == f"{omz.OmzEmbedder.kind}-{digest}-b{omz.OmzEmbedder.builder_version}.onnx"
    assert [p.name for p in tmp_path.iterdir()] == [first.model_path.name], "no temporary files left behind"
    mtime = first.model_path.stat().st_mtime_ns

    second = omz.OmzEmbedder(cache_dir=tmp_path)
    b = second.embed(chips[:2])
    assert not second.built and second.model_path == first.model_path
    assert first.model_path.stat().st_mtime_ns == mtime
    assert np.array_equal(a, b)

    # a damaged cache file is rebuilt, not trusted
    first.model_path.write_bytes(b"not an onnx model")
    third = omz.OmzEmbedder(cache_dir=tmp_path)
    assert np.array_equal(third.embed(chips[:2]), a) and third.built


def _damage(tmp_path: Path, how: str) -> tuple[Path, Path]:
    xml, blob = omz.XML_FILE.read_text(), omz.BIN_FILE.read_bytes()
    if how == "truncated_bin":
        blob = blob[: len(blob) // 2]
    elif how == "longer_bin":
        blob = blob + blob[:1000]
    elif how == "malformed_xml":
        xml = xml[: len(xml) // 2]
    elif how == "unknown_op":
        xml = xml.replace('type="Sigmoid"', 'type="Swish"', 1)
    elif how == "not_an_ir":
        xml = '<?xml version="1.0" ?>\n<model><nothing/></model>\n'
    elif how == "dangling_edge":
        xml = xml.replace('from-layer="0" from-port="0"', 'from-layer="99999" from-port="0"', 1)
    x, b = tmp_path / "model.xml", tmp_path / "model.bin"
    x.write_text(xml)
    b.write_bytes(blob)
    return x, b


@pytest.mark.parametrize("how, words", [
    ("truncated_bin", "truncated or mismatched"), ("longer_bin", "another model"), ("malformed_xml", "malformed"),
    ("unknown_op", "unsupported OpenVINO op 'Swish'"), ("not_an_ir", "not an OpenVINO IR"),
    ("dangling_edge", "missing layer"),
])
def test_broken_model_files_give_one_line_model_error(tmp_path, faces, how, words):
    _, chips = faces
    xml, blob = _damage(tmp_path, how)
    emb = omz.OmzEmbedder(xml, blob, cache_dir=tmp_path / "cache")
    with pytest.raises(ModelError) as info:
        emb.embed(chips[:1])
    msg = str(info.value)
    assert words in msg and "\n" not in msg
    assert str(xml) in msg or str(blob) in msg
    assert not list((tmp_path / "cache").glob("*.onnx")), "a failed build must not leave a cached model"


def test_missing_files_give_model_error(tmp_path):
    with pytest.raises(ModelError, match="missing"):
        omz.OmzEmbedder(tmp_path / "nope.xml", cache_dir=tmp_path)


# ------------------------------------------------------------------------------------------------ other IRs


class _IrWriter:
    """A small OpenVINO IR v11 written in the test: layers, FP16/FP32 constants in a .bin, edges."""

    def __init__(self) -> None:
        self.layers: list[str] = []
        self.edges: list[tuple[int, int, int, int]] = []
        self.blob = bytearray()
        self.shapes: dict[int, tuple[int, ...]] = {}
        self.out_port: dict[int, int] = {}

    @staticmethod
    def _port(pid: int, shape) -> str:
        return f'<port id="{pid}">' + "".join(f"<dim>{d}</dim>" for d in shape) + "</port>"

    def layer(self, kind: str, inputs: list[int], out_shape, data: dict | None = None) -> int:
        lid = len(self.layers)
        attrs = " ".join(f'{k}="{v}"' for k, v in (data or {}).items())
        ins = "".join(self._port(i, self.shapes[src]) for i, src in enumerate(inputs))
        out = self._port(len(inputs), out_shape) if kind != "Result" else ""
        self.layers.append(f'<layer id="{lid}" name="l{lid}" type="{kind}" version="opset1"><data {attrs}/>'
                           f'{"<input>" + ins + "</input>" if ins else ""}{"<output>" + out + "</output>" if out else ""}'
                           "</layer>")
        for i, src in enumerate(inputs):
            self.edges.append((src, self.out_port[src], lid, i))
        self.shapes[lid] = tuple(out_shape)
        self.out_port[lid] = len(inputs)
        return lid

    def const(self, value: np.ndarray, fp16: bool = True) -> int:
        arr = np.ascontiguousarray(value, np.float16 if fp16 else np.float32)
        shape = ", ".join(str(d) for d in arr.shape)
        lid = self.layer("Const", [], arr.shape, {"element_type": "f16" if fp16 else "f32", "shape": shape,
                                                  "offset": len(self.blob), "size": arr.nbytes})
        self.blob += arr.tobytes()
        if fp16:
            lid = self.layer("Convert", [lid], arr.shape, {"destination_type": "f32"})
        return lid

    def write(self, folder: Path) -> tuple[Path, Path]:
        edges = "".join(f'<edge from-layer="{a}" from-port="{b}" to-layer="{c}" to-port="{d}"/>'
                        for a, b, c, d in self.edges)
        xml = folder / "tiny.xml"
        xml.write_text(f'<?xml version="1.0"?><net name="tiny" version="11"><layers>{"".join(self.layers)}</layers>'
                       f"<edges>{edges}</edges></net>")
        (folder / "tiny.bin").write_bytes(bytes(self.blob))
        return xml, folder / "tiny.bin"


def test_ops_this_model_does_not_use_agree_with_the_reference(tmp_path):
    """Per-channel PReLU, a Multiply after a convolution, padded average pools (both pad rules), a grouped
    convolution, valid padding, FP32 constants: the folded and literal ONNX graphs equal the numpy reference."""
    rng = np.random.default_rng(7)
    w = _IrWriter()
    x = w.layer("Parameter", [], (1, 4, 11, 11), {"shape": "1,4,11,11", "element_type": "f32"})
    conv = {"auto_pad": "explicit", "dilations": "1, 1", "pads_begin": "1, 1", "pads_end": "1, 1", "strides": "2, 2"}
    bcast = {"auto_broadcast": "numpy"}
    c1 = w.layer("Convolution", [x, w.const(rng.normal(0, 0.01, (5, 4, 3, 3)))], (1, 5, 6, 6), conv)
    b1 = w.layer("Add", [c1, w.const(rng.normal(0, 1, (1, 5, 1, 1)))], (1, 5, 6, 6), bcast)
    m1 = w.layer("Multiply", [b1, w.const(rng.uniform(0.5, 2, (1, 5, 1, 1)), fp16=False)], (1, 5, 6, 6), bcast)
    a1 = w.layer("Add", [w.const(rng.normal(0, 1, (1, 5, 1, 1))), m1], (1, 5, 6, 6), bcast)
    p1 = w.layer("PReLU", [a1, w.const(np.array([0.1, -0.2, 0.3, 2.0, 0.0]))], (1, 5, 6, 6))
    pool = {"kernel": "3, 3", "strides": "2, 2", "pads_begin": "1, 1", "pads_end": "1, 1", "rounding_type": "floor",
            "auto_pad": "explicit"}
    q1 = w.layer("AvgPool", [p1], (1, 5, 3, 3), {**pool, "exclude-pad": "true"})
    q2 = w.layer("AvgPool", [p1], (1, 5, 3, 3), {**pool, "exclude-pad": "false"})
    s = w.layer("Multiply", [q1, q2], (1, 5, 3, 3), bcast)
    g = w.layer("GroupConvolution", [s, w.const(rng.normal(0, 0.3, (5, 2, 1, 2, 2)))], (1, 10, 2, 2),
                {**conv, "strides": "1, 1", "auto_pad": "valid"})
    sig = w.layer("Sigmoid", [g], (1, 10, 2, 2))
    y = w.layer("Multiply", [g, sig], (1, 10, 2, 2), bcast)
    w.layer("Result", [y], ())
    ir = openvino.read_ir(*w.write(tmp_path))
    assert ir.ops["Convert"] == 5 and ir.ops["AvgPool"] == 2

    import onnxruntime as ort

    inp = rng.uniform(0, 255, (3, 4, 11, 11)).astype(np.float32)
    ref = openvino.reference_forward(ir, inp)
    assert ref.shape == (3, 10, 2, 2)
    for fold in (True, False):
        model = openvino.build_onnx(ir, fold=fold)
        got = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(
            None, {"input": inp})[0]
        assert np.allclose(got, ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max()), f"fold={fold}"
    ops = Counter(n.op_type for n in openvino.build_onnx(ir).graph.node)
    assert ops["PRelu"] == 1 and ops["AveragePool"] == 2 and ops["Conv"] == 2 and ops["Mul"] == 2
    assert "Add" not in ops  # both Adds and the Multiply by a constant are in the first convolution
