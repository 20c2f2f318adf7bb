"""From a folder of videos to a search index that never loses work: the journaled build that
`teachclip-lite index` runs (notebooks call the same function; the encoder is encoder.py, the decoder
child decoder.py, search search.py).

- every video file under the folder (any depth) becomes one vector: the frozen
  backbone's frame embeddings, L2-normalised, averaged and normalised again
  (CLIP4Clip meanP), or a trained TeachCLIP student's video vector;
- files that cannot be decoded are listed in INDEX_DIR/errors.jsonl, not fatal;
  decoding runs in a child process, so a file that crashes or hangs the decoder
  costs that file only;
- results are committed in small atomic batches (INDEX_DIR/journal/), so a run
  killed at any moment keeps what it committed; the next run goes on from there
  and ends with the same index an uninterrupted run gives (rows sorted by path,
  each vector computed from its own file alone);
- a re-run embeds only new or changed files (size and modification time);
- the searchable index is written by `index.Index.save` (new version, then an
  atomic switch), so `search` during `index` sees the last complete index;
- under torchrun (`torchrun --nproc_per_node=N -m teachclip_lite index ...`) each rank embeds every N-th
  file of what is to do into the same journal (its own batch numbers), and rank 0 writes the version.
"""
from __future__ import annotations

import json
import os
import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import distributed
from .decoder import Decoder
from .encoder import Encoder, describe_spec, same_encoder, spec_sha
from .errors import PROG, UserError, warn
from .paths import file_lock, write_atomic

JOURNAL = "journal"
INDEX_FORMAT = "teachclip-lite video index 1"
COMMIT_VIDEOS = 8          # videos per committed batch ...
COMMIT_SECONDS = 5.0       # ... or fewer, when this long has passed since the last commit


@contextmanager
def _run_lock(out: Path):
    """One `index` run per INDEX_DIR at a time (readers never take it)."""
    lock = file_lock(out / ".index-run.lock", wait=False)
    try:
        lock.__enter__()
    except BlockingIOError:
        raise UserError(f"{out}: another `{PROG} index` run is writing this index; wait for it to finish "
                        "(or stop it), then run again") from None
    try:
        yield
    finally:
        lock.__exit__(None, None, None)


def _commit_batch(jdir: Path, seq: int, encoder_sha: str, entries: list[dict], vectors: list[np.ndarray],
                  dim: int) -> None:
    """One journal batch, atomically: a reader (or the next run) sees all of it or none."""
    import io

    buf = io.BytesIO()
    vec = np.stack(vectors).astype(np.float32) if vectors else np.zeros((0, dim), np.float32)
    meta = json.dumps({"encoder_sha": encoder_sha, "entries": entries})   # ASCII: odd file names stay escaped
    np.savez(buf, vectors=vec, meta=np.array(meta))
    write_atomic(jdir / f"b{seq:08d}.npz", buf.getvalue())


def _read_batches(jdir: Path):
    """(path, meta, vectors) of every readable committed batch, oldest first."""
    if not jdir.is_dir():
        return
    for p in sorted(jdir.glob("b*.npz")):
        try:
            with np.load(p, allow_pickle=False) as z:
                meta, vec = json.loads(str(z["meta"])), np.array(z["vectors"], dtype=np.float32)
        except Exception as e:   # a damaged batch: its videos are simply embedded again
            warn(f"{p}: unreadable journal batch ignored ({type(e).__name__}); its videos will be re-embedded")
            continue
        yield p, meta, vec


@dataclass
class IndexReport:
    indexed: int = 0        # videos in the final index
    embedded: int = 0       # of which embedded in this run
    reused: int = 0         # of which taken over from earlier (complete or interrupted) runs
    failed: int = 0         # unreadable files (errors.jsonl)
    not_retried: int = 0    # of which unchanged since they failed in an earlier run, so not tried again
    ignored: int = 0        # files under VIDEO_DIR that are not videos (by extension)
    broken_links: list = field(default_factory=list)   # symlinks to nothing (or to themselves), skipped
    frames: int = 0         # frames decoded in this run
    seconds: float = 0.0
    version: str = ""       # the index version folder now live
    errors: list = field(default_factory=list)


