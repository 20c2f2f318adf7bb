"""index.py: exact search, chunking, atomic versions on disk, memory mapping, float16, incremental updates."""
import json
import mmap
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from teachclip_lite import index as index_mod
from teachclip_lite.index import FaissIndex, Index, IndexFormatError, current_version, faiss_available

ROOT = Path(__file__).resolve().parents[1]


def unit(n, d, seed=0):
    x = np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def ids_for(n, prefix="clips/v"):
    return [f"{prefix}{i:05d}.mp4" for i in range(n)]


def backed_by_mmap(a):
    while a is not None and not isinstance(a, mmap.mmap):
        a = a.obj if isinstance(a, memoryview) else getattr(a, "base", None)
    return a is not None


def brute_force(q, x, k):
    s = q @ x.T
    rows = np.argsort(-s, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(s, rows, 1), rows


# ---------------------------------------------------------------------- search

@pytest.mark.parametrize("n,k", [(1, 1), (50, 5), (1000, 10), (2345, 37)])
def test_search_matches_brute_force(n, k):
    x, q = unit(n, 48), unit(9, 48, seed=1)
    scores, rows = Index(x, ids_for(n)).search(q, k)
    ref_s, ref_r = brute_force(q, x, min(k, n))
    assert rows.dtype == torch.long and scores.dtype == torch.float32
    assert rows.shape == (9, min(k, n))
    np.testing.assert_array_equal(rows.numpy(), ref_r)
    np.testing.assert_allclose(scores.numpy(), ref_s, atol=1e-5)


def test_single_query_tensor_and_k_larger_than_corpus():
    x = unit(20, 16)
    index = Index(torch.from_numpy(x), ids_for(20))
    scores, rows = index.search(torch.from_numpy(x[3]).double(), k=100)
    assert rows.shape == (1, 20)
    assert rows[0, 0].item() == 3 and scores[0, 0].item() == pytest.approx(1.0, abs=1e-5)
    assert (scores[0, :-1] >= scores[0, 1:]).all()


@pytest.mark.parametrize("workers", [None, 1, 2, 3])   # None: a small corpus, scored in the caller's threads
def test_chunking_and_workers_give_identical_results(workers):
    x, q = unit(3001, 32), unit(7, 32, seed=2)
    index = Index(x, ids_for(3001))
    ref_s, ref_r = index.search(q, 25, chunk_rows=3001, workers=1)
    for chunk in (1, 10, 257, 1000, 5000):
        s, r = index.search(q, 25, chunk_rows=chunk, workers=workers)
        assert torch.equal(r, ref_r), chunk
        torch.testing.assert_close(s, ref_s, atol=1e-6, rtol=0)


def test_duplicates_are_ordered_by_row_whatever_the_workers():
    x = np.repeat(unit(40, 8), 5, axis=0)         # every vector five times: exact ties everywhere
    index = Index(x, ids_for(200))
    for chunk in (7, 200):
        ref = index.search(x[[20, 100]], 7, chunk_rows=chunk, workers=1)
        assert ref[1][0, :5].tolist() == [20, 21, 22, 23, 24]
        for workers in (None, 1, 2, 3, 2, 3):
            s, r = index.search(x[[20, 100]], 7, chunk_rows=chunk, workers=workers)
            assert torch.equal(r, ref[1]) and torch.equal(s, ref[0])
        for srow, rrow in zip(*ref):                # best first, equal scores by row
            pairs = list(zip((-srow).tolist(), rrow.tolist()))
            assert pairs == sorted(pairs)


def test_search_ids_and_row_lookup():
    x = unit(30, 8)
    index = Index(x, ids_for(30))
    hits = index.search_ids(x[[7, 11]], k=3)
    assert [h[0][0] for h in hits] == ["clips/v00007.mp4", "clips/v00011.mp4"]
    assert hits[0][0][1] == pytest.approx(1.0, abs=1e-5)
    assert index.row("clips/v00011.mp4") == 11 and index.row("nope.mp4") is None
    assert "clips/v00002.mp4" in index and "nope" not in index
    np.testing.assert_allclose(index.vector("clips/v00002.mp4"), x[2])


def test_bad_inputs_say_what_is_wrong():
    x = unit(5, 8)
    with pytest.raises(ValueError, match="duplicate id"):
        Index(x, ["a", "b", "a", "c", "d"])
    with pytest.raises(ValueError, match="4 ids for 5 vectors"):
        Index(x, ["a", "b", "c", "d"])
    with pytest.raises(ValueError, match=r"queries must be \[Q, 8\]"):
        Index(x, list("abcde")).search(np.zeros((2, 9)), 3)


# ---------------------------------------------------------------------- disk

def test_save_load_roundtrip_is_memory_mapped(tmp_path):
    x = unit(400, 24)
    folder = Index(x, ids_for(400), {"backbone": "toy", "frames": 12}).save(tmp_path / "ix")
    assert folder.name == current_version(tmp_path / "ix")
    loaded = Index.load(tmp_path / "ix")
    assert loaded._map is not None and backed_by_mmap(loaded.vectors)  # pages come from the file
    assert loaded.ids == ids_for(400)
    assert loaded.config["backbone"] == "toy" and loaded.config["dim"] == 24 and loaded.config["count"] == 400
    np.testing.assert_array_equal(loaded.vectors, x)
    eager = Index.load(tmp_path / "ix", mmap=False)
    assert eager._map is None and not backed_by_mmap(eager.vectors)
    q = unit(4, 24, seed=5)
    assert torch.equal(loaded.search(q, 10)[1], eager.search(q, 10)[1])
    loaded.vectors[0, 0] = 123.0                          # private mapping: the file never changes
    np.testing.assert_array_equal(Index.load(tmp_path / "ix").vectors, x)


def test_released_pages_search_the_same(tmp_path, monkeypatch):
    """A mapped index larger than RESIDENT_BYTES hands pages back while searching; results must not change."""
    x, q = unit(5000, 64), unit(6, 64, seed=3)
    Index(x, ids_for(5000)).save(tmp_path / "ix")
    loaded = Index.load(tmp_path / "ix")
    ref = loaded.search(q, 10)
    monkeypatch.setattr(index_mod, "RESIDENT_BYTES", 0)
    for _ in range(2):
        s, r = loaded.search(q, 10, chunk_rows=333)
        assert torch.equal(r, ref[1])
        torch.testing.assert_close(s, ref[0], atol=1e-6, rtol=0)


def test_versions_and_cleanup(tmp_path):
    root = tmp_path / "ix"
    for v in range(4):
        Index(unit(10, 4) + v, ids_for(10)).save(root, keep=2)
    assert current_version(root) == "v000004"
    assert sorted(p.name for p in root.iterdir() if p.name.startswith("v")) == ["v000003", "v000004"]
    np.testing.assert_allclose(Index.load(root).vectors, unit(10, 4) + 3)


def test_missing_or_broken_index_names_the_file(tmp_path):
    with pytest.raises(IndexFormatError, match="no index here"):
        Index.load(tmp_path)
    Index(unit(10, 4), ids_for(10)).save(tmp_path)
    folder = tmp_path / current_version(tmp_path)
    (folder / "ids.json").write_text(json.dumps(ids_for(9)))
    with pytest.raises(IndexFormatError, match="ids.json: damaged .its checksum does not match"):
        Index.load(tmp_path)
    (folder / "checksums.json").unlink()   # a version saved without checksums: the shapes still tell
    with pytest.raises(IndexFormatError, match="do not match 9 ids"):
        Index.load(tmp_path)
    (folder / "config.json").write_text("{oops")
    with pytest.raises(IndexFormatError, match="config.json: damaged .not valid JSON"):
        Index.load(tmp_path)
    (tmp_path / "CURRENT").write_text("../../etc\n")
    with pytest.raises(IndexFormatError, match="does not name an index version"):
        Index.load(tmp_path)


def test_damaged_bytes_are_an_error_naming_the_file(tmp_path):
    Index(unit(100, 16), ids_for(100)).save(tmp_path)
    folder = tmp_path / current_version(tmp_path)
    vectors = folder / "vectors.npy"
    raw = bytearray(vectors.read_bytes())
    raw[-64:-32] = b"\xff" * 32   # garbage of the same size: NaNs and 1e38s, no shape changes
    vectors.write_bytes(bytes(raw))
    with pytest.raises(IndexFormatError, match="vectors.npy: damaged .its checksum"):
        Index.load(tmp_path)   # small: verified on every load
    big = Index.load(tmp_path, verify=False)   # a big index skips it on load ...
    with pytest.raises(IndexFormatError, match="vectors.npy: damaged"):
        big.verify()                            # ... and verify() (index --verify, every index run) finds it
    for name, junk in (("config.json", b"{\"dim\": \xff\xfe}"), ("ids.json", b"[\"\xff\"]"), ("CURRENT", b"v\xff\n")):
        Index(unit(10, 4), ids_for(10)).save(tmp_path)
        target = tmp_path / name if name == "CURRENT" else tmp_path / current_version(tmp_path) / name
        target.write_bytes(junk)
        with pytest.raises(IndexFormatError, match=f"{name}: damaged"):
            Index.load(tmp_path)
        (tmp_path / "CURRENT").write_text(sorted(p.name for p in tmp_path.glob("v*"))[-1] + "\n")


def test_empty_index_and_ids_that_are_not_unicode(tmp_path):
    Index(np.zeros((0, 8), np.float32), []).save(tmp_path / "empty")
    empty = Index.load(tmp_path / "empty")
    assert len(empty) == 0 and empty.search_ids(unit(2, 8), 5) == [[], []]
    odd = [f"caf\udce9_{i}.mp4" for i in range(3)]   # a Latin-1 file name read on a UTF-8 system
    Index(unit(3, 8), odd).save(tmp_path / "odd")
    assert Index.load(tmp_path / "odd").ids == odd   # kept losslessly
    assert (tmp_path / "odd" / current_version(tmp_path / "odd") / "ids.json").read_bytes().isascii()


def test_truncated_vectors_file(tmp_path):
    Index(unit(100, 16), ids_for(100)).save(tmp_path)
    path = tmp_path / current_version(tmp_path) / "vectors.npy"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(IndexFormatError, match="vectors.npy: truncated"):
        Index.load(tmp_path)


def test_failed_write_leaves_previous_version(tmp_path, monkeypatch):
    root = tmp_path / "ix"
    Index(unit(10, 4), ids_for(10), {"tag": "old"}).save(root)

    def boom(*a, **kw):
        raise OSError("disk full")

    monkeypatch.setattr(index_mod.os, "rename", boom)
    with pytest.raises(OSError, match="disk full"):
        Index(unit(20, 4), ids_for(20), {"tag": "new"}).save(root)
    monkeypatch.undo()
    assert Index.load(root).config["tag"] == "old"
    assert not any(p.name.startswith(".tmp-") for p in root.iterdir())  # the half-written folder is gone


WRITER = textwrap.dedent("""
    import sys, time
    import numpy as np
    from teachclip_lite import index as ix
    root, pause_at = sys.argv[1], sys.argv[2]
    real_fsync_dir, real_write = ix.fsync_dir, ix._write_synced

    def stop():
        print("paused", flush=True)
        time.sleep(600)

    def fsync_dir(path):
        real_fsync_dir(path)
        if pause_at == "temp-written" and path.name.startswith(".tmp-"):
            stop()

    def write_synced(path, text):
        if pause_at == "renamed" and path.name == ".CURRENT.tmp":
            stop()
        real_write(path, text)

    ix.fsync_dir, ix._write_synced = fsync_dir, write_synced
    x = np.ones((500, 8), np.float32)
    ix.Index(x, [f"n{i}" for i in range(500)], {"tag": "new"}).save(root)
""")


@pytest.mark.parametrize("pause_at", ["temp-written", "renamed"])
def test_reader_during_write_and_kill_mid_write_see_previous_version(tmp_path, pause_at):
    """A writer stopped mid-save: readers get the old version; SIGKILL there loses nothing; the next save tidies up."""
    root = tmp_path / "ix"
    Index(unit(10, 8), ids_for(10), {"tag": "old"}).save(root)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(root), pause_at], stdout=subprocess.PIPE,
                            text=True, env=env)
    try:
        assert proc.stdout.readline().strip() == "paused"
        seen = Index.load(root)                         # a reader while the writer is mid-save
        assert seen.config["tag"] == "old" and len(seen) == 10
        proc.send_signal(signal.SIGKILL)                # crash right there
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    after = Index.load(root)
    assert after.config["tag"] == "old" and after.ids == ids_for(10)
    Index(unit(3, 8), ids_for(3), {"tag": "next"}).save(root)
    assert Index.load(root).config["tag"] == "next"
    assert not any(p.name.startswith(".tmp-") for p in root.iterdir())  # the dead writer's folder went


