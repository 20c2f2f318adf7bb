"""Bad input, each kind generated here (PyAV / numpy, nothing downloaded).

The generators are reused by test_cli.py for the end-to-end run over a folder of them.
"""
import fractions
import time

import av
import numpy as np
import pytest
import torch

from teachclip_lite.data import check_caption_lengths, load_dataset
from teachclip_lite.video import (SamplingConfig, VideoDecodeError, display_rotation, is_variable_frame_rate,
                                  load_video, read_all_frames, sample_times, write_video)


# ---------------------------------------------------------------------- generators

def upright(n=6, h=64, w=48):
    """Frames that show which way is up: red band on top, blue band at the bottom."""
    f = np.full((n, h, w, 3), 40, np.uint8)
    f[:, : h // 4, :, 0] = 255
    f[:, -(h // 4):, :, 2] = 255
    return f


def _encode(path, frames, codec="libx264", pix_fmt="yuv420p", rate=10, in_format="rgb24", pts=None,
            time_base=None, rotation=None, options=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as c:
        s = c.add_stream(codec, rate=rate, options=options or {})
        s.width, s.height, s.pix_fmt = frames.shape[2], frames.shape[1], pix_fmt
        if time_base is not None:
            s.time_base = s.codec_context.time_base = time_base
        if rotation is not None:
            s.set_display_rotation(rotation)
        for i, f in enumerate(frames):
            vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format=in_format)
            vf.pts = pts[i] if pts is not None else i
            if time_base is not None:
                vf.time_base = time_base
            for p in s.encode(vf):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


def make_truncated(path):
    full = write_video(path.with_name("full_" + path.name), upright(n=40), fps=10)
    data = full.read_bytes()
    full.unlink()
    path.write_bytes(data[: len(data) // 3])
    return path


def make_zero_byte(path):
    path.write_bytes(b"")
    return path


def make_text_as_video(path):
    path.write_text("this is a meeting agenda, not a video\n" * 40)
    return path


def make_one_frame(path):
    return write_video(path, upright(n=1), fps=10)


def make_odd_size(path):
    """97 x 61 for real: 4:4:4 H.264 has no even-size constraint (write_video would pad)."""
    return _encode(path, upright(n=8, h=61, w=97), pix_fmt="yuv444p")


def make_grayscale(path):
    """A true single-channel stream (FFV1 gray in Matroska)."""
    return _encode(path, upright(n=8)[..., 0], codec="ffv1", pix_fmt="gray", in_format="gray")


def make_rotated(path, rotation=-90):
    """A phone-style clip: stored sideways, with a display matrix that says how to turn it upright."""
    k = {-90: 1, 90: -1, 180: 2}[rotation]
    stored = np.ascontiguousarray(np.rot90(upright(), k=k, axes=(1, 2)))
    return _encode(path, stored, rotation=rotation)


def make_vfr(path):
    """30 frames in the first second, then one frame every 0.5 s for 5 s (screen-recording style)."""
    tb = fractions.Fraction(1, 1000)
    frames = np.zeros((40, 48, 64, 3), np.uint8)
    for i in range(40):
        frames[i, :, (i * 3) % 60:(i * 3) % 60 + 4] = 255
    pts = [i * 33 for i in range(30)] + [1000 + i * 500 for i in range(10)]
    return _encode(path, frames, rate=30, pts=pts, time_base=tb)


def make_long(path, n=6000, w=160, h=120, gop=50):
    """n frames at 25 fps (6000: four minutes) with moving content and a keyframe every `gop` frames."""
    yy, xx = np.mgrid[0:h, 0:w]
    pool = [av.VideoFrame.from_ndarray(np.stack([(xx * 3 + i * 9) % 256, (yy * 5 + i * 4) % 256,
                                                 ((xx + yy) * 2 + i * 13) % 256], -1).astype(np.uint8),
                                       format="rgb24").reformat(format="yuv420p") for i in range(25)]
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=25, options={"preset": "ultrafast", "g": str(gop), "threads": "1"})
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        for i in range(n):
            vf = pool[i % len(pool)]
            vf.pts = i
            for p in s.encode(vf):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


_LONG: dict = {}


@pytest.fixture(scope="session")
def long_clip(tmp_path_factory):
    """Written once per session, also for test_cli.py (which imports this fixture)."""
    if "path" not in _LONG:
        _LONG["path"] = make_long(tmp_path_factory.mktemp("long") / "long.mp4")
    return _LONG["path"]


CFG = SamplingConfig(num_frames=4, size=32)


def _is_upright(frame: torch.Tensor) -> bool:
    """[3,S,S] uint8: red band on top, blue at the bottom."""
    f = frame.float()
    return bool(f[0, :4].mean() > 200 and f[2, :4].mean() < 100 and f[2, -4:].mean() > 200 and f[0, -4:].mean() < 100)


# ---------------------------------------------------------------------- decoding

def test_unreadable_files_fail_with_one_line_naming_the_file(tmp_path):
    for make, reason in ((make_truncated, "truncated|not a readable"), (make_zero_byte, "empty file"),
                         (make_text_as_video, "not a readable video")):
        p = make(tmp_path / f"{make.__name__}.mp4")
        with pytest.raises(VideoDecodeError, match=reason) as e:
            load_video(p, CFG)
        assert str(e.value).startswith(str(p)) and "\n" not in str(e.value)


def test_one_frame_clip_is_padded(tmp_path):
    clip = load_video(make_one_frame(tmp_path / "one.mp4"), CFG)
    assert clip.mask.tolist() == [True, False, False, False] and clip.num_native_frames == 1
    assert _is_upright(clip.frames[0]) and clip.frames[1:].sum() == 0


def test_odd_size_and_grayscale(tmp_path):
    odd = make_odd_size(tmp_path / "odd.mp4")
    with av.open(str(odd)) as c:
        assert (c.streams.video[0].width, c.streams.video[0].height) == (97, 61)   # really odd, not padded
    clip = load_video(odd, CFG)
    assert clip.frames.shape == (4, 3, 32, 32) and clip.mask.all() and _is_upright(clip.frames[0])
    gray = make_grayscale(tmp_path / "gray.mkv")
    with av.open(str(gray)) as c:
        assert c.streams.video[0].codec_context.pix_fmt == "gray"
    clip = load_video(gray, CFG)
    f = clip.frames.int()
    assert clip.mask.all() and (f[:, 0] - f[:, 1]).abs().max() <= 2 and (f[:, 1] - f[:, 2]).abs().max() <= 2
    assert f[:, :, :4].float().mean() > 200 and f[:, :, -4:].float().mean() < 100   # gray, still top-bright


@pytest.mark.parametrize("rotation", [-90, 90, 180])
def test_rotated_metadata_comes_out_upright(tmp_path, rotation):
    p = make_rotated(tmp_path / f"rot{rotation}.mp4", rotation)
    with av.open(str(p)) as c:   # the file really is stored sideways, with a display matrix
        frame = next(c.decode(video=0))
        assert frame.rotation % 360 == rotation % 360 and not _is_upright(
            torch.from_numpy(frame.to_ndarray(format="rgb24")).permute(2, 0, 1))
    assert display_rotation(p) == rotation % 360
    clip = load_video(p, CFG)
    assert clip.mask.all() and all(_is_upright(f) for f in clip.frames)
    frames = read_all_frames(p)
    assert frames.shape == (6, 64, 48, 3)   # portrait again, every frame


def test_variable_frame_rate_is_sampled_uniformly_in_time(tmp_path):
    p = make_vfr(tmp_path / "vfr.mp4")
    clip = load_video(p, SamplingConfig(num_frames=12, size=32))
    # uniform in frame count would spend 9 of 12 samples on the first second; in time they spread out
    assert clip.mask.all() and np.allclose(clip.timestamps, np.linspace(0, 5.5, 12), atol=0.05)
    assert (clip.timestamps > 1.0).sum() >= 8
    cfr = np.arange(100) / 25 + np.random.default_rng(0).uniform(-2e-3, 2e-3, 100)
    assert not is_variable_frame_rate(cfr)                 # timestamp jitter is not VFR
    idx, mask = sample_times(np.array([0, .1, .2, 3.0, 3.1]), 4)
    assert mask.all() and idx.tolist() == [0, 2, 2, 4]     # a frame held long is what the viewer saw


def test_non_ascii_file_name(tmp_path):
    p = write_video(tmp_path / "réunion" / "vidéo_会議.mp4", upright(n=5), fps=10)
    assert load_video(p, CFG).mask.all()


def test_long_clip_is_sampled_by_seeking_not_decoded_whole(long_clip):
    """A four-minute clip: load_video must cost a fraction of decoding every frame.

    CPU time of this process (not wall time, so other load on the machine matters little);
    measured on 2 cores: sampling ~0.15 s, a full decode ~0.65 s. Decoding whole would cost
    at least the full decode.
    """
    load_video(long_clip, CFG)   # warm caches (imports, page cache)

    def cpu(fn):
        t = time.process_time()
        fn()
        return time.process_time() - t

    def decode_all():
        with av.open(str(long_clip)) as c:
            c.streams.video[0].thread_count = 1
            assert sum(1 for _ in c.decode(video=0)) == 6000

    sampled = min(cpu(lambda: load_video(long_clip, SamplingConfig(12, 32))) for _ in range(2))
    full = cpu(decode_all)
    clip = load_video(long_clip, SamplingConfig(12, 32))
    assert clip.num_native_frames == 6000 and clip.indices[-1] == 5999 and clip.mask.all()
    assert sampled < full / 2, (sampled, full)


# ---------------------------------------------------------------------- captions

def test_latin1_csv_and_a_2000_character_caption(tmp_path):
    from teachclip_lite.backbone import BackboneConfig, load_backbone

    write_video(tmp_path / "a.mp4", upright(n=3), fps=10)
    long_caption = ("une personne ouvre la porte du garage et sort la voiture " * 40)[:2000]
    text = f"video,caption\na.mp4,un café crème sur la table\na.mp4,{long_caption}\n"
    (tmp_path / "captions.csv").write_bytes(text.encode("latin-1"))
    ds = load_dataset(tmp_path)
    assert [c.text for c in ds.captions][0] == "un café crème sur la table"
    assert any("not UTF-8" in str(p) for p in ds.problems)
    bb = load_backbone(BackboneConfig("toy", "random"))
    warned = check_caption_lengths(ds, bb.count_tokens, bb.context_length)
    assert len(warned) == 1 and f"captions.csv:3: warning: caption of " in str(warned[0])
    assert "truncated to the tokenizer's context of 32 tokens" in str(warned[0])
    sentence, words, mask = bb.encode_text([c.text for c in ds.captions])   # truncated, not an error
    assert sentence.shape == (2, bb.embed_dim) and mask[1].sum() == bb.context_length
