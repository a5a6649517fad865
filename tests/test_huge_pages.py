"""Graphs served from huge pages (`faiss.read_pinned`, `IndexManager.pin_graph`): the same graph and results as
the mapped one, back to ordinary memory on an add, and swapped in by the manager only while it holds exactly the
live index's faces."""

from __future__ import annotations

import numpy as np
import pytest

from faceindex.vectors import manager as mg
from faceindex.vectors.faiss import load_index, read_pinned
from tests.test_vectors import fill, make, manager, rank_of, unit


@pytest.mark.parametrize("kind", ["hnsw", "hnswsq", "hnswp", "hnswsqp+o"])
def test_a_pinned_graph_returns_what_the_mapped_one_returns_and_reads_itself_in_on_an_add(tmp_path, kind):
    rng = np.random.default_rng(11)
    vecs = unit(rng, 1300, rank=rank_of(kind))
    index = make(kind, vecs[:1000], np.arange(1000))
    index.remove(np.arange(0, 1000, 7))
    index.save(tmp_path / "index")
    mapped = load_index(tmp_path / "index", mmap=True)
    pinned = load_index(tmp_path / "index", mmap=True, pin=True)
    assert pinned.pinned and not mapped.pinned and pinned.kind == index.kind
    queries = np.concatenate([vecs[:40], unit(rng, 20, rank=rank_of(kind))])
    excluded = np.arange(100, 150)
    for got in (pinned.search(queries, 10, exclude=excluded), pinned.search(queries, 1)):
        want = mapped.search(queries, got[1].shape[1], exclude=excluded if got[1].shape[1] == 10 else None)
        np.testing.assert_array_equal(got[1], want[1])
        np.testing.assert_array_equal(got[0], want[0])
    (tmp_path / "index").unlink()  # the file goes: an add reads the graph from the descriptor it holds
    pinned.add(np.arange(1000, 1300), vecs[1000:])
    assert not pinned.pinned and pinned.count == 1300 - len(range(0, 1000, 7))
    assert pinned.search(vecs[1000:1020], 1)[1][:, 0].tolist() == list(range(1000, 1020))
    assert not set(pinned.search(vecs[:50], 10)[1].ravel().tolist()) & set(range(0, 1000, 7))


def test_a_file_faiss_cannot_read_is_refused_whole(tmp_path):
    for name, data in (("empty", b""), ("junk", b"not an index" * 100)):
        (tmp_path / name).write_bytes(data)
        with open(tmp_path / name, "rb") as f, pytest.raises(RuntimeError):
            read_pinned(f.fileno())
    good = make("hnsw", unit(np.random.default_rng(2), 300), np.arange(300))
    good.save(tmp_path / "g")
    (tmp_path / "cut").write_bytes((tmp_path / "g").read_bytes()[:-1000])  # truncated
    with open(tmp_path / "cut", "rb") as f, pytest.raises(RuntimeError):
        read_pinned(f.fileno())


def _graph_manager(tmp_path, n: int = 300):
    rng = np.random.default_rng(3)
    vecs = unit(rng, n + 50, 128)
    catalog, m = manager(tmp_path, index_kind="hnsw")
    ids = fill(catalog, vecs[:n])
    m.index  # noqa: B018 - loads, and builds the graph beside
    m.wait()
    assert m.index.kind == "hnsw" and not m.index.pinned
    return catalog, m, ids, vecs


def test_the_manager_serves_a_pinned_graph_once_it_has_been_saved_and_left_unchanged(tmp_path, monkeypatch):
    monkeypatch.setattr(mg, "PIN_QUIET", 3600.0)
    catalog, m, ids, vecs = _graph_manager(tmp_path)
    before = m.index.search(vecs[:30], 5)
    m.pin_graph()  # nothing has changed since the load: read into huge pages at once
    m.wait()
    pinned = m.index
    assert pinned.pinned
    np.testing.assert_array_equal(pinned.search(vecs[:30], 5)[1], before[1])
    # an add reads it back into ordinary memory; a change within PIN_QUIET leaves it there
    new = fill(catalog, vecs[300:310], start=300)
    m.apply(new, list(vecs[300:310]), [])
    m.finish_batch()
    m.wait()
    assert m.index is pinned and not m.index.pinned
    monkeypatch.setattr(mg, "PIN_QUIET", 0.0)
    m.index  # noqa: B018 - quiet long enough: read the saved graph into huge pages again
    m.wait()
    assert m.index.pinned and m.index is not pinned
    assert m.index.search(vecs[300:310], 1)[1][:, 0].tolist() == new
    # a deletion keeps it pinned (a tombstone is a bit beside the graph) and holds at once
    catalog.delete_faces(new[:2])
    m.forget(new[:2])
    assert m.index.pinned and not set(m.index.search(vecs[300:302], 5)[1].ravel().tolist()) & set(new[:2])
    catalog.close()


def test_the_manager_keeps_its_live_graph_when_it_changed_during_the_read(tmp_path, monkeypatch):
    monkeypatch.setattr(mg, "PIN_QUIET", 0.0)
    catalog, m, ids, vecs = _graph_manager(tmp_path)
    live = m.index
    real = mg.load_index

    def changed_meanwhile(*a, **kw):  # the file is read, then a face is deleted before the swap
        got = real(*a, **kw)
        catalog.delete_faces(ids[:1])
        m.forget(ids[:1])
        return got

    monkeypatch.setattr(mg, "load_index", changed_meanwhile)
    m.pin_graph()
    m.wait()
    assert m._index is live and not live.pinned  # not swapped: the file lacked the deletion
    assert ids[0] not in m.index.search(vecs[:1], 5)[1].ravel().tolist()
    monkeypatch.setattr(mg, "load_index", real)
    m.index  # noqa: B018 - the next access reads the graph saved with the deletion
    m.wait()
    assert m.index.pinned and m.index.tombstones == 1
    assert ids[0] not in m.index.search(vecs[:1], 5)[1].ravel().tolist()
    catalog.close()


def test_graphs_over_the_size_limit_stay_mapped(tmp_path, monkeypatch):
    monkeypatch.setattr(mg, "PIN_QUIET", 0.0)
    monkeypatch.setattr(mg, "PIN_UP_TO", 1000)
    catalog, m, _, _ = _graph_manager(tmp_path)
    m.pin_graph()
    m.wait()
    assert not m.index.pinned
    catalog.close()


def test_a_failed_read_into_huge_pages_leaves_the_live_graph_serving(tmp_path, monkeypatch):
    import errno

    from faceindex.vectors import faiss as fx

    def no_memory(fd):
        raise OSError(errno.ENOMEM, "cannot allocate memory")

    monkeypatch.setattr(mg, "PIN_QUIET", 0.0)
    monkeypatch.setattr(fx, "read_pinned", no_memory)
    catalog, m, ids, vecs = _graph_manager(tmp_path)
    live = m.index
    m.pin_graph()
    m.wait()
    assert m.index is live and not live.pinned
    assert m.index.search(vecs[:5], 1)[1][:, 0].tolist() == ids[:5]
    catalog.close()
