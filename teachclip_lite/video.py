"""Reading and writing real video files.

Decoding goes through decord, which seeks to the frames it is asked for, so a
ten-minute clip costs about as much as a ten-second one. Writing goes through
PyAV (libx264), always to a temporary file that is renamed into place, so a
reader never sees half a video. Every decoding failure becomes one
`VideoDecodeError` whose message names the file and the reason.

What real disks hold, and how it is handled:
- rotated phone videos (a display matrix in the MP4): decord ignores it (and fails
  outright on 90/270 degrees), so those go through PyAV, which also seeks, and the
  frames are turned upright;
- files decord cannot read at all (newer codecs): PyAV is tried before giving up;
- variable frame rate (screen recordings, some phones): frames are sampled uniformly
  in time rather than in frame count, so a long still stretch is not skipped;
- odd sizes and grayscale decode to RGB like anything else.
"""
from __future__ import annotations

import math
import os
import re
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv", ".gif")


class VideoDecodeError(RuntimeError):
    """A video file that cannot be decoded; str() is '<path>: <reason>' in plain words, `raw` the decoder's own."""

    def __init__(self, path, reason: str, raw: str | None = None):
        self.path, self.reason, self.raw = str(path), reason, raw or reason
        super().__init__(f"{path}: {reason}")


PERMISSION_DENIED = "permission denied (make the file readable, e.g. chmod +r, and run again)"

# What the decoders' messages mean, in words (the raw message is kept beside it: errors.jsonl "raw").
_PLAIN = ((r"st_nb >= 0|no video stream|could not find.*stream|Stream not found", "no video stream in the file "
           "(audio only, or not a video)"),
          (r"codec|Decoder \(|not supported|unsupported|Unknown decoder", "unsupported codec"),
          (r"moov atom not found|av_read_frame failed|End of file|truncat|partial file|Invalid NAL|"
           r"error while decoding|corrupt", "the file is truncated or damaged"),
          (r"Invalid data found when processing input|could not open|ERROR opening|Invalid argument|Error reading",
           "not a readable video (not a video format a decoder knows, or damaged)"))


def plain_reason(raw: str, path=None) -> str:
    """A decoder's message (`av_read_frame failed with 1094995529`, `Check failed: st_nb >= 0`, ...) in words
    (the file's own name, which the message may quote, is left out of the match)."""
    text = raw.replace(str(path), "FILE") if path is not None else raw
    for pattern, words in _PLAIN:
        if re.search(pattern, text, re.IGNORECASE):
            return words
    return f"not a readable video ({raw})"


@dataclass(frozen=True)
class SamplingConfig:
    """How frames are taken from a clip. fps=None means T frames spread uniformly (CLIP4Clip)."""

    num_frames: int = 12
    size: int = 224
    fps: float | None = None

    def key(self) -> str:
        return f"T{self.num_frames}-S{self.size}-fps{self.fps or 'uniform'}"


@dataclass
class Clip:
    frames: torch.Tensor      # uint8 [T, 3, size, size]; padded slots are zeros
    mask: torch.Tensor        # bool [T]; False where the clip had too few frames
    timestamps: np.ndarray    # float [T] seconds; NaN for padding
    indices: np.ndarray       # int [T] native frame index; -1 for padding
    num_native_frames: int
    fps: float