def test_concurrent_reader_always_sees_a_complete_version(tmp_path):
    root = tmp_path / "ix"
    Index(np.zeros((5, 4), np.float32), ids_for(5), {"tag": 0}).save(root)
    stop, errors, reads = threading.Event(), [], [0]

    def reader():
        while not stop.is_set():
            try:
                idx = Index.load(root)
                tag = idx.config["tag"]
                assert len(idx) == 5 + tag and np.all(idx.vectors == tag), tag
                reads[0] += 1
            except Exception as e:  # noqa: BLE001 - collected and failed below
                errors.append(repr(e))

    t = threading.Thread(target=reader)
    t.start()
    try:
        for tag in range(1, 30):
            Index(np.full((5 + tag, 4), tag, np.float32), ids_for(5 + tag), {"tag": tag}).save(root, keep=1)
            time.sleep(0.002)
    finally:
        stop.set()
        t.join()
    assert not errors, errors[:3]
    assert reads[0] > 0
    assert Index.load(root).config["tag"] == 29


# ---------------------------------------------------------------------- float16

def test_float16_option_halves_storage_and_keeps_ranking(tmp_path):
    x, q = unit(2000, 64), unit(5, 64, seed=9)
    Index(x, ids_for(2000)).save(tmp_path / "f32")
    Index(x, ids_for(2000), dtype="float16").save(tmp_path / "f16")
    size = {d: (tmp_path / d / current_version(tmp_path / d) / "vectors.npy").stat().st_size for d in ("f32", "f16")}
    assert size["f16"] < 0.51 * size["f32"]
    h = Index.load(tmp_path / "f16")
    assert h.dtype == "float16" and h.config["dtype"] == "float16"
    s16, r16 = h.search(q, 10, chunk_rows=300)
    ref_s, ref_r = brute_force(q, x, 10)
    np.testing.assert_allclose(s16.numpy(), ref_s, atol=2e-3)
    assert np.mean([len(set(a) & set(b)) for a, b in zip(r16.numpy(), ref_r)]) >= 9  # float16 rounding may swap near-ties
    s, r = brute_force(q, x.astype(np.float16).astype(np.float32), 10)   # exact on the stored values
    np.testing.assert_array_equal(r16.numpy(), r)


