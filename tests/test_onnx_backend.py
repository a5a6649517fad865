"""The ONNX Runtime backend gives dlib's numbers: embeddings, CNN detections, and the pieces in between."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from faceindex.errors import ModelError

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
LFW = DATA / "lfw" / "images"
FACES = DATA / "detection" / "dlib_faces"

pytestmark = pytest.mark.skipif(not DATA.is_dir(), reason=f"test data not found at {DATA} (../shared/data)")

dlib = pytest.importorskip("dlib")
pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

from faceindex.models import dlib_onnx  # noqa: E402
from faceindex.models.dlib import RESNET_SPEC  # noqa: E402
from faceindex.models.dlib_format import read_mmod_detector, read_resnet_embedder  # noqa: E402

N_FACES = 240  # LFW faces compared against dlib (dlib takes ~0.18 s per chip on one core)


def weights(name: str) -> Path:
    return dlib_onnx.default_weights_path(name)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("onnx-cache")


@pytest.fixture(scope="module")
def chips() -> np.ndarray:
    """Aligned 150x150 chips of the first LFW image of N_FACES people, made exactly as dlib's example does."""
    if not LFW.is_dir():
        pytest.skip(f"LFW images not found at {LFW}")
    det = dlib.get_frontal_face_detector()
    sp = dlib.shape_predictor(str(weights("shape_predictor_5_face_landmarks.dat")))
    out = []
    for person in sorted(LFW.iterdir()):
        img = dlib.load_rgb_image(str(sorted(person.glob("*.jpg"))[0]))
        rects = det(img, 1)
        if rects:
            out.append(dlib.get_face_chip(img, sp(img, rects[0]), size=150, padding=0.25))
        if len(out) == N_FACES:
            break
    return np.stack(out)


@pytest.fixture(scope="module")
def dlib_descriptors(chips) -> np.ndarray:
    net = dlib.face_recognition_model_v1(str(weights(dlib_onnx.RESNET_FILE)))
    return np.array([np.asarray(v) for v in net.compute_face_descriptor(list(chips))], np.float32)


@pytest.fixture(scope="module")
def embedder(cache_dir):
    return dlib_onnx.OnnxEmbedder(cache_dir=cache_dir, threads=2)


# ------------------------------------------------------------------------------------------------ parsing


def test_reader_parses_whole_files_into_layers():
    net = read_resnet_embedder(weights(dlib_onnx.RESNET_FILE))
    kinds = [lay.kind for lay in net.layers]
    assert kinds.count("con") == 29 and kinds.count("affine") == 29 and kinds.count("add_prev") == 14
    assert net.layers[-1].kind == "fc" and net.layers[-1].params["weight"].shape == (256, 128)
    assert net.input_options["avg_rgb"] == pytest.approx((122.782, 117.001, 104.298), abs=1e-4)
    assert net.num_params > 5_000_000

    mmod = read_mmod_detector(weights(dlib_onnx.MMOD_FILE))
    assert [lay.kind for lay in mmod.layers].count("con") == 7
    assert mmod.loss_options["detector_windows"] == [{"width": 80, "height": 80, "label": ""}]