def build_index(video_dir: str | os.PathLike, out: str | os.PathLike, encoder: Encoder, progress: bool = True,
                decoder: Decoder | None = None, commit_videos: int = COMMIT_VIDEOS,
                commit_seconds: float = COMMIT_SECONDS, retry_failed: bool = False) -> IndexReport:
    """Embed every video under `video_dir` into the index at `out` (see the module docstring). Files that
    failed before are tried again when they change, when a permission problem is gone, or with
    `retry_failed`. A damaged index version is reported and rebuilt from the videos."""
    from .video import SamplingConfig

    t0 = time.perf_counter()
    video_dir, out = Path(video_dir), Path(out)
    if not video_dir.is_dir():
        raise UserError(f"{video_dir}: no such folder (give the folder that holds your videos)")
    out.mkdir(parents=True, exist_ok=True)
    report = IndexReport()
    own_decoder = decoder is None
    if own_decoder:   # forked before the lock is taken: the child must not hold it
        decoder = Decoder(SamplingConfig(encoder.frames, encoder.backbone.image_size))
    n, rank = distributed.size(), distributed.rank()
    try:
        with _run_lock(out) if rank == 0 else nullcontext():   # under torchrun rank 0 holds it for all
            distributed.barrier()
            current, known, seq = _known(out, encoder.spec)                          # 1. what earlier runs did
            names, sig, todo = _on_disk(video_dir, out, known, current is not None or seq > 0, retry_failed,
                                        report)                                         # 2. what is there now
            if todo:                                                                    # 3. embed what is new
                _embed(todo[rank::n], video_dir, out / JOURNAL, seq + rank + 1 - n, sig, known, decoder, encoder,
                       report, progress and rank == 0, commit_videos, commit_seconds, step=n)
            if n > 1:   # every rank's batches are committed: rank 0 reads them back and writes the version
                distributed.barrier()
                report.embedded, report.frames = distributed.total(report.embedded), distributed.total(report.frames)
                if rank == 0:
                    current, known, _ = _known(out, encoder.spec)
            if rank == 0:
                _finish(names, sig, known, current, set(todo), video_dir, out, encoder, report)   # 4. the new version
            distributed.barrier()
    finally:
        if own_decoder:
            decoder.close()
    report.seconds = time.perf_counter() - t0
    return report


# A known video: (size, mtime_ns, vector | row of the current index | None, failure reason or None, raw reason)

def _known(out: Path, spec: dict):
    """(the last complete index or None, id -> known entry, the last committed journal batch number): the last
    complete version first, then the batches an interrupted run committed after it."""
    from .index import Index, IndexFormatError

    known: dict[str, tuple] = {}
    current = None
    try:
        current = Index.load(out, verify=True)
    except IndexFormatError as e:
        if (out / "CURRENT").exists():   # damaged: say which file, and rebuild from the videos
            warn(f"{e}; rebuilding the index from the videos")
    if current is not None:
        old = current.config.get("encoder") or {}
        if current.config.get("kind") != INDEX_FORMAT or not same_encoder(old, spec):
            raise UserError(f"{out} holds an index built with {describe_spec(old)}; give the same options "
                            f"to update it, or a new --out to build one with {describe_spec(spec)}")
        files = current.config.get("files") or {}
        for row, vid in enumerate(current.ids):
            size, mtime = files.get(vid, (-1, -1))
            known[vid] = (size, mtime, row, None)
        for vid, (size, mtime, reason, *raw) in (current.config.get("errors") or {}).items():
            known[vid] = (size, mtime, None, reason, *raw)
    jdir, sha = out / JOURNAL, spec_sha(spec)
    for _, meta, vec in _read_batches(jdir):
        if meta.get("encoder_sha") != sha:
            raise UserError(f"{out} holds an unfinished index built with other options; give the same "
                            f"options to finish it, or a new --out (or delete {out})")
        for e in meta["entries"]:
            v = vec[e["row"]] if "row" in e else None
            known[e["video"]] = (e["size"], e["mtime_ns"], v, e.get("reason"), e.get("raw", e.get("reason")))
    seq = max((int(p.stem[1:]) for p in jdir.glob("b*.npz") if p.stem[1:].isdigit()), default=0)
    return current, known, seq


def _on_disk(video_dir: Path, out: Path, known: dict, have_index: bool, retry_failed: bool, report: IndexReport):
    """(video names, name -> (size, mtime_ns), the names to embed now: new, changed, or failed and worth
    another try); counts the other files and the links to nothing."""
    from .video import PERMISSION_DENIED, VIDEO_EXTENSIONS, find_videos

    names = find_videos(video_dir)
    inside = out.resolve()
    report.ignored = sum(1 for p in video_dir.rglob("*") if p.is_file() and not p.name.startswith(".")
                         and p.suffix.lower() not in VIDEO_EXTENSIONS and inside not in p.resolve().parents)
    report.broken_links = sorted(p.relative_to(video_dir).as_posix() for p in video_dir.rglob("*")
                                 if p.is_symlink() and not p.exists())
    if not names and not have_index:
        raise UserError(f"{video_dir}: no video files here or in its subfolders "
                        f"(looked for {', '.join(VIDEO_EXTENSIONS)})")
    sig = {}
    for v in names:
        try:
            st = (video_dir / v).stat()
            sig[v] = (st.st_size, st.st_mtime_ns)
        except OSError as e:
            sig[v] = (-1, -1)
            known[v] = (-1, -1, None, f"cannot read the file ({e.strerror})")

    def retry(v) -> bool:   # a failure worth trying again although the file did not change
        reason = known[v][3]
        return reason is not None and (retry_failed or (reason == PERMISSION_DENIED and
                                                        os.access(video_dir / v, os.R_OK)))

    return names, sig, [v for v in names if v not in known or known[v][:2] != sig[v] or retry(v)]


