import numpy as np
import pytest
import torch

from teachclip_lite.video import (SamplingConfig, VideoDecodeError, load_video, probe_video, read_all_frames,
                                  sample_indices, write_video)


def test_uniform_sampling_spans_clip():
    idx, mask = sample_indices(100, 12)
    assert mask.all() and idx[0] == 0 and idx[-1] == 99
    assert np.all(np.diff(idx) > 0)


def test_short_clip_is_padded_with_mask():
    idx, mask = sample_indices(5, 12)
    assert mask.sum() == 5 and list(idx[:5]) == [0, 1, 2, 3, 4] and (idx[5:] == -1).all()


def test_fps_sampling():
    idx, mask = sample_indices(300, 12, video_fps=30, fps=1)   # 10 s clip at 1 fps -> 10 frames
    assert mask.sum() == 10 and list(idx[:10]) == list(range(0, 300, 30))
    idx, mask = sample_indices(3000, 12, video_fps=30, fps=1)  # 100 s: thinned to 12
    assert mask.all() and idx[-1] == 2970


def _frames(n=20, h=48, w=64):
    f = np.zeros((n, h, w, 3), np.uint8)
    for i in range(n):
        f[i, :, (i * 3) % w:(i * 3) % w + 8] = (255, 0, 0)
    return f


def test_write_and_decode_roundtrip(tmp_path):
    p = write_video(tmp_path / "a.mp4", _frames(), fps=10)
    assert probe_video(p) == (20, 10.0)
    clip = load_video(p, SamplingConfig(num_frames=12, size=32))
    assert clip.frames.shape == (12, 3, 32, 32) and clip.frames.dtype == torch.uint8
    assert clip.mask.all() and np.isclose(clip.timestamps[1], clip.indices[1] / 10)
    assert clip.frames[:, 0].float().mean() > clip.frames[:, 2].float().mean()  # red stripe survives
    assert read_all_frames(p).shape == (20, 48, 64, 3)
    assert not list(tmp_path.glob(".*tmp*"))  # atomic write leaves nothing behind


def test_short_clip_decodes_with_padding(tmp_path):
    p = write_video(tmp_path / "short.mp4", _frames(n=3), fps=10)
    clip = load_video(p, SamplingConfig(num_frames=8, size=32))
    assert clip.mask.tolist() == [True] * 3 + [False] * 5
    assert clip.frames[3:].sum() == 0


def test_zero_byte_file_error(tmp_path):
    p = tmp_path / "empty.mp4"
    p.write_bytes(b"")
    with pytest.raises(VideoDecodeError, match=r"empty.mp4: empty file"):
        load_video(p)


def test_missing_and_non_video_errors(tmp_path):
    with pytest.raises(VideoDecodeError, match="nope.mp4: file not found"):
        load_video(tmp_path / "nope.mp4")
    p = tmp_path / "text.mp4"
    p.write_text("this is not a video\n" * 50)
    with pytest.raises(VideoDecodeError, match=r"text.mp4: not a readable video"):
        load_video(p)


def test_truncated_file_error(tmp_path):
    p = write_video(tmp_path / "full.mp4", _frames(n=40), fps=10)
    data = p.read_bytes()
    t = tmp_path / "truncated.mp4"
    t.write_bytes(data[: len(data) // 3])
    with pytest.raises(VideoDecodeError) as e:
        load_video(t)
    assert str(e.value).startswith(str(t)) and "\n" not in str(e.value)