# ---------------------------------------------------------------------- incremental

def test_updated_keeps_replaces_drops_and_sorts():
    x = unit(6, 8)
    old = Index(x, ["a", "b", "c", "d", "e", "f"], {"backbone": "toy"})
    changed = unit(2, 8, seed=4)
    new = old.updated(changed, ["c", "g"], keep=["a", "c", "d", "e"])   # b, f deleted; c changed; g new
    assert new.ids == ["a", "d", "e", "c", "g"]
    np.testing.assert_array_equal(new.vectors[:3], x[[0, 3, 4]])
    np.testing.assert_array_equal(new.vectors[3:], changed)
    assert new.config["backbone"] == "toy" and new.config["count"] == 5
    s = old.updated(changed, ["c", "g"], keep=["a", "c", "d", "e"], sort=True)
    assert s.ids == ["a", "c", "d", "e", "g"]
    np.testing.assert_array_equal(s.vectors[s.row("c")], changed[0])
    assert old.updated(np.zeros((0, 8)), []).ids == old.ids


def test_incremental_rebuild_equals_full_build(tmp_path):
    """Index half, save, load (mapped), add the rest: identical to indexing everything at once."""
    x, names = unit(300, 16), ids_for(300)
    order = np.random.default_rng(0).permutation(300)
    first, rest = order[:150], order[150:]
    Index(x[first], [names[i] for i in first], {"backbone": "toy"}).save(tmp_path / "ix")
    resumed = Index.load(tmp_path / "ix").updated(x[rest], [names[i] for i in rest], sort=True)
    resumed.save(tmp_path / "ix")
    full = Index(x, names, {"backbone": "toy"}).updated(np.zeros((0, 16)), [], sort=True)
    again = Index.load(tmp_path / "ix")
    assert again.ids == full.ids and again.config == full.config
    np.testing.assert_array_equal(again.vectors, full.vectors)


