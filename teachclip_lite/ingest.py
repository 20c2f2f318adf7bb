"""From a folder of videos to a search index that never loses work (what `teachclip-lite index`
and `search` run; notebooks call the same functions).

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
  atomic switch), so `search` during `index` sees the last complete index.
"""
from __future__ import annotations

import hashlib
import json
import os
import signal
import sys
import time
from collections import deque
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .paths import write_atomic

PROG = "teachclip-lite"
JOURNAL = "journal"
INDEX_FORMAT = "teachclip-lite video index 1"
COMMIT_VIDEOS = 8          # videos per committed batch ...
COMMIT_SECONDS = 5.0       # ... or fewer, when this long has passed since the last commit
DECODE_TIMEOUT = 600.0     # seconds one file may take to decode before it is given up

class UserError(Exception):
    """A failure the user can act on; str() is the one line the command line prints."""

    def __init__(self, message: str, code: int = 1):
        super().__init__(message)
        self.code = code


def warn(msg: str) -> None:
    print(f"{PROG}: warning: {one_line(msg)}", file=sys.stderr, flush=True)


def one_line(text: str, limit: int = 400) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."

# ---------------------------------------------------------------------- the encoder

@dataclass
class Encoder:
    """Turns decoded clips and query texts into comparable unit vectors."""

    backbone: object                # backbone.Backbone
    student: object | None          # student.Student, or None for CLIP4Clip mean pooling
    frames: int
    spec: dict = field(default_factory=dict)   # recorded in the index; a re-run must match it

    def video_vector(self, frames, mask) -> np.ndarray:
        """uint8 frames [T,3,S,S] + bool mask [T] -> float32 [D], L2-normalised."""
        import torch
        import torch.nn.functional as F

        mask = torch.as_tensor(mask, dtype=torch.bool)
        frames = torch.as_tensor(frames)
        emb = torch.zeros(len(mask), self.backbone.embed_dim)
        emb[mask] = self.backbone.encode_frames(frames[mask])[0]   # padded slots stay zero, as in features.py
        with torch.inference_mode():
            if self.student is not None:
                v = self.student.encode_video(emb[None], mask[None])[0][0]
            else:
                unit = F.normalize(emb, dim=-1) * mask[:, None]
                v = F.normalize(unit.sum(0) / mask.sum().clamp(min=1), dim=-1)
        return v.float().numpy()

    def text_vectors(self, texts: list[str]):
        """Queries -> float32 [Q, D], L2-normalised (the student's text head when there is one)."""
        import torch
        import torch.nn.functional as F

        sentence, words, word_mask = self.backbone.encode_text(list(texts))
        with torch.inference_mode():
            if self.student is not None:
                return self.student.encode_text(sentence, words, word_mask).float()
            return F.normalize(sentence.float(), dim=-1)

    def describe(self) -> str:
        return describe_spec(self.spec)


def describe_spec(spec: dict) -> str:
    how = f"student {spec.get('model')} ({spec.get('student_kind')})" if spec.get("pooling") == "student" \
        else "mean pooling"
    return f"backbone {spec.get('backbone')}, {spec.get('frames')} frames, {how}"


def _same_encoder(a: dict, b: dict) -> bool:
    keys = ("backbone", "frames", "size", "pooling", "model_sha")   # not paths: folders get moved
    return all(a.get(k) == b.get(k) for k in keys)


def read_model(path: str | os.PathLike):
    """A student checkpoint and the backbone it was trained on: (Student, {"name", "pretrained", "key"}).

    `train` stores the backbone in the checkpoint; for bare student checkpoints (e.g. those
    `experiments.run_experiments` writes) a backbone.json in its folder or up to three above counts.
    """
    import torch

    from .student import Student

    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: model checkpoint not found (train one with `{PROG} train --config CONFIG.yaml`)")
    try:
        student = Student.load(path)
    except ValueError as e:
        raise UserError(f"{e}; pass a checkpoint written by `{PROG} train` (OUT/model.pt)") from None
    try:
        meta = torch.load(path, map_location="cpu", weights_only=True).get("teachclip_lite") or {}
    except Exception:
        meta = {}
    backbone = meta.get("backbone")
    if backbone is None:
        for folder in [path.parent, *list(path.parents)[1:4]]:
            if (folder / "backbone.json").is_file():
                backbone = json.loads((folder / "backbone.json").read_text(encoding="utf-8"))
                break
    if not backbone or "name" not in backbone:
        raise UserError(f"{path}: the checkpoint does not say which backbone it was trained on; use one written "
                       f"by `{PROG} train`, or put a backbone.json ({{\"name\": \"toy\", \"pretrained\": null}}) "
                       "next to it")
    return student, backbone