def sample_indices(num_native: int, num_frames: int, video_fps: float | None = None,
                   fps: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Native frame indices to decode, and a validity mask, both of length num_frames.

    Uniform mode follows CLIP4Clip: linspace over the whole clip. With `fps`, frames
    are taken every video_fps/fps native frames and then thinned uniformly to at most
    num_frames. Short clips are padded at the end (index -1, mask False).
    """
    if num_native <= 0 or num_frames <= 0:
        raise ValueError("need a positive number of native and sampled frames")
    if fps is not None:
        if not video_fps or video_fps <= 0 or fps <= 0:
            raise ValueError("fps sampling needs positive video_fps and fps")
        candidates = np.unique(np.floor(np.arange(0, num_native, video_fps / fps)).astype(np.int64))
        candidates = candidates[candidates < num_native]
    else:
        candidates = np.arange(num_native, dtype=np.int64)
    if len(candidates) > num_frames:
        pick = np.linspace(0, len(candidates) - 1, num=num_frames).round().astype(np.int64)
        candidates = candidates[pick]
    idx = np.full(num_frames, -1, dtype=np.int64)
    idx[: len(candidates)] = candidates
    return idx, idx >= 0


def _short_reason(err: Exception) -> str:
    """decord's messages carry C++ file names and timestamps; keep the human part."""
    text = " ".join(str(err).split())
    m = re.search(r"ERROR opening: .*?, (.*)$", text)
    if m:
        text = m.group(1)
    text = re.sub(r"\[\d\d:\d\d:\d\d\] \S+:\d+: ", "", text)
    return text[:200] or type(err).__name__


def _open(path: Path):
    import decord

    if not path.exists():
        raise VideoDecodeError(path, "file not found")
    if path.is_dir():
        raise VideoDecodeError(path, "is a directory, not a video file")
    if path.stat().st_size == 0:
        raise VideoDecodeError(path, "empty file (0 bytes)")
    if not os.access(path, os.R_OK):
        raise VideoDecodeError(path, PERMISSION_DENIED)
    try:
        vr = decord.VideoReader(str(path), ctx=decord.cpu(0), num_threads=1)
    except Exception as e:  # decord raises DECORDError/RuntimeError with C++ noise
        raw = _short_reason(e)
        raise VideoDecodeError(path, plain_reason(raw, path), raw) from None
    if len(vr) == 0:
        raise VideoDecodeError(path, "video has no frames")
    return vr


def resize_center_crop(frames: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 [N,3,H,W] -> uint8 [N,3,size,size]: shorter side to `size`, then centre crop (CLIP's preprocessing)."""
    from torchvision.transforms.v2 import functional as TF

    if frames.shape[-2:] != (size, size):
        frames = TF.resize(frames, size, antialias=True)
        frames = TF.center_crop(frames, [size, size])
    return frames.contiguous()


def probe_video(path: str | os.PathLike) -> tuple[int, float]:
    """(number of frames, frames per second) without decoding pixels."""
    vr = _open(Path(path))
    return len(vr), float(vr.get_avg_fps() or 0.0)


def load_video(path: str | os.PathLike, cfg: SamplingConfig = SamplingConfig()) -> Clip:
    """Decode the sampled frames of one clip, resized and centre-cropped to cfg.size."""
    path = Path(path)
    if path.is_file() and not os.access(path, os.R_OK):
        raise VideoDecodeError(path, PERMISSION_DENIED)
    if display_rotation(path):
        return _load_pyav(path, cfg)
    try:
        vr = _open(path)
    except VideoDecodeError as err:
        if not path.is_file() or path.stat().st_size == 0:
            raise
        try:  # decord (FFmpeg 4) cannot open some files a newer FFmpeg reads fine
            return _load_pyav(path, cfg)
        except VideoDecodeError:
            raise err from None
    n, video_fps = len(vr), float(vr.get_avg_fps() or 0.0)
    idx, mask = _sample(n, cfg, video_fps, lambda: vr.get_frame_timestamp(list(range(n)))[:, 0])
    valid = idx[mask]
    todo = np.unique(valid)
    try:
        raw = vr.get_batch(todo.tolist()).asnumpy()  # [t, H, W, 3] uint8, RGB
        ts = vr.get_frame_timestamp(todo.tolist())[:, 0]
    except Exception as e:
        err = VideoDecodeError(path, "the file is truncated or damaged", _short_reason(e))
        try:  # decord (FFmpeg 4) chokes on some streams a newer FFmpeg reads fine
            return _load_pyav(path, cfg)
        except VideoDecodeError:
            raise err from None
    if raw.ndim != 4 or raw.shape[0] != len(todo) or raw.shape[1] == 0 or raw.shape[2] == 0:
        raise VideoDecodeError(path, f"decoder returned frames of shape {tuple(raw.shape)}")
    pos = np.searchsorted(todo, valid)  # repeated indices (VFR stills) decode once
    return _clip(torch.from_numpy(raw[pos]).permute(0, 3, 1, 2), ts[pos], idx, mask, n, video_fps, cfg)


def _clip(frames: torch.Tensor, ts: np.ndarray, idx: np.ndarray, mask: np.ndarray, n: int, fps: float,
          cfg: SamplingConfig) -> Clip:
    frames = resize_center_crop(frames, cfg.size)
    out = torch.zeros((cfg.num_frames, 3, cfg.size, cfg.size), dtype=torch.uint8)
    k = int(mask.sum())
    out[:k] = frames
    stamps = np.full(cfg.num_frames, np.nan)
    stamps[:k] = ts
    return Clip(out, torch.from_numpy(mask), stamps, idx, n, fps)


def _sample(n: int, cfg: SamplingConfig, video_fps: float, starts) -> tuple[np.ndarray, np.ndarray]:
    """Frame indices to decode: uniform in frame count for constant frame rate (CLIP4Clip),
    uniform in time when the frame rate varies. `starts` gives every frame's start time (lazily)."""
    if n > cfg.num_frames:
        try:
            t = np.asarray(starts(), dtype=np.float64)
        except Exception:
            t = None
        if t is not None and is_variable_frame_rate(t):
            return sample_times(t, cfg.num_frames, cfg.fps)
    return sample_indices(n, cfg.num_frames, video_fps, cfg.fps if video_fps > 0 else None)


def is_variable_frame_rate(starts: np.ndarray, tolerance: float = 1.5) -> bool:
    """True when frame durations differ by more than `tolerance` x the median (NTSC jitter is not VFR)."""
    if len(starts) < 3:
        return False
    d = np.diff(np.asarray(starts, dtype=np.float64))
    if not np.all(np.isfinite(d)) or np.any(d <= 0):
        return False   # broken or unordered timestamps: trust the frame count instead
    med = float(np.median(d))
    return bool(d.max() > tolerance * med or d.min() < med / tolerance)


def sample_times(starts: np.ndarray, num_frames: int, fps: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Like `sample_indices`, but uniform in time: the frame on screen at each sample time.

    A frame held on screen for long (a still in a screen recording) can be picked more than once:
    that is what the viewer saw. Needs more native frames than num_frames (else use sample_indices).
    """
    starts = np.asarray(starts, dtype=np.float64)
    end = starts[-1] + (starts[-1] - starts[0]) / max(1, len(starts) - 1)   # the last frame lasts ~ average
    if fps is not None and fps > 0:
        times = np.arange(starts[0], end, 1.0 / fps)
        if len(times) > num_frames:
            times = times[np.linspace(0, len(times) - 1, num=num_frames).round().astype(np.int64)]
    else:
        times = np.linspace(starts[0], starts[-1], num=num_frames)
    cand = np.clip(np.searchsorted(starts, times + 1e-9, side="right") - 1, 0, len(starts) - 1)
    idx = np.full(num_frames, -1, dtype=np.int64)
    idx[: len(cand)] = cand
    return idx, idx >= 0


# ---------------------------------------------------------------- rotation and the PyAV path

def display_rotation(path: str | os.PathLike) -> int:
    """Degrees (0, 90, 180, 270, counter-clockwise) to turn an MP4/MOV video upright, read from the
    video track's matrix without decoding anything; 0 for other containers or unreadable files."""
    try:
        with open(path, "rb") as f:
            end = os.fstat(f.fileno()).st_size
            head = f.read(8)
            if len(head) < 8 or head[4:8] not in (b"ftyp", b"moov", b"mdat", b"wide", b"free", b"skip"):
                return 0
            for typ, s, e in _boxes(f, 0, end):
                if typ != b"moov":
                    continue
                for typ2, s2, e2 in _boxes(f, s, e):
                    if typ2 != b"trak":
                        continue
                    matrix, video = None, False
                    for typ3, s3, e3 in _boxes(f, s2, e2):
                        if typ3 == b"tkhd":
                            f.seek(s3)
                            d = f.read(min(e3 - s3, 96))
                            off = 40 if d[:1] == b"\x00" else 52
                            if len(d) >= off + 36:
                                matrix = struct.unpack(">9i", d[off:off + 36])
                        elif typ3 == b"mdia":
                            for typ4, s4, _ in _boxes(f, s3, e3):
                                if typ4 == b"hdlr":
                                    f.seek(s4 + 8)
                                    video = f.read(4) == b"vide"
                    if video and matrix:
                        angle = -math.degrees(math.atan2(matrix[1], matrix[0]))
                        k = round(angle / 90)
                        return (k * 90) % 360 if abs(angle - k * 90) < 1 else 0
    except (OSError, struct.error):
        return 0
    return 0


def _boxes(f, start: int, end: int):
    """(type, payload start, box end) of the ISO-BMFF boxes between start and end."""
    pos = start
    while pos + 8 <= end:
        f.seek(pos)
        size, typ = struct.unpack(">I4s", f.read(8))
        head = 8
        if size == 1:
            size, head = struct.unpack(">Q", f.read(8))[0], 16
        elif size == 0:
            size = end - pos
        if size < head or pos + size > end:
            return
        yield typ, pos + head, pos + size
        pos += size


def _load_pyav(path: Path, cfg: SamplingConfig) -> Clip:
    """The sampled frames through PyAV (rotated or decord-unreadable files)."""
    rgb, starts, idx, mask, n, video_fps = _read_pyav(path, lambda n, fps, starts: _sample(n, cfg, fps, lambda: starts))
    frames = torch.from_numpy(np.stack(rgb)).permute(0, 3, 1, 2)
    return _clip(frames, starts[idx[mask]], idx, mask, n, video_fps, cfg)


def _read_pyav(path: Path, choose):
    """Index the packets (no decoding), pick frames with choose(n, fps, starts) -> (idx, mask), then
    seek to the keyframe before each and decode forward to it. Frames come out upright (display matrix).
    Returns (RGB frames for idx[mask], starts [n] seconds, idx, mask, n, fps)."""
    import av

    if not path.exists():
        raise VideoDecodeError(path, "file not found")
    if path.stat().st_size == 0:
        raise VideoDecodeError(path, "empty file (0 bytes)")
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise VideoDecodeError(path, "no video stream")
            stream = container.streams.video[0]
            pts, keys = [], []
            for pkt in container.demux(stream):
                if pkt.pts is None:
                    if pkt.size:
                        raise VideoDecodeError(path, "packets without timestamps "
                                                     "(remux it: ffmpeg -i IN -c copy OUT.mp4)")
                    continue
                pts.append(int(pkt.pts))
                if pkt.is_keyframe:
                    keys.append(int(pkt.pts))
            if not pts:
                raise VideoDecodeError(path, "video has no frames")
            pts = np.unique(pts)
            keys = np.unique(keys) if keys else pts[:1]
            starts = (pts - pts[0]) * float(stream.time_base)
            n = len(pts)
            video_fps = (n - 1) / starts[-1] if n > 1 and starts[-1] > 0 else float(stream.average_rate or 0.0)
            idx, mask = choose(n, video_fps, starts)
            want = np.unique(idx[mask])
            got = _decode_at(container, stream, pts[want], keys)
    except VideoDecodeError:
        raise
    except Exception as e:  # av.error.FFmpegError and friends
        raw = _short_reason(e)
        raise VideoDecodeError(path, plain_reason(raw, path), raw) from None
    if len(got) != len(want):
        raise VideoDecodeError(path, f"the file is truncated or damaged ({len(got)} of {len(want)} "
                                     "sampled frames decoded)")
    pos = np.searchsorted(want, idx[mask])
    return [got[i] for i in pos], starts, idx, mask, n, video_fps


_REFORMATTERS: dict = {}


def _to_rgb(frame) -> np.ndarray:
    """A decoded frame as RGB through this process's own one-thread swscale context. PyAV >= 18.1.1 keeps
    one context per thread in a thread-local, which a forked decoder child inherits from its parent with the
    parent's slice-thread pool but not its threads: reusing or freeing it hung the child (a futex in
    avpriv_slicethread_free). A context made in this process, never freed, inherits nothing."""
    from av.video.reformatter import VideoReformatter

    pid = os.getpid()
    if pid not in _REFORMATTERS:   # a parent's entry stays referenced: freeing it may hang
        _REFORMATTERS[pid] = VideoReformatter()
    try:
        out = _REFORMATTERS[pid].reformat(frame, format="rgb24", threads=1)
    except TypeError:              # PyAV < 17: no threads argument (nor slice threads)
        out = _REFORMATTERS[pid].reformat(frame, format="rgb24")
    return out.to_ndarray()


def _decode_at(container, stream, targets: np.ndarray, keys: np.ndarray) -> list[np.ndarray]:
    """RGB frames at the given pts (sorted), upright; seeks only when a keyframe lies in between."""
    out, frames, current = [], None, None
    for target in targets.tolist():
        key = int(keys[max(0, np.searchsorted(keys, target, side="right") - 1)])
        if frames is None or current is None or current >= target or key > current:
            container.seek(key, stream=stream, backward=True, any_frame=False)
            frames = container.decode(stream)
            current = None
        for frame in frames:
            if frame.pts is None:
                continue
            current = frame.pts
            if frame.pts >= target:
                rgb = _to_rgb(frame)
                k = round(getattr(frame, "rotation", 0) / 90) % 4
                out.append(np.ascontiguousarray(np.rot90(rgb, k=k)) if k else rgb)
                break
        else:
            break   # ran out of frames: truncated
    return out


def read_all_frames(path: str | os.PathLike, size: int | None = None) -> np.ndarray:
    """Every frame of a short clip as uint8 [N,H,W,3] (for previews and pretraining, not for long clips)."""
    path = Path(path)
    if display_rotation(path):
        every = lambda n, fps, starts: (np.arange(n), np.ones(n, dtype=bool))  # noqa: E731
        raw = np.stack(_read_pyav(path, every)[0])
        if size is not None:
            raw = resize_center_crop(torch.from_numpy(raw).permute(0, 3, 1, 2), size).permute(0, 2, 3, 1).numpy()
        return raw
    vr = _open(path)
    try:
        raw = vr.get_batch(list(range(len(vr)))).asnumpy()
    except Exception as e:
        raise VideoDecodeError(path, "the file is truncated or damaged", _short_reason(e)) from None
    if size is not None:
        raw = resize_center_crop(torch.from_numpy(raw).permute(0, 3, 1, 2), size).permute(0, 2, 3, 1).numpy()
    return raw


def write_video(path: str | os.PathLike, frames: np.ndarray, fps: float = 8, crf: int = 18) -> Path:
    """Write uint8 [N,H,W,3] RGB frames as an H.264 MP4, atomically (temp file, then rename)."""
    import av

    path = Path(path)
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8 or len(frames) == 0:
        raise ValueError(f"{path}: frames must be uint8 [N,H,W,3] with N>0, got {frames.dtype} {frames.shape}")
    h, w = frames.shape[1:3]
    if h % 2 or w % 2:  # yuv420p needs even sizes; pad by one pixel rather than fail
        frames = np.pad(frames, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), mode="edge")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")
    try:
        with av.open(str(tmp), mode="w", format="mp4") as container:
            # one thread and no macroblock-tree rate control: with mbtree on, x264 gave
            # different bytes for the same frames now and then; the toy world must be reproducible
            stream = container.add_stream("libx264", rate=int(round(fps)),
                                          options={"crf": str(crf), "threads": "1", "x264-params": "mbtree=0"})
            stream.thread_count = 1
            stream.width, stream.height = frames.shape[2], frames.shape[1]
            stream.pix_fmt = "yuv420p"
            for i, f in enumerate(frames):
                frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24")
                frame.pts = i
                for packet in stream.encode(frame):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def find_videos(folder: str | os.PathLike) -> list[str]:
    """Video files under `folder` (any depth), as sorted POSIX paths relative to it."""
    folder = Path(folder)
    out = [p.relative_to(folder).as_posix() for p in folder.rglob("*")
           if p.is_file() and p.suffix.lower() in VIDEO_EXTENSIONS and not p.name.startswith(".")]
    return sorted(out)