def test_updated_rejects_other_dim_and_keeps_dtype():
    old = Index(unit(4, 8), list("abcd"), dtype="float16")
    with pytest.raises(ValueError, match="dim 4"):
        old.updated(unit(1, 4), ["e"])
    assert old.updated(unit(1, 8), ["e"]).dtype == "float16"


# ---------------------------------------------------------------------- faiss

@pytest.mark.skipif(not faiss_available(), reason="faiss-cpu not installed (optional extra)")
@pytest.mark.parametrize("kind", ["ivf", "hnsw"])
def test_faiss_backend_agrees_with_exact_search(kind):
    x, q = unit(3000, 32), unit(20, 32, seed=6)
    index = Index(x, ids_for(3000))
    _, exact = index.search(q, 10)
    ann = FaissIndex(index, kind, nlist=16, nprobe=16, ef_search=256)   # IVF scanning every cell is exact
    scores, rows = ann.search(q, 10)
    assert rows.shape == (20, 10) and rows.dtype == torch.long
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(rows.tolist(), exact.tolist())])
    assert recall >= (0.999 if kind == "ivf" else 0.9)


def test_faiss_missing_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "faiss", None)
    assert not faiss_available()
    with pytest.raises(ImportError, match="pip install"):
        FaissIndex(Index(unit(4, 8), list("abcd")))