@pytest.mark.parametrize("how", ["truncated", "garbage", "other_network", "flipped_version"])
def test_corrupt_weights_raise_model_error(tmp_path, how):
    src = weights(dlib_onnx.RESNET_FILE).read_bytes()
    bad = tmp_path / "resnet.dat"
    if how == "truncated":
        bad.write_bytes(src[: len(src) // 3])
    elif how == "garbage":
        bad.write_bytes(os.urandom(4096))
    elif how == "other_network":
        bad.write_bytes(weights(dlib_onnx.MMOD_FILE).read_bytes())
    else:
        bad.write_bytes(src[:2] + b"\x01\x07" + src[4:])  # a string length where "loss_metric_2" begins
    emb = dlib_onnx.OnnxEmbedder(weights_path=str(bad), cache_dir=tmp_path / "cache")
    with pytest.raises(ModelError) as info:
        emb.embed(np.zeros((1, 150, 150, 3), np.uint8))
    msg = str(info.value)
    assert str(bad) in msg and "not a dlib network of the expected type" in msg
    if how == "truncated":
        assert "truncated" in msg
    assert not list((tmp_path / "cache").glob("*.onnx")), "a failed build must not leave a cached model"


def test_missing_weights_raise_model_error(tmp_path):
    with pytest.raises(ModelError, match="missing"):
        dlib_onnx.OnnxEmbedder(weights_path=str(tmp_path / "nope.dat"), cache_dir=tmp_path)


# ------------------------------------------------------------------------------------------------ embedder


def test_embeddings_match_dlib(embedder, chips, dlib_descriptors):
    onnx_desc = embedder.embed(chips)
    assert onnx_desc.shape == (len(chips), 128) and onnx_desc.dtype == np.float32
    cos = (onnx_desc * dlib_descriptors).sum(1) / (
        np.linalg.norm(onnx_desc, axis=1) * np.linalg.norm(dlib_descriptors, axis=1))
    max_abs = float(np.abs(onnx_desc - dlib_descriptors).max())
    print(f"\n{len(chips)} LFW chips: min cosine {cos.min():.8f}, max |onnx - dlib| {max_abs:.3g}")
    assert cos.min() >= 0.9999
    # raw (not normalised) descriptors, like dlib's: norms around 1.4 for this model, not 1
    assert np.allclose(np.linalg.norm(onnx_desc, axis=1), np.linalg.norm(dlib_descriptors, axis=1), rtol=1e-4)
    assert max_abs < 1e-4


def test_batching_and_shapes(embedder, chips):
    one_by_one = np.concatenate([embedder.embed(c[None]) for c in chips[:20]])
    batched = embedder.embed(chips[:20])  # 16 + 4 internally
    assert np.abs(one_by_one - batched).max() < 1e-5
    assert embedder.embed(chips[0]).shape == (1, 128)
    assert embedder.embed(np.zeros((0, 150, 150, 3), np.uint8)).shape == (0, 128)
    with pytest.raises(ValueError):
        embedder.embed(np.zeros((2, 112, 112, 3), np.uint8))
    assert embedder.spec == RESNET_SPEC and embedder.spec.key == "dlib_resnet_v1@1/128"


def test_cache_is_keyed_by_sha256_and_reused(tmp_path, chips, monkeypatch):
    first = dlib_onnx.OnnxEmbedder(cache_dir=tmp_path)
    assert first.model_path is None, "nothing is built before first use"
    a = first.embed(chips[:2])
    digest = dlib_onnx.file_sha256(weights(dlib_onnx.RESNET_FILE))
    assert first.built and first.model_path is not None and digest in first.model_path.name
    assert [p.name for p in tmp_path.iterdir()] == [first.model_path.name], "no temporary files left behind"
    mtime = first.model_path.stat().st_mtime_ns

    second = dlib_onnx.OnnxEmbedder(cache_dir=tmp_path)
    b = second.embed(chips[:2])
    assert not second.built and second.model_path == first.model_path
    assert first.model_path.stat().st_mtime_ns == mtime
    assert np.array_equal(a, b)

    # another weights file (another sha256) gets its own model
    copy = tmp_path / "weights" / "renamed.dat"
    copy.parent.mkdir()
    data = bytearray(weights(dlib_onnx.RESNET_FILE).read_bytes())
    data[-5] ^= 0x01  # one bit of the last fc weight: a different (still valid) network
    copy.write_bytes(bytes(data))
    third = dlib_onnx.OnnxEmbedder(weights_path=str(copy), cache_dir=tmp_path)
    third.load()
    assert third.built and third.model_path != first.model_path

    monkeypatch.setenv("FACEINDEX_CACHE", str(tmp_path / "from-env"))
    assert dlib_onnx.OnnxEmbedder().cache_dir == tmp_path / "from-env"


def test_unwritable_cache_still_works(tmp_path, chips):
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("x")
    emb = dlib_onnx.OnnxEmbedder(cache_dir=not_a_dir)
    with pytest.warns(RuntimeWarning, match="cannot cache"):
        out = emb.embed(chips[:1])
    assert out.shape == (1, 128) and emb.built and emb.model_path is None


def test_damaged_cache_file_is_rebuilt(tmp_path, chips):
    first = dlib_onnx.OnnxEmbedder(cache_dir=tmp_path)
    first.load()
    first.model_path.write_bytes(b"not an onnx model")
    second = dlib_onnx.OnnxEmbedder(cache_dir=tmp_path)
    out = second.embed(chips[:1])
    assert second.built and out.shape == (1, 128)


# ------------------------------------------------------------------------------------------------ CNN detector


def test_resize_matches_dlib_bit_for_bit():
    rng = np.random.default_rng(0)
    for _ in range(60):
        h, w = (int(v) for v in rng.integers(2, 50, 2))
        oh, ow = (int(v) for v in rng.integers(1, 110, 2))
        f = rng.standard_normal((h, w)).astype(np.float32)
        assert np.array_equal(dlib_onnx.resize_float(f[None], oh, ow)[0], dlib.resize_image(f, oh, ow))
        img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        assert np.array_equal(dlib_onnx.resize_rgb(img, oh, ow), dlib.resize_image(img, oh, ow))


@pytest.fixture(scope="module")
def cnn_pair(cache_dir):
    ref = dlib.cnn_face_detection_model_v1(str(weights(dlib_onnx.MMOD_FILE)))
    return ref, dlib_onnx.OnnxCnnDetector(cache_dir=cache_dir, threads=2)


# dlib's CNN needs ~5 s per image here: a few small group photos upsampled once, and a negative at upsample 0.
@pytest.mark.parametrize("name,upsample", [("2008_001009.jpg", 1), ("2009_004587.jpg", 1), ("2008_002470.jpg", 1),
                                           ("dogs.jpg", 0)])
def test_cnn_detector_matches_dlib(cnn_pair, name, upsample):
    if not FACES.is_dir():
        pytest.skip(f"detection photos not found at {FACES}")
    ref, det = cnn_pair
    img = dlib.load_rgb_image(str(FACES / name))
    want = sorted((d.rect.left(), d.rect.top(), d.rect.right() + 1, d.rect.bottom() + 1, d.confidence)
                  for d in ref(img, upsample))
    got = sorted((d.left, d.top, d.right, d.bottom, d.score) for d in det.detect(img, upsample))
    assert len(got) == len(want), (got, want)
    for g, w in zip(got, want):
        assert max(abs(a - b) for a, b in zip(g[:4], w[:4])) <= 1, (g, w)
        assert abs(g[4] - w[4]) <= 1e-3, (g, w)
    if name == "dogs.jpg":
        assert not got
    else:
        assert got, "these photos contain faces"


def test_cnn_detector_edge_cases(cnn_pair):
    _, det = cnn_pair
    assert det.detect(np.zeros((0, 0, 3), np.uint8), 0) == []
    assert det.detect(np.zeros((3, 4, 3), np.uint8), 0) == []  # too small for the network (dlib crashes here)
    gray = np.zeros((60, 80), np.uint8)
    assert det.detect(gray, 0) == []
    with pytest.raises(ValueError):
        det.detect(np.zeros((10, 10, 4), np.uint8), 0)
