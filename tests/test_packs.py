"""Model packs: the built-in packs' identity and files, `faceindex models list / verify / add`, user packs."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from faceindex.calibration import Calibration
from faceindex.config import Settings
from faceindex.errors import ModelError
from faceindex.models import packs
from faceindex.models.base import Detection
from faceindex.models.userpack import check_pack

EXE = shutil.which("faceindex") or f"{sys.executable} -m faceindex"


def run(*args, data, check=None):
    p = subprocess.run([*EXE.split(), "--data", str(data), *map(str, args)], capture_output=True, text=True,
                       timeout=300, env={**os.environ})
    if check is not None:
        assert p.returncode == check, (p.returncode, p.stdout, p.stderr)
    assert "Traceback" not in p.stderr, p.stderr
    return p


def sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def tiny_pack(folder, name="tiny", dim=16, out_dim=None, size=32):
    """A pack folder with a generated ONNX embedder (flatten + matmul) and a calibration table for its key."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    folder.mkdir(parents=True, exist_ok=True)
    w = np.random.default_rng(1).normal(size=(3 * size * size, out_dim or dim)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Flatten", ["x"], ["f"], axis=1), helper.make_node("MatMul", ["f", "w"], ["y"])],
        "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, size, size])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", out_dim or dim])],
        [numpy_helper.from_array(w, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    (folder / "embedder.onnx").write_bytes(model.SerializeToString())
    rng = np.random.default_rng(2)
    cal = Calibration.from_scores(f"{name}@1/{dim}", rng.normal(0.7, 0.1, 2000), rng.normal(0.0, 0.1, 200_000),
                                  source="synthetic (test)")
    (folder / "calibration.json").write_text(json.dumps(cal.to_json()))
    (folder / "pack.toml").write_text(f'''name = "{name}"
version = "1"
dim = {dim}
licence = "CC0-1.0"
calibration = "calibration.json"
calibration_sha256 = "{sha(folder / 'calibration.json')}"

[embedder]
file = "embedder.onnx"
sha256 = "{sha(folder / 'embedder.onnx')}"
size = {size}
channels = "BGR"
mean = [127.5, 127.5, 127.5]
std = [128.0, 128.0, 128.0]
''')
    return folder


def test_builtin_packs_keep_their_keys_and_files():
    dlib, yunet = packs.get("dlib"), packs.get("yunet-omz95")
    assert dlib.key == "dlib_resnet_v1@1/128"  # existing indexes record this key and must open unchanged
    assert dlib.calibration == "dlib_resnet_v1" and dlib.alignment.chip_size == 150
    assert yunet.key == "yunet-omz95@1/256" and yunet.dim == 256
    assert yunet.input.size == 128 and yunet.input.channels == "BGR" and len(yunet.alignment.template) == 5
    assert packs.by_key(dlib.key) is dlib and packs.by_key(yunet.key) is yunet
    for p in (dlib, yunet):
        assert p.verify() == [], p.verify()
        assert p.licence and all(f.path.is_file() for f in p.files)
    with pytest.raises(ModelError, match="unknown model pack 'nope'"):
        packs.get("nope")


def test_index_keeps_its_model_and_refuses_another(tmp_path):
    s = Settings(data=tmp_path)
    assert packs.for_index(s, None).name == packs.DEFAULT
    assert packs.for_index(s.model_copy(update={"model": "dlib"}), None).name == "dlib"
    assert packs.for_index(s, "dlib_resnet_v1@1/128").name == "dlib"  # no --model: the recorded one
    with pytest.raises(ModelError, match="refusing to mix in yunet-omz95") as e:
        packs.for_index(s.model_copy(update={"model": "yunet-omz95"}), "dlib_resnet_v1@1/128")
    assert "\n" not in str(e.value)
    with pytest.raises(ModelError, match="no installed model pack"):
        packs.for_index(s, "other@3/64")


def test_calibration_follows_the_pack(tmp_path):
    assert packs.calibration_for(packs.get("dlib"), tmp_path).model == "dlib_resnet_v1@1/128"
    # an operator's table measured with another model is not applied to this one
    own = Calibration.from_scores("dlib_resnet_v1@1/128", np.full(10, 0.9), np.linspace(-1, 0.5, 10_000), "own")
    (tmp_path / "calibration.json").write_text(json.dumps(own.to_json()))
    assert packs.calibration_for(packs.get("dlib"), tmp_path).source == "own"
    tiny = tiny_pack(tmp_path / "src")
    p = check_pack(tiny)
    assert packs.calibration_for(p, tmp_path).model == "tiny@1/16"


def test_models_cli_list_verify_add(tmp_path):
    data = tmp_path / "data"
    listed = json.loads(run("models", "list", "--json", data=data, check=0).stdout)
    assert [r["name"] for r in listed] == ["dlib", "yunet-omz95"]
    assert sum(r["default"] for r in listed) == 1
    assert "MIT" in listed[1]["licence"] and "Apache-2.0" in listed[1]["licence"]
    assert "ok" in run("models", "verify", data=data, check=0).stdout

    src = tiny_pack(tmp_path / "tiny")
    p = run("models", "add", src, data=data, check=0)
    assert "added model pack tiny (tiny@1/16)" in p.stdout
    assert (data / "packs" / "tiny" / "pack.toml").is_file()
    listed = json.loads(run("models", "list", "--json", data=data, check=0).stdout)
    assert [r["name"] for r in listed] == ["dlib", "yunet-omz95", "tiny"]
    assert packs.get("tiny", data).key == "tiny@1/16"
    # the same name twice
    p = run("models", "add", src, data=data, check=ModelError.exit_code)
    assert "already installed" in p.stderr and len(p.stderr.strip().splitlines()) == 1

    # a file changed after it was added: verify fails, names the file
    emb = data / "packs" / "tiny" / "embedder.onnx"
    emb.write_bytes(emb.read_bytes() + b"\0")
    p = run("models", "verify", data=data)
    assert p.returncode != 0 and "tiny: embedder file embedder.onnx has sha256" in p.stderr
    assert "dlib: ok" in p.stdout and "tiny: FAILED" in p.stdout


@pytest.mark.parametrize("breakage, message", [
    ("no-toml", "needs a pack.toml"),
    ("bad-toml", "is not readable TOML"),
    ("sha", "has sha256"),
    ("dim", "outputs 8 values per face; the pack says dim = 16"),
    ("builtin-name", "may not take the built-in name 'dlib'"),
    ("missing-file", "embedder file missing"),
    ("calibration-model", "calibrates model other@1/16, not tiny@1/16"),
])
def test_broken_pack_refused_with_one_line(tmp_path, breakage, message):
    data = tmp_path / "data"
    src = tiny_pack(tmp_path / "src", name="dlib" if breakage == "builtin-name" else "tiny",
                    out_dim=8 if breakage == "dim" else None)
    toml = src / "pack.toml"
    if breakage == "no-toml":
        toml.unlink()
    elif breakage == "bad-toml":
        toml.write_text(toml.read_text() + "\nname = [unclosed\n")
    elif breakage == "sha":
        (src / "embedder.onnx").write_bytes((src / "embedder.onnx").read_bytes()[:-1] + b"x")
    elif breakage == "missing-file":
        (src / "embedder.onnx").unlink()
    elif breakage == "calibration-model":
        cal = json.loads((src / "calibration.json").read_text())
        cal["model"] = "other@1/16"
        (src / "calibration.json").write_text(json.dumps(cal))
        toml.write_text(toml.read_text().replace(
            [ln for ln in toml.read_text().splitlines() if ln.startswith("calibration_sha256")][0],
            f'calibration_sha256 = "{sha(src / "calibration.json")}"'))
    p = run("models", "add", src, data=data)
    assert p.returncode == ModelError.exit_code, (p.stdout, p.stderr)
    assert message in p.stderr and len(p.stderr.strip().splitlines()) == 1, p.stderr
    assert not (data / "packs").exists() or not any((data / "packs").iterdir())  # nothing half-added


# --- the yunet-omz95 pack through FacePipeline ---------------------------------------------------------------------
needs_lfw = pytest.mark.skipif(not (packs.FILES.parents[2].parent / "shared" / "data" / "lfw").is_dir(),
                               reason="LFW not found at ../shared/data/lfw")


@pytest.fixture(scope="module")
def yunet_pipe():
    from faceindex.pipeline import FacePipeline

    return FacePipeline(Settings(model="yunet-omz95", workers=1))


@needs_lfw
def test_yunet_omz95_pipeline_embeds_and_separates(yunet_pipe):
    from faceindex import images

    from .conftest import lfw

    assert yunet_pipe.spec.key == "yunet-omz95@1/256" and yunet_pipe.models.detector_kind == "yunet"
    faces = {}
    for name, i in [("Tony_Blair", 1), ("Tony_Blair", 2), ("Colin_Powell", 1), ("Serena_Williams", 1)]:
        found = yunet_pipe.faces(images.load(lfw(name, i), max_pixels=10**8, max_bytes=10**9).pixels)
        assert found, (name, i)
        f = found[0]
        assert f.embedding.shape == (256,) and abs(float(np.linalg.norm(f.embedding)) - 1) < 1e-5
        assert len(f.landmarks) == 5 and 0.3 < f.quality.score <= 1.0
        # landmarks in ArcFace order inside the box: right eye (smaller x) first, mouth below the eyes
        (rx, ry), (lx, ly), _, (_, my1), (_, my2) = f.landmarks
        assert rx < lx and my1 > ry and my2 > ly
        assert f.box.x1 <= rx and lx <= f.box.x2
        faces[(name, i)] = f.embedding
    same = float(faces[("Tony_Blair", 1)] @ faces[("Tony_Blair", 2)])
    others = [float(faces[("Tony_Blair", 1)] @ faces[k]) for k in faces if k[0] != "Tony_Blair"]
    assert same > max(others) + 0.2, (same, others)


@needs_lfw
def test_yunet_omz95_fallback_landmarks_a_cnn_box(yunet_pipe):
    """A box without landmarks (dlib's CNN fallback) is landmarked by YuNet on a crop around it."""
    from faceindex import images

    from .conftest import lfw

    px = images.load(lfw("Colin_Powell", 1), max_pixels=10**8, max_bytes=10**9).pixels
    d = yunet_pipe.detect(px)[0]
    bare = Detection(d.left + 3, d.top - 2, d.right + 1, d.bottom + 4, 1.0)  # a CNN-like box, no landmarks
    again = yunet_pipe.models._landmarked(px, bare)
    assert np.abs(again.landmarks - d.landmarks).max() < 4.0  # YuNet's own points, found again on the crop
    f_direct = yunet_pipe.faces_at(px, [d])[0]
    f_bare = yunet_pipe.faces_at(px, [bare])[0]
    assert float(f_direct.embedding @ f_bare.embedding) > 0.95


def test_nothing_found_means_no_faces(yunet_pipe):
    blank = np.full((240, 320, 3), 127, np.uint8)
    assert yunet_pipe.faces(blank, fallback=True) == []


@needs_lfw
def test_user_pack_round_trip_through_an_index(tmp_path):
    """A pack added with `models add` makes an index: YuNet faces, its ONNX embedder, its calibration, its key."""
    from faceindex import FaceIndex

    from .conftest import lfw

    data = tmp_path / "data"
    run("models", "add", tiny_pack(tmp_path / "tiny"), data=data, check=0)
    with FaceIndex.open(data, model="tiny") as fi:
        assert fi.pack.name == "tiny" and fi.calibration.model == "tiny@1/16"
        rep = fi.add([lfw("Tony_Blair", 1), lfw("Colin_Powell", 1)], "s", workers=2)  # worker processes too
        assert rep.ok and rep.faces_found == 2
        assert {len(b) for (b,) in fi.catalog.db.execute("SELECT embedding FROM faces")} == {16 * 4}
        res = fi.search(lfw("Tony_Blair", 1), top=1, purpose="testing", case="T-1")[0]
        assert res.matches[0].similarity > 0.999  # the same photo: the same 16-d embedding
    s = json.loads(run("stats", "--json", data=data, check=0).stdout)
    assert s["model"] == "tiny@1/16" and s["model_pack"] == "tiny"
    assert run("--model", "dlib", "stats", data=data).returncode == ModelError.exit_code