def load_encoder(toy: bool = False, backbone: str | None = None, pretrained: str | None = None,
                 model: str | os.PathLike | None = None, frames: int | None = None) -> Encoder:
    """The encoder the `index` flags describe (defaults: ViT-B-32 with the `openai` weights, 12 frames)."""
    from .backbone import BackboneConfig, file_digest, load_backbone, resolve_weights

    student, model_sha, kind = None, None, None
    if model is not None:
        student, meta = read_model(model)
        student.eval()
        cfg = BackboneConfig(meta["name"], meta.get("pretrained"))
        model_sha = file_digest(Path(model), 16)
        kind = student.cfg.kind
        frames = frames or student.cfg.num_frames
        if student.cfg.uses_temporal and frames > student.cfg.num_frames:
            raise UserError(f"{model}: this student was trained with {student.cfg.num_frames} frames and has a "
                           f"temporal module; use --frames {student.cfg.num_frames} or fewer")
        key = resolve_weights(cfg)[2]
        if meta.get("key") and meta["key"] != key:
            raise UserError(f"{model}: trained on backbone {meta['key']}, but that backbone now loads as {key} "
                           "(its weights changed); retrain, or restore the original backbone weights")
    elif toy:
        cfg = BackboneConfig("toy")
    else:
        cfg = BackboneConfig(backbone or "ViT-B-32", pretrained)
    frames = 12 if frames is None else int(frames)
    if frames < 1:
        raise UserError(f"--frames must be at least 1 (got {frames})")
    bb = load_backbone(cfg)
    if student is not None and student.cfg.dim != bb.embed_dim:
        raise UserError(f"{model}: the student works on {student.cfg.dim}-d features, the backbone gives "
                       f"{bb.embed_dim}-d; the checkpoint's backbone record is wrong")
    pre = cfg.pretrained
    if pre and Path(pre).expanduser().is_file():
        pre = str(Path(pre).expanduser().resolve())
    spec = {"backbone": bb.key, "backbone_name": cfg.name, "pretrained": pre, "frames": int(frames),
            "size": int(bb.image_size), "pooling": "student" if student is not None else "meanP",
            "model": str(Path(model).resolve()) if model is not None else None, "model_sha": model_sha,
            "student_kind": kind}
    return Encoder(bb, student, int(frames), spec)


def encoder_from_spec(spec: dict) -> Encoder:
    """Rebuild the encoder an index was built with (for `search`), checking nothing changed under it."""
    from .backbone import BackboneConfig, file_digest, load_backbone

    student = None
    if spec.get("pooling") == "student":
        path = Path(spec.get("model") or "")
        if not path.is_file():
            raise UserError(f"{path}: the model this index was built with is gone; put it back, or re-index")
        if file_digest(path, 16) != spec.get("model_sha"):
            raise UserError(f"{path}: the model changed since this index was built; re-index with it")
        student, _ = read_model(path)
        student.eval()
    bb = load_backbone(BackboneConfig(spec["backbone_name"], spec.get("pretrained")))
    if bb.key != spec["backbone"]:
        raise UserError(f"the index was built with backbone {spec['backbone']}, but it now loads as {bb.key} "
                       "(its weights changed); re-index")
    return Encoder(bb, student, spec["frames"], spec)


# ---------------------------------------------------------------------- decoding in a child process

