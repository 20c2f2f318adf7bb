"""One vector per video makes search a matrix product: the on-disk index.

The student (like CLIP4Clip) stores a single `dim` vector per video, so a text
query is scored against the whole corpus by one matrix product and a top-k.
This file keeps those vectors on disk and searches them exactly:

    index = Index(vectors, ids, {"backbone": key})      # [N, D] float32 (or float16)
    index.save("runs/my_index")                          # atomic: readers never see half of it
    index = Index.load("runs/my_index")                  # memory-mapped, nothing read up front
    scores, rows = index.search(queries, k=10)           # [Q, k] each, best first
    index.search_ids(queries, k=5)                       # [[(id, score), ...], ...]

On disk, INDEX_DIR holds complete versions and a pointer to the live one:

    INDEX_DIR/CURRENT                 "v000007": the name of the live version
    INDEX_DIR/v000007/vectors.npy     [N, D] float32 or float16
    INDEX_DIR/v000007/ids.json        N strings (e.g. video paths), row order
    INDEX_DIR/v000007/config.json     dim, dtype, count + whatever the caller keeps (backbone, model)
    INDEX_DIR/v000007/checksums.json  sha256 of the vectors' bytes and of ids.json

A damaged file is an `IndexFormatError` that names it: ids and config are checked on every load, the
vectors' checksum on load when they are small (`VERIFY_BYTES`) and otherwise by `Index.verify()`
(`teachclip-lite index --verify`, and every `index` run before it reuses a version).

A save writes the new version into a temporary folder inside INDEX_DIR, fsyncs it,
renames it to the next version name and then replaces CURRENT with `os.replace`.
A reader (or a crash) at any moment therefore sees either the old or the new
version, never a mix. Old versions are removed after the switch (the last `keep`
stay, so a reader that just read CURRENT still finds its files).

Search is chunked over the corpus: per chunk one `torch.mm` of the queries with
the chunk (float16 chunks are converted into a reused float32 buffer small enough
to stay in cache) and a top-k, whose candidates are merged as they pile up; one
worker thread per core pulls chunks, each running torch single-threaded (measured
in bench.py: within the 1.3x budget of one bare matmul + topk, usually below it).
A corpus under `PARALLEL_BYTES` is scored in the calling thread with torch's own
threads instead: there a hand-off to workers costs more than it saves.
Memory stays bounded by the chunk, not the corpus: pages of a memory-mapped
index that do not fit `RESIDENT_BYTES` are handed back to the page cache once
their chunk is scored, so a 1M x 512 index is searched in well under 1.5 GB of
resident memory. `faiss` (optional extra) adds approximate search over the same
vectors: `FaissIndex(index, "ivf")`.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import mmap
import os
import re
import shutil
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from .paths import file_lock, fsync_dir

FORMAT = 1
DTYPES = ("float32", "float16")
CHUNK_BYTES = 16 << 20       # float32 corpus bytes scored per step (fewer, larger steps: less per-op overhead)
CONVERT_BYTES = 4 << 20      # float16 corpus: float32 bytes converted per step (the buffer stays in cache)
PARALLEL_BYTES = 32 << 20    # smaller corpora are scanned in the calling thread (a thread hand-off costs more)
MERGE_EVERY = 64             # chunks whose top-k candidates a worker collects before merging them
RESIDENT_BYTES = 256 << 20   # a mapped index bigger than this is released chunk by chunk while searched
VERIFY_BYTES = 32 << 20      # vectors up to this size are checksummed on every load (about 20 ms); bigger: verify()
_VERSION = re.compile(r"^v(\d{6,})$")
_TMP_PREFIX = ".tmp-"


class IndexFormatError(ValueError):
    """An index folder that is missing, incomplete or inconsistent (the message names the file)."""


class Index:
    """Vectors [N, D] (float32 or float16), N unique string ids, and a JSON-able config dict."""

    def __init__(self, vectors, ids, config: dict | None = None, dtype: str | None = None):
        if isinstance(vectors, torch.Tensor):
            vectors = vectors.detach().cpu().numpy()
        vectors = np.asarray(vectors)
        if vectors.ndim != 2:
            raise ValueError(f"index vectors must be [N, D], got shape {vectors.shape}")
        dtype = dtype or (vectors.dtype.name if vectors.dtype.name in DTYPES else "float32")
        if dtype not in DTYPES:
            raise ValueError(f"index dtype {dtype!r} is not one of {DTYPES}")
        if vectors.dtype != dtype or not vectors.flags.c_contiguous:
            vectors = np.ascontiguousarray(vectors, dtype=dtype)
        if not vectors.flags.writeable:   # torch.from_numpy warns on read-only arrays; we never write
            vectors = vectors.copy()
        ids = [str(i) for i in ids]
        if len(ids) != len(vectors):
            raise ValueError(f"{len(ids)} ids for {len(vectors)} vectors")
        if len(set(ids)) != len(ids):
            seen: set[str] = set()
            dup = next(i for i in ids if i in seen or seen.add(i))
            raise ValueError(f"duplicate id {dup!r} in index ids")
        self.vectors, self.ids = vectors, ids
        self.config = {**(config or {}), "format": FORMAT, "dim": int(vectors.shape[1]), "dtype": dtype,
                       "count": len(ids)}
        self._rows: dict[str, int] | None = None
        self._map: tuple[mmap.mmap, int] | None = None   # (mapping, byte offset of row 0) when loaded mapped
        self.path: Path | None = None                    # the version folder this was loaded from

    @property
    def dim(self) -> int:
        return self.vectors.shape[1]

    @property
    def dtype(self) -> str:
        return self.vectors.dtype.name

    def __len__(self) -> int:
        return len(self.ids)

    def __repr__(self) -> str:
        where = f", path={str(self.path)!r}" if self.path else ""
        return f"Index(count={len(self)}, dim={self.dim}, dtype={self.dtype}{where})"

    # ------------------------------------------------------------------ id <-> row
    def row(self, id: str) -> int | None:
        """Row of `id`, or None when the index does not hold it (dict built on first use)."""
        if self._rows is None:
            self._rows = {v: i for i, v in enumerate(self.ids)}
        return self._rows.get(id)

    def __contains__(self, id: str) -> bool:
        return self.row(id) is not None

    def vector(self, id: str) -> np.ndarray:
        r = self.row(id)
        if r is None:
            raise KeyError(id)
        return np.array(self.vectors[r], dtype=np.float32)

    # ------------------------------------------------------------------ incremental
    def updated(self, vectors, ids, keep=None, sort: bool = False) -> "Index":
        """A new index: this one's rows for the ids kept, plus the given rows.

        `ids` are new or changed videos (their vectors replace old rows of the same id);
        `keep` lists the old ids still wanted (default: all of them), so deleted files
        drop out. Kept vectors are copied, not recomputed. Order: kept rows in their
        old order, then the given ones; `sort=True` orders every row by id, so the
        result does not depend on the order in which videos were added.
        """
        new = Index(vectors, ids, dtype=self.dtype) if len(ids) else None
        if new is not None and new.dim != self.dim:
            raise ValueError(f"new vectors have dim {new.dim}, the index has {self.dim}")
        fresh = set(new.ids) if new is not None else set()
        wanted = None if keep is None else set(keep)
        kept = [i for i in self.ids if i not in fresh and (wanted is None or i in wanted)]
        rows = np.fromiter((self.row(i) for i in kept), dtype=np.int64, count=len(kept))
        parts = [self.vectors[rows]] + ([new.vectors] if new is not None else [])
        all_ids = kept + (new.ids if new is not None else [])
        out = np.concatenate(parts) if len(parts) > 1 else parts[0]
        if sort:
            order = sorted(range(len(all_ids)), key=all_ids.__getitem__)
            out, all_ids = out[order], [all_ids[i] for i in order]
        cfg = {k: v for k, v in self.config.items() if k not in ("format", "dim", "dtype", "count")}
        return Index(out, all_ids, cfg, dtype=self.dtype)

    # ------------------------------------------------------------------ search
    def search(self, queries, k: int = 10, chunk_rows: int | None = None,
               workers: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Exact inner-product top-k: (scores [Q, k] float32, rows [Q, k] int64), best first.

        `queries` is [Q, D] or [D] (tensor or array); vectors are compared as stored
        (the student's are L2-normalised, so scores are cosines). Equal scores are
        ordered by row, so the answer does not depend on how workers shared the
        chunks: the same query on the same index always gives the same result. (Other
        chunk sizes can change a score in its last bit, the matrix kernel's rounding.)
        k is capped at the corpus size. `workers` threads each score whole chunks
        single-threaded (see `_scan`); by default torch's thread count of them, and below
        PARALLEL_BYTES none: the calling thread scores the corpus with torch's own threads
        (one query against 10k x 512 floats: about 2 ms that way against 3 ms on one
        thread, where handing chunks to workers costs more than it saves).
        """
        q = queries if isinstance(queries, torch.Tensor) else torch.as_tensor(np.asarray(queries))
        q = q.detach().to("cpu", torch.float32)
        q = (q[None] if q.ndim == 1 else q).contiguous()
        if q.ndim != 2 or q.shape[1] != self.dim:
            raise ValueError(f"queries must be [Q, {self.dim}], got {tuple(q.shape)}")
        n, k = len(self), min(int(k), len(self))
        if k <= 0 or q.shape[0] == 0:
            return torch.empty(q.shape[0], max(k, 0)), torch.empty(q.shape[0], max(k, 0), dtype=torch.long)
        budget = CHUNK_BYTES if self.vectors.dtype == np.float32 else CONVERT_BYTES
        step = max(1, min(n, chunk_rows or max(256, budget // (4 * self.dim))))
        in_caller = workers is None and self.vectors.nbytes < PARALLEL_BYTES
        if workers is None:
            workers = 1 if in_caller else torch.get_num_threads()
        if workers > 1 and not chunk_rows:
            step = min(step, -(-n // workers))   # at least one chunk per worker
        workers = max(1, min(workers, -(-n // step)))
        spans = iter([(start, min(n, start + step)) for start in range(0, n, step)])
        lock = threading.Lock()

        def take():
            with lock:
                return next(spans, None)

        if in_caller:
            return self._scan(q, k, step, take)
        if workers == 1:
            with single_threaded():
                return self._scan(q, k, step, take)
        parts = _in_workers([lambda: self._scan(q, k, step, take)] * workers)
        return _merge(parts, k)

    def _scan(self, q: torch.Tensor, k: int, step: int, take) -> tuple[torch.Tensor, torch.Tensor]:
        """Score the chunks `take()` hands out until none is left; the top-k of those rows.

        Per chunk: float16 rows are converted into a reused float32 buffer (small enough
        to stay in this core's cache), one `torch.mm` and a top-k; the candidates are
        merged every MERGE_EVERY chunks (memory stays bounded) and at the end. Each
        worker runs this single-threaded and pulls chunks as it goes: no per-operation
        thread barrier (costly when another process holds a core), and a slower worker
        simply takes fewer chunks.
        """
        corpus = torch.from_numpy(self.vectors)
        nq, convert = q.shape[0], corpus.dtype != torch.float32
        buf = torch.empty(step, self.dim) if convert else None
        out = torch.empty(nq * step)
        release = self._map is not None and self.vectors.nbytes > RESIDENT_BYTES
        found = []   # (scores, rows) of each chunk's top-k
        while (span := take()) is not None:
            start, stop = span
            block = corpus[start:stop]
            if convert:
                block = buf[:stop - start].copy_(block)
            scores = torch.mm(q, block.T, out=out[:nq * (stop - start)].view(nq, stop - start))
            s, r = scores.topk(min(k, stop - start), dim=1)
            found.append((s, r + start))
            if len(found) > MERGE_EVERY:
                found = [_merge(found, k)]
            if release:
                self._release(start, stop)
        return _merge(found, k) if found else (torch.empty(nq, 0), torch.empty(nq, 0, dtype=torch.long))

    def search_ids(self, queries, k: int = 10) -> list[list[tuple[str, float]]]:
        """Per query, the k best (id, score) pairs, best first."""
        scores, rows = self.search(queries, k)
        return [[(self.ids[r], float(s)) for s, r in zip(srow.tolist(), rrow.tolist())]
                for srow, rrow in zip(scores, rows)]

    def _release(self, start: int, stop: int) -> None:
        """Hand the scored rows' pages back to the page cache (they stay cached, just not mapped)."""
        mm, offset = self._map
        row_bytes = self.dim * self.vectors.itemsize
        lo = -(-(offset + start * row_bytes) // mmap.PAGESIZE) * mmap.PAGESIZE   # whole pages inside the rows
        hi = (offset + stop * row_bytes) // mmap.PAGESIZE * mmap.PAGESIZE
        if hi > lo:
            mm.madvise(mmap.MADV_DONTNEED, lo, hi - lo)

    # ------------------------------------------------------------------ disk
    def save(self, directory: str | os.PathLike, keep: int = 2) -> Path:
        """Write a new version into `directory` atomically and make it current; returns its folder."""
        root = Path(directory)
        root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f"{_TMP_PREFIX}{os.getpid()}-", dir=root))
        try:
            with open(tmp / "vectors.npy", "wb") as f:
                np.save(f, self.vectors)
                f.flush()
                os.fsync(f.fileno())
            ids_text = json.dumps(self.ids)   # ASCII: ids that are not valid Unicode (file names) survive escaped
            _write_synced(tmp / "ids.json", ids_text)
            _write_synced(tmp / "config.json", json.dumps(self.config, indent=1, sort_keys=True))
            _write_synced(tmp / "checksums.json", json.dumps({"vectors": _sha256(self.vectors),
                                                              "ids": _sha256(ids_text.encode())}))
            fsync_dir(tmp)
            with file_lock(root / ".lock"):   # writers only: version numbering, CURRENT, clean-up
                name = f"v{_last_version(root) + 1:06d}"
                os.rename(tmp, root / name)
                fsync_dir(root)
                _write_synced(root / ".CURRENT.tmp", name + "\n")
                os.replace(root / ".CURRENT.tmp", root / "CURRENT")
                fsync_dir(root)
                _clean(root, name, keep)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return root / name

    def verify(self) -> None:
        """Check the vectors against the checksum saved with them (a no-op for versions saved without one);
        raises IndexFormatError naming the damaged file."""
        sums = getattr(self, "_checksums", None)
        if sums and self.path is not None and sums.get("vectors") != _sha256(self.vectors):
            raise IndexFormatError(f"{self.path / 'vectors.npy'}: damaged (its checksum does not match "
                                   "the one saved with it)")

    @classmethod
    def load(cls, directory: str | os.PathLike, mmap: bool = True, verify: bool | None = None) -> "Index":
        """The last complete version in `directory`; vectors memory-mapped unless mmap=False. The vectors'
        checksum is verified when `verify`, or by default when they are under VERIFY_BYTES."""
        root = Path(directory)
        for _ in range(10):
            name = current_version(root)
            try:
                index = cls._load_version(root / name, mmap)
                if verify or (verify is None and index.vectors.nbytes <= VERIFY_BYTES):
                    index.verify()
                return index
            except FileNotFoundError:
                if current_version(root) == name:   # not a writer cleaning up under us: really missing
                    raise IndexFormatError(f"{root / name}: incomplete index version (files missing)") from None
        raise IndexFormatError(f"{root}: index kept changing while being read")

    @classmethod
    def _load_version(cls, folder: Path, use_mmap: bool) -> "Index":
        config = _read_json(folder / "config.json")
        if not isinstance(config, dict):
            raise IndexFormatError(f"{folder / 'config.json'}: expected a JSON object")
        ids_path = folder / "ids.json"
        ids = _read_json(ids_path)
        sums = _read_json(folder / "checksums.json") if (folder / "checksums.json").exists() else None
        if sums is not None and sums.get("ids") != _sha256(ids_path.read_bytes()):
            raise IndexFormatError(f"{ids_path}: damaged (its checksum does not match the one saved with it)")
        path = folder / "vectors.npy"
        if use_mmap:
            mm, offset, vectors = _map_npy(path)
        else:
            try:
                vectors, mm, offset = np.load(path), None, 0
            except (ValueError, EOFError) as e:
                raise IndexFormatError(f"{path}: unreadable ({e})") from None
        if not isinstance(ids, list) or vectors.shape != (len(ids), config.get("dim")):
            raise IndexFormatError(f"{path}: vectors {vectors.shape} do not match {len(ids)} ids "
                                   f"of dim {config.get('dim')}")
        user = {k: v for k, v in config.items() if k not in ("format", "dim", "dtype", "count")}
        index = cls.__new__(cls)
        index.vectors, index.ids, index._rows = vectors, [str(i) for i in ids], None
        index.config = {**user, "format": config.get("format", FORMAT), "dim": vectors.shape[1],
                        "dtype": vectors.dtype.name, "count": len(ids)}
        index._map = (mm, offset) if mm is not None else None
        index.path, index._checksums = folder, sums
        return index


# ---------------------------------------------------------------------- helpers

def _merge(found: list[tuple[torch.Tensor, torch.Tensor]], k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The k best of several (scores, rows) candidate lists of the same queries."""
    if len(found) == 1:
        return _best(*found[0], k)
    return _best(torch.cat([s for s, _ in found], 1), torch.cat([r for _, r in found], 1), k)


def _best(scores: torch.Tensor, rows: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Each query's k best candidates by score, equal scores by row: a total order, so merging
    partial results in any order (chunks, workers) gives the same answer."""
    rows, by_row = rows.sort(dim=1)
    scores, by_score = scores.gather(1, by_row).sort(dim=1, descending=True, stable=True)
    return scores[:, :k], rows.gather(1, by_score[:, :k])


_POOL: tuple[int, int, ThreadPoolExecutor] | None = None   # (pid, size, pool): search workers


@contextlib.contextmanager
def single_threaded():
    """torch on one thread in this block. Per-op thread teams pay a barrier per op, and on
    a shared machine a barrier waits for a busy core: measured 2-10x slower for small ops."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _in_workers(jobs: list) -> list:
    """Run jobs concurrently on the search pool, each single-threaded (torch releases the GIL)."""
    global _POOL
    if _POOL is None or _POOL[0] != os.getpid() or _POOL[1] < len(jobs):  # new after fork or when too small
        if _POOL is not None and _POOL[0] == os.getpid():
            _POOL[2].shutdown(wait=False)
        _POOL = (os.getpid(), len(jobs), ThreadPoolExecutor(len(jobs), thread_name_prefix="index-search"))
    threads = torch.get_num_threads()

    def one(job):
        with single_threaded():
            return job()

    try:
        return [f.result() for f in [_POOL[2].submit(one, job) for job in jobs]]
    finally:
        torch.set_num_threads(threads)  # set_num_threads also sets the default of new threads: the caller's again


def current_version(directory: str | os.PathLike) -> str:
    """Name of the live version folder (what CURRENT points to)."""
    pointer = Path(directory) / "CURRENT"
    try:
        name = pointer.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        raise IndexFormatError(f"{pointer}: no index here (no CURRENT file)") from None
    except UnicodeDecodeError:
        raise IndexFormatError(f"{pointer}: damaged (not a version name)") from None
    if not _VERSION.match(name):
        raise IndexFormatError(f"{pointer}: does not name an index version ({name[:40]!r})")
    return name


def _last_version(root: Path) -> int:
    nums = [int(m.group(1)) for p in root.iterdir() if (m := _VERSION.match(p.name))]
    return max(nums, default=0)


def _clean(root: Path, current: str, keep: int) -> None:
    """Remove all but the newest `keep` versions (never the current one) and dead writers' temp folders."""
    versions = sorted((p for p in root.iterdir() if _VERSION.match(p.name)), key=lambda p: int(p.name[1:]))
    for p in versions[:-max(1, keep)]:
        if p.name != current:
            shutil.rmtree(p, ignore_errors=True)
    for p in root.glob(f"{_TMP_PREFIX}*"):
        pid = p.name[len(_TMP_PREFIX):].split("-", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(p, ignore_errors=True)


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)         # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:     # exists, owned by someone else
        pass
    return True


def _write_synced(path: Path, text: str) -> None:
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def _read_json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise IndexFormatError(f"{path}: damaged (not valid JSON, line {e.lineno})") from None
    except UnicodeDecodeError as e:
        raise IndexFormatError(f"{path}: damaged (not UTF-8 text at byte {e.start})") from None


def _sha256(data) -> str:
    """sha256 of an array's bytes (read straight from the mapping) or of bytes."""
    if isinstance(data, np.ndarray):
        data = memoryview(np.ascontiguousarray(data).reshape(-1)).cast("B") if data.size else b""
    return hashlib.sha256(data).hexdigest()


def _map_npy(path: Path) -> tuple[mmap.mmap, int, np.ndarray]:
    """numpy's own memory map of a .npy file, copy-on-write (writable for torch, the file never changes):
    (the mapping, for handing pages back; the byte offset of row 0; the [N, D] array)."""
    try:
        vectors = np.load(path, mmap_mode="c")
    except ValueError as e:   # numpy says "mmap length is greater than file size" for a cut file
        what = "truncated" if "length" in str(e) or "size" in str(e) else "not a .npy array"
        raise IndexFormatError(f"{path}: {what} ({e})") from None
    except FileNotFoundError:
        raise   # a writer cleaning up under a reader: Index.load looks again
    except (EOFError, OSError) as e:
        raise IndexFormatError(f"{path}: not a .npy array ({e})") from None
    if not isinstance(vectors, np.memmap) or vectors.ndim != 2 or not vectors.flags.c_contiguous or \
            vectors.dtype.name not in DTYPES:
        raise IndexFormatError(f"{path}: expected a C-ordered [N, D] float32/float16 array, "
                               f"got shape {vectors.shape} {vectors.dtype}")
    return vectors._mmap, vectors.offset, vectors


# ---------------------------------------------------------------------- optional: faiss

def faiss_available() -> bool:
    try:
        import faiss  # noqa: F401
    except ImportError:
        return False
    return True


class FaissIndex:
    """Approximate inner-product search with faiss-cpu (`pip install teachclip-lite[faiss]`).

    kind="ivf": IVF-Flat, `nlist` k-means cells (default sqrt(N)) trained on a sample
    of 40 vectors per cell, `nprobe` cells scanned per query. kind="hnsw": HNSW graph
    with `m` links and `ef_search`. Same (scores, rows) contract as `Index.search`.
    """

    def __init__(self, index: Index, kind: str = "ivf", nlist: int | None = None, nprobe: int = 16,
                 m: int = 32, ef_search: int = 64, seed: int = 0):
        try:
            import faiss
        except ImportError:
            raise ImportError("faiss is not installed: pip install 'teachclip-lite[faiss]' (faiss-cpu)") from None
        self.kind, d, n = kind, index.dim, len(index)
        if kind == "ivf":
            nlist = nlist or max(1, int(np.sqrt(n)))
            self.impl = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, nlist, faiss.METRIC_INNER_PRODUCT)
            sample = np.random.default_rng(seed).choice(n, size=min(n, 40 * nlist), replace=False)
            self.impl.cp.seed = seed
            self.impl.train(np.ascontiguousarray(index.vectors[np.sort(sample)], dtype=np.float32))
            self.impl.nprobe = nprobe
        elif kind == "hnsw":
            self.impl = faiss.IndexHNSWFlat(d, m, faiss.METRIC_INNER_PRODUCT)
            self.impl.hnsw.efSearch = ef_search
        else:
            raise ValueError(f"faiss kind {kind!r} is not 'ivf' or 'hnsw'")
        step = max(1, (64 << 20) // (4 * d))
        for start in range(0, n, step):   # add in float32 slices: a float16 mmap is never copied whole
            self.impl.add(np.ascontiguousarray(index.vectors[start:start + step], dtype=np.float32))

    def search(self, queries, k: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
        q = queries.detach().cpu().numpy() if isinstance(queries, torch.Tensor) else np.asarray(queries)
        q = np.ascontiguousarray(q[None] if q.ndim == 1 else q, dtype=np.float32)
        scores, rows = self.impl.search(q, k)
        return torch.from_numpy(scores), torch.from_numpy(rows.astype(np.int64))
