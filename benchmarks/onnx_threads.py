"""ONNX embedder throughput: one process with N threads vs N single-threaded processes (and CUDA if present).

Needs only numpy and onnxruntime, so that it runs on a machine without the rest of faceindex:
    python benchmarks/onnx_threads.py --export DIR     # here: writes DIR/resnet.onnx and DIR/chips.npz (LFW chips)
    python benchmarks/onnx_threads.py --dir DIR        # anywhere: the measurements
"""
import argparse
import multiprocessing as mp
import os
import time

import numpy as np
import onnxruntime as ort

HERE = ""
chips = ref = None


def export(folder: str) -> None:
    import glob
    import shutil

    from faceindex import images
    from faceindex.config import Settings
    from faceindex.pipeline import FacePipeline

    os.makedirs(folder, exist_ok=True)
    p = FacePipeline(Settings(model="dlib", backend="onnx"))  # the dlib pack's models
    out = []
    for f in sorted(glob.glob(os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "lfw", "images",
                                           "A*", "*.jpg")))[:64]:
        px = images.load(f, max_pixels=10**8, max_bytes=10**9).pixels
        d = p.detect(px)
        if d:
            lm = p.models.landmarker
            out.append(lm.chips(px, [lm.shape(px, d[0])])[0])
    c = np.stack(out[:48])
    emb = p.models.embedder
    r = emb.embed(c)
    shutil.copy(emb.model_path, os.path.join(folder, "resnet.onnx"))
    np.savez_compressed(os.path.join(folder, "chips.npz"), chips=c, ref=r)
    print(f"wrote {folder}/resnet.onnx and chips.npz ({len(c)} chips)")

def session(threads, providers=("CPUExecutionProvider",)):
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    return ort.InferenceSession(os.path.join(HERE, "resnet.onnx"), so, providers=list(providers))

def rate(sess, batch=16, seconds=4.0):
    inp = sess.get_inputs()[0].name
    x = np.concatenate([chips] * 4)[: max(batch, 16) * 3]
    sess.run(None, {inp: x[:batch]})
    n = 0
    t = time.perf_counter()
    while time.perf_counter() - t < seconds:
        for i in range(0, len(x), batch):
            sess.run(None, {inp: x[i:i + batch]})
            n += len(x[i:i + batch])
    return n / (time.perf_counter() - t)

def proc(q, batch, folder):
    global HERE, chips, ref
    HERE = folder
    z = np.load(os.path.join(HERE, "chips.npz"))
    chips, ref = z["chips"], z["ref"]
    q.put(rate(session(1), batch))


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--export", help="write the model and chips to this folder and stop")
    ap.add_argument("--dir", default="bench-out/onnx-threads", help="folder with resnet.onnx and chips.npz")
    args = ap.parse_args()
    if args.export:
        export(args.export)
        raise SystemExit(0)
    HERE = args.dir
    z = np.load(os.path.join(HERE, "chips.npz"))
    chips, ref = z["chips"], z["ref"]
    print("onnxruntime", ort.__version__, "providers", ort.get_available_providers(), "cpus", os.cpu_count(), flush=True)
    s = session(1)
    out = s.run(None, {s.get_inputs()[0].name: chips})[0]
    print("cpu max abs diff vs dev machine:", float(np.abs(out - ref).max()), flush=True)
    for th in (1, 2, 4, 8, 16):
        print(f"1 process x {th:2d} threads, batch 16: {rate(session(th)):8.1f} faces/s", flush=True)
    for n in (2, 4, 8, 16):
        ctx = mp.get_context("spawn")
        q = ctx.Queue()
        ps = [ctx.Process(target=proc, args=(q, 16, HERE)) for _ in range(n)]
        for p in ps:
            p.start()
        r = [q.get() for _ in ps]
        for p in ps:
            p.join()
        print(f"{n:2d} processes x 1 thread, batch 16: {sum(r):8.1f} faces/s total", flush=True)
    if "CUDAExecutionProvider" in ort.get_available_providers():
        g = session(1, ("CUDAExecutionProvider", "CPUExecutionProvider"))
        out = g.run(None, {g.get_inputs()[0].name: chips})[0]
        cos = (out * ref).sum(1) / np.linalg.norm(out, axis=1) / np.linalg.norm(ref, axis=1)
        print("cuda max abs diff:", float(np.abs(out - ref).max()), "min cosine:", float(cos.min()))
        for b in (16, 64, 256):
            print(f"cuda batch {b}: {rate(g, b):8.1f} faces/s", flush=True)
    else:
        print("no CUDAExecutionProvider in this onnxruntime build")