def _die_with_parent() -> None:
    """Linux: have the kernel kill this process when its parent dies (even by SIGKILL)."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)   # PR_SET_PDEATHSIG
    except Exception:
        pass


def _decode_worker(conn, other, sampling, parent: int, quiet: bool) -> None:
    other.close()
    _die_with_parent()
    if os.getppid() != parent:
        return
    signal.signal(signal.SIGINT, signal.SIG_IGN)   # Ctrl-C is the parent's business
    import torch

    from .video import VideoDecodeError, load_video

    torch.set_num_threads(1)
    if quiet:   # FFmpeg and decord print to fd 2 about broken files; the parent reports them in one line
        import faulthandler

        faulthandler.disable()
        fd = os.open(os.devnull, os.O_WRONLY)
        os.dup2(fd, 2)
    while True:
        try:
            path = conn.recv()
        except (EOFError, OSError):
            return
        if path is None:
            return
        try:
            clip = load_video(path, sampling)
            msg = ("ok", clip.frames.numpy(), clip.mask.numpy())
        except VideoDecodeError as e:
            msg = ("err", e.reason, e.raw)
        except MemoryError:
            msg = ("err", "out of memory while decoding")
        except Exception as e:  # anything else a strange file provokes
            msg = ("err", one_line(f"{type(e).__name__}: {e}", 200))
        conn.send(msg)


class Decoder:
    """Decodes clips in order, a few ahead of the encoder, in a child process (Linux) so that a file
    that crashes or hangs the decoder costs that file, not the run. Elsewhere: a background thread."""

    def __init__(self, sampling, prefetch: int = 3, timeout: float = DECODE_TIMEOUT, quiet: bool = True):
        import multiprocessing as mp

        self.sampling, self.prefetch, self.timeout, self.quiet = sampling, prefetch, timeout, quiet
        self.ctx = mp.get_context("fork") if sys.platform.startswith("linux") else None
        self.proc = self.conn = None
        if self.ctx is not None:
            self._start()

    def _start(self) -> None:
        parent_end, child_end = self.ctx.Pipe()
        self.proc = self.ctx.Process(target=_decode_worker, daemon=True,
                                     args=(child_end, parent_end, self.sampling, os.getpid(), self.quiet))
        self.proc.start()
        child_end.close()
        self.conn = parent_end

    def close(self) -> None:
        if self.proc is not None:
            try:
                self.conn.send(None)
            except OSError:
                pass
            self.proc.join(timeout=2)
            if self.proc.is_alive():
                self.proc.kill()
                self.proc.join()
            self.conn.close()
            self.proc = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _receive(self):
        start = time.monotonic()
        while True:
            if self.conn.poll(0.2):
                try:
                    return self.conn.recv()
                except (EOFError, OSError):
                    pass
            elif self.proc.is_alive():
                if time.monotonic() - start > self.timeout:
                    self.proc.kill()
                    self.proc.join()
                    return ("err", f"decoding took longer than {self.timeout:.0f} s; skipped")
                continue
            self.proc.join()
            code = self.proc.exitcode
            try:
                why = f"signal {signal.Signals(-code).name}" if code and code < 0 else f"exit status {code}"
            except ValueError:
                why = f"signal {-code}"
            return ("err", f"the decoder crashed on this file ({why}); skipped")

    def map(self, paths):
        """Yield (path, ("ok", frames, mask) | ("err", reason)) in the order of `paths`."""
        if self.ctx is None:
            yield from self._map_thread(paths)
            return
        it, pending = iter(paths), deque()

        def send_next() -> None:
            p = next(it, None)
            if p is not None:
                self.conn.send(str(p))
                pending.append(p)

        for _ in range(self.prefetch):
            send_next()
        while pending:
            res = self._receive()
            head = pending.popleft()
            if res[0] == "err" and not self.proc.is_alive():   # crashed or killed: the rest were lost with it
                self.proc = None
                self._start()
                for p in pending:
                    self.conn.send(str(p))
            yield head, res
            send_next()

    def _map_thread(self, paths):
        from concurrent.futures import ThreadPoolExecutor

        from .video import VideoDecodeError, load_video

        def one(p):
            try:
                clip = load_video(p, self.sampling)
                return ("ok", clip.frames.numpy(), clip.mask.numpy())
            except VideoDecodeError as e:
                return ("err", e.reason, e.raw)
            except Exception as e:
                return ("err", one_line(f"{type(e).__name__}: {e}", 200))

        with ThreadPoolExecutor(1) as pool:
            it, pending = iter(paths), deque()
            for p in it:
                pending.append((p, pool.submit(one, p)))
                if len(pending) > self.prefetch:
                    q, fut = pending.popleft()
                    yield q, fut.result()
            while pending:
                q, fut = pending.popleft()
                yield q, fut.result()


# ---------------------------------------------------------------------- the index folder

@contextmanager
def _run_lock(out: Path):
    """One `index` run per INDEX_DIR at a time (readers never take it)."""
    try:
        import fcntl
    except ImportError:
        yield
        return
    f = open(out / ".index-run.lock", "a+")
    try:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UserError(f"{out}: another `{PROG} index` run is writing this index; wait for it to finish "
                           "(or stop it), then run again") from None
        yield
    finally:
        f.close()


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


def spec_sha(spec: dict) -> str:
    """What makes two encoders give the same vectors (not paths: folders get moved)."""
    keys = ("backbone", "frames", "size", "pooling", "model_sha")
    return hashlib.sha1(json.dumps({k: spec.get(k) for k in keys}, sort_keys=True).encode()).hexdigest()[:16]


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
    from tqdm.auto import tqdm

    from .index import Index, IndexFormatError
    from .video import PERMISSION_DENIED, VIDEO_EXTENSIONS, SamplingConfig, find_videos

    t0 = time.perf_counter()
    video_dir, out = Path(video_dir), Path(out)
    if not video_dir.is_dir():
        raise UserError(f"{video_dir}: no such folder (give the folder that holds your videos)")
    out.mkdir(parents=True, exist_ok=True)
    spec, sha = encoder.spec, spec_sha(encoder.spec)
    report = IndexReport()
    own_decoder = decoder is None
    if own_decoder:   # forked before the lock is taken: the child must not hold it
        decoder = Decoder(SamplingConfig(encoder.frames, encoder.backbone.image_size))
    try:
        with _run_lock(out):
            # 1. what is known: the last complete index, then committed batches of interrupted runs
            known: dict[str, tuple] = {}   # id -> (size, mtime_ns, vector or None, reason or None)
            current = None
            try:
                current = Index.load(out, verify=True)
            except IndexFormatError as e:
                if (out / "CURRENT").exists():   # damaged: say which file, and rebuild from the videos
                    warn(f"{e}; rebuilding the index from the videos")
            if current is not None:
                old = current.config.get("encoder") or {}
                if current.config.get("kind") != INDEX_FORMAT or not _same_encoder(old, spec):
                    raise UserError(f"{out} holds an index built with {describe_spec(old)}; give the same options "
                                   f"to update it, or a new --out to build one with {describe_spec(spec)}")
                files = current.config.get("files") or {}
                for row, vid in enumerate(current.ids):
                    size, mtime = files.get(vid, (-1, -1))
                    known[vid] = (size, mtime, row, None)
                for vid, (size, mtime, reason, *raw) in (current.config.get("errors") or {}).items():
                    known[vid] = (size, mtime, None, reason, *raw)
            jdir = out / JOURNAL
            batches = list(_read_batches(jdir))
            for p, meta, vec in batches:
                if meta.get("encoder_sha") != sha:
                    raise UserError(f"{out} holds an unfinished index built with other options; give the same "
                                   f"options to finish it, or a new --out (or delete {out})")
                for e in meta["entries"]:
                    v = vec[e["row"]] if "row" in e else None
                    known[e["video"]] = (e["size"], e["mtime_ns"], v, e.get("reason"), e.get("raw", e.get("reason")))
            seq = max((int(p.stem[1:]) for p in jdir.glob("b*.npz") if p.stem[1:].isdigit()), default=0)

            # 2. what is on disk now
            names = find_videos(video_dir)
            inside = out.resolve()
            report.ignored = sum(1 for p in video_dir.rglob("*") if p.is_file() and not p.name.startswith(".")
                                 and p.suffix.lower() not in VIDEO_EXTENSIONS and inside not in p.resolve().parents)
            report.broken_links = sorted(p.relative_to(video_dir).as_posix() for p in video_dir.rglob("*")
                                         if p.is_symlink() and not p.exists())
            if not names and current is None and not batches:
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

            todo = [v for v in names if v not in known or known[v][:2] != sig[v] or retry(v)]
            todo_set = set(todo)

            # 3. embed what is new or changed, committing small batches as we go
            if todo:
                jdir.mkdir(exist_ok=True)
                pending: list[dict] = []
                vectors: list[np.ndarray] = []
                last = time.monotonic()

                def commit() -> None:
                    nonlocal seq, pending, vectors, last
                    if pending:
                        seq += 1
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

            # 4. the complete index: every readable file under VIDEO_DIR now, rows sorted by path
            ok = [v for v in names if known[v][3] is None]
            bad = {v: [known[v][0], known[v][1], known[v][3], (known[v][4:5] or [None])[0] or known[v][3]]
                   for v in names if known[v][3] is not None}
            report.errors = [{"video": v, "reason": bad[v][2], "raw": bad[v][3]} for v in sorted(bad)]
            report.failed, report.indexed = len(bad), len(ok)
            report.not_retried = sum(1 for v in bad if v not in todo_set)
            report.reused = report.indexed - report.embedded
            errors_text = "".join(_json_line(e) for e in report.errors)
            if ok or current is not None:   # a folder whose videos were all deleted: an empty, valid index
                dim = encoder.backbone.embed_dim
                vec = np.stack([current.vectors[k[2]] if isinstance(k[2], int) else k[2]
                                for k in (known[v] for v in ok)]).astype(np.float32) if ok else np.zeros((0, dim),
                                                                                                     np.float32)
                config = {"kind": INDEX_FORMAT, "encoder": spec, "video_dir": str(video_dir.resolve()),
                          "files": {v: list(sig[v]) for v in ok}, "errors": bad}
                new = Index(vec, ok, config)
                same = current is not None and current.ids == new.ids and \
                    _strip(current.config) == _strip(new.config) and np.array_equal(current.vectors, new.vectors)
                report.version = current.path.name if same else new.save(out).name
            write_atomic(out / "errors.jsonl", errors_text.encode("utf-8"))
            if report.version:
                for p in jdir.glob("b*.npz") if jdir.is_dir() else []:
                    p.unlink()   # folded into the version just saved
                for p in jdir.glob(".tmp-*") if jdir.is_dir() else []:
                    p.unlink()
    finally:
        if own_decoder:
            decoder.close()
    report.seconds = time.perf_counter() - t0
    return report


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


# ---------------------------------------------------------------------- search

def search_index(index_dir: str | os.PathLike, query: str, k: int = 5, encoder: Encoder | None = None) -> list[dict]:
    """The k best videos for a text query: [{"rank", "score" (cosine), "video"}], best first.

    Equal scores are ordered by path (the index's row order), so results are deterministic.
    """
    from .index import Index, IndexFormatError

    index_dir = Path(index_dir)
    if not index_dir.is_dir():
        raise UserError(f"{index_dir}: no such folder (build an index with `{PROG} index VIDEO_DIR --out "
                       f"{index_dir}`)")
    try:
        index = Index.load(index_dir)
    except IndexFormatError as e:
        if not (index_dir / "CURRENT").exists():
            if (index_dir / JOURNAL).is_dir():
                raise UserError(f"{index_dir}: no complete index yet (an `index` run is in progress or was "
                               f"interrupted); let it finish, or run the same `{PROG} index` command again") from None
            raise UserError(f"{index_dir}: not an index folder (build one with `{PROG} index VIDEO_DIR --out "
                           f"{index_dir}`)") from None
        raise UserError(f"{e}; re-run `{PROG} index` to rebuild it") from None
    if index.config.get("kind") != INDEX_FORMAT:
        raise UserError(f"{index_dir}: not a video index written by `{PROG} index`")
    if not query.strip():
        raise UserError("the query is empty; describe what you look for, e.g. \"a person opens a door\"")
    if k < 1:
        raise UserError(f"-k must be at least 1 (got {k})")
    encoder = encoder or encoder_from_spec(index.config["encoder"])
    n_tok, ctx = encoder.backbone.count_tokens(query), encoder.backbone.context_length
    if n_tok > ctx:
        warn(f"the query is {n_tok} tokens long; only the first {ctx} (the tokenizer's context) are used")
    q = encoder.text_vectors([query])
    hits = index.search_ids(q, k)[0]
    return [{"rank": i + 1, "score": round(float(s), 6), "video": v} for i, (v, s) in enumerate(hits)]