def _embed(todo: list[str], video_dir: Path, jdir: Path, seq: int, sig: dict, known: dict, decoder: Decoder,
           encoder: Encoder, report: IndexReport, progress: bool, commit_videos: int, commit_seconds: float,
           step: int = 1) -> None:
    """Decode (in the decoder child, a few ahead) and encode every name of `todo`, committing small atomic
    journal batches as it goes (numbered seq + step, seq + 2 step, ...: under torchrun the ranks interleave);
    a Ctrl-C commits what is done before it stops."""
    from tqdm.auto import tqdm

    jdir.mkdir(parents=True, exist_ok=True)
    sha = spec_sha(encoder.spec)
    pending: list[dict] = []
    vectors: list[np.ndarray] = []
    last = time.monotonic()

    def commit() -> None:
        nonlocal seq, pending, vectors, last
        if pending:
            seq += step
            _commit_batch(jdir, seq, sha, pending, vectors, encoder.backbone.embed_dim)
            for e in pending:
                known[e["video"]] = (e["size"], e["mtime_ns"], vectors[e["row"]] if "row" in e else None,
                                     e.get("reason"), e.get("raw"))
        pending, vectors, last = [], [], time.monotonic()

    bar = tqdm(total=len(todo), desc="index", unit="video", dynamic_ncols=True, disable=not progress)
    try:
        for vid, res in decoder.map([video_dir / v for v in todo]):
            vid = Path(vid).relative_to(video_dir).as_posix()
            size, mtime = sig[vid]
            if res[0] == "ok":
                pending.append({"video": vid, "size": size, "mtime_ns": mtime, "row": len(vectors)})
                vectors.append(encoder.video_vector(res[1], res[2]))
                report.frames += int(res[2].sum())
                report.embedded += 1
            else:
                pending.append({"video": vid, "size": size, "mtime_ns": mtime, "reason": res[1],
                                "raw": res[2] if len(res) > 2 else res[1]})
            bar.update(1)
            if len(pending) >= commit_videos or time.monotonic() - last >= commit_seconds:
                commit()
    except KeyboardInterrupt:
        commit()   # keep what is done; the next run goes on from here
        raise
    finally:
        bar.close()
    commit()


def _finish(names: list[str], sig: dict, known: dict, current, todo: set, video_dir: Path, out: Path,
            encoder: Encoder, report: IndexReport) -> None:
    """The complete index: every readable file under VIDEO_DIR now, rows sorted by path, saved as a new
    version (unless nothing changed); errors.jsonl; the journal folded in."""
    from .index import Index

    ok = [v for v in names if known[v][3] is None]
    bad = {v: [known[v][0], known[v][1], known[v][3], (known[v][4:5] or [None])[0] or known[v][3]]
           for v in names if known[v][3] is not None}
    report.errors = [{"video": v, "reason": bad[v][2], "raw": bad[v][3]} for v in sorted(bad)]
    report.failed, report.indexed = len(bad), len(ok)
    report.not_retried = sum(1 for v in bad if v not in todo)
    report.reused = report.indexed - report.embedded
    if ok or current is not None:   # a folder whose videos were all deleted: an empty, valid index
        vec = np.stack([current.vectors[k[2]] if isinstance(k[2], int) else k[2] for k in (known[v] for v in ok)]
                       ).astype(np.float32) if ok else np.zeros((0, encoder.backbone.embed_dim), np.float32)
        config = {"kind": INDEX_FORMAT, "encoder": encoder.spec, "video_dir": str(video_dir.resolve()),
                  "files": {v: list(sig[v]) for v in ok}, "errors": bad}
        new = Index(vec, ok, config)
        same = current is not None and current.ids == new.ids and \
            _strip(current.config) == _strip(new.config) and np.array_equal(current.vectors, new.vectors)
        report.version = current.path.name if same else new.save(out).name
    write_atomic(out / "errors.jsonl", "".join(_json_line(e) for e in report.errors).encode("utf-8"))
    jdir = out / JOURNAL
    if report.version and jdir.is_dir():
        for p in [*jdir.glob("b*.npz"), *jdir.glob(".tmp-*")]:
            p.unlink()   # folded into the version just saved


def _json_line(record: dict) -> str:
    """One JSON line, readable UTF-8; a file name that is not valid Unicode is written escaped (\\udcXX)."""
    text = json.dumps(record, ensure_ascii=False)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = json.dumps(record)
    return text + "\n"


def _strip(config: dict) -> dict:
    return {k: v for k, v in config.items() if k not in ("format", "dim", "dtype", "count")}
