"""Reading and writing real video files.

Decoding goes through decord, which seeks to the frames it is asked for, so a
ten-minute clip costs about as much as a ten-second one. Writing goes through
PyAV (libx264), always to a temporary file that is renamed into place, so a
reader never sees half a video. Every decoding failure becomes one
`VideoDecodeError` whose message names the file and the reason.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv", ".gif")


class VideoDecodeError(RuntimeError):
    """A video file that cannot be decoded; str() is '<path>: <reason>'."""

    def __init__(self, path, reason: str):
        self.path, self.reason = str(path), reason
        super().__init__(f"{path}: {reason}")


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
    try:
        vr = decord.VideoReader(str(path), ctx=decord.cpu(0), num_threads=1)
    except Exception as e:  # decord raises DECORDError/RuntimeError with C++ noise
        raise VideoDecodeError(path, f"not a readable video ({_short_reason(e)})") from None
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
    vr = _open(path)
    n, video_fps = len(vr), float(vr.get_avg_fps() or 0.0)
    idx, mask = sample_indices(n, cfg.num_frames, video_fps, cfg.fps if video_fps > 0 else None)
    valid = idx[mask]
    try:
        raw = vr.get_batch(valid.tolist()).asnumpy()  # [t, H, W, 3] uint8, RGB
        ts = vr.get_frame_timestamp(valid.tolist())[:, 0]
    except Exception as e:
        raise VideoDecodeError(path, f"decoding failed, file may be truncated ({_short_reason(e)})") from None
    if raw.ndim != 4 or raw.shape[0] != len(valid) or raw.shape[1] == 0 or raw.shape[2] == 0:
        raise VideoDecodeError(path, f"decoder returned frames of shape {tuple(raw.shape)}")
    frames = resize_center_crop(torch.from_numpy(raw).permute(0, 3, 1, 2), cfg.size)
    out = torch.zeros((cfg.num_frames, 3, cfg.size, cfg.size), dtype=torch.uint8)
    out[: len(valid)] = frames
    stamps = np.full(cfg.num_frames, np.nan)
    stamps[: len(valid)] = ts
    return Clip(out, torch.from_numpy(mask), stamps, idx, n, video_fps)


def read_all_frames(path: str | os.PathLike, size: int | None = None) -> np.ndarray:
    """Every frame of a short clip as uint8 [N,H,W,3] (for previews and pretraining, not for long clips)."""
    path = Path(path)
    vr = _open(path)
    try:
        raw = vr.get_batch(list(range(len(vr)))).asnumpy()
    except Exception as e:
        raise VideoDecodeError(path, f"decoding failed, file may be truncated ({_short_reason(e)})") from None
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
