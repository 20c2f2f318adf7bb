"""The `teachclip-lite` console script, end to end on generated folders.

Most commands run in-process (`cli.main`), which is what the console script calls; the
SIGKILL test and the offline test run real subprocesses.
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from test_ingest import (long_clip, make_grayscale, make_odd_size, make_one_frame, make_rotated,  # noqa: F401
                         make_text_as_video, make_truncated, make_vfr, make_zero_byte, upright)

from teachclip_lite import cli, decoder, features
from teachclip_lite.backbone import TOY_CHECKPOINT
from teachclip_lite.index import Index, current_version
from teachclip_lite.video import write_video

# the real toy CLIP when it is there (it ships with the kit); its architecture with random weights otherwise
TOY = ["--toy"] if TOY_CHECKPOINT.is_file() else ["--backbone", "toy", "--pretrained", "random"]
BAD = {"broken/truncated.mp4", "broken/zero_bytes.mp4", "notes.mp4"}


def run(capsys, *args):
    rc = cli.main([str(a) for a in args])
    out, err = capsys.readouterr()
    return rc, out, err


def _error_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.startswith("teachclip-lite: error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.mark.parametrize("setting, says", [
    ('train: {epochs: "ten"}', "train.epochs: expected a whole number, got 'ten'"),
    ("train: {lr: fast}", "train.lr: expected a number, got 'fast'"),
    ("train: {batch_size: 0}", "train.batch_size: must be >= 2, got 0"),
    ("train: {epochs: -1}", "train.epochs: must be >= 1, got -1"),
    ("train: {lr: 0}", "train.lr: must be > 0, got 0"),
    ("train: [1, 2]", "train: expected a mapping"),
    ("train: {weights: [1, 2]}", "train.weights: expected a list of 3 numbers or null"),
    ("models: meanP", "models: expected a list of names"),
    ('student: {layers: "x"}', "student.layers: expected a whole number, got 'x'"),
    ("backbone: [a]", "backbone: expected a name or a path"),
])
def test_config_values_are_checked_before_any_work(tmp_path, capsys, setting, says):
    (tmp_path / "c.yaml").write_text(f"data: no_such_folder\nout: o\n{setting}\n")
    rc, _, err = run(capsys, "train", "--config", tmp_path / "c.yaml")
    line = _error_line(err)   # the data folder does not exist: the config error comes first, before any work
    assert rc == 1 and f"c.yaml: {says}" in line, line
    assert not (tmp_path / "o").exists()


def test_the_example_config_is_valid_and_names_the_toy_world():
    from teachclip_lite.paths import DATA_DIR
    from teachclip_lite.poc import TRAIN_KEYS, _read_config

    cfg = _read_config(DATA_DIR / "poc.yaml")
    assert set(cfg) <= set(TRAIN_KEYS) and cfg["backbone"] == "toy"
    assert Path(cfg["data"]) == (DATA_DIR / "toy").resolve() and cfg["models"] == ["meanP", "teachclip"]


def test_the_gpu_config_is_the_official_recipe_end_to_end():
    from teachclip_lite.paths import DATA_DIR
    from teachclip_lite.poc import TRAIN_KEYS, _check_settings, _read_config
    from teachclip_lite.train import TrainConfig

    cfg = _read_config(DATA_DIR / "poc_gpu.yaml")
    assert set(cfg) <= set(TRAIN_KEYS)
    _check_settings(DATA_DIR / "poc_gpu.yaml", cfg)
    t = TrainConfig(**cfg["train"])
    assert t.finetune == -1 and t.lr == 1e-4 and t.backbone_lr_mult == 1e-3 and t.afa_lr_mult == 10
    assert (t.epochs, t.batch_size, t.weight_decay, t.warmup) == (10, 120, 0.2, 0.1)


def test_command_line_papercuts(tmp_path, capsys):
    rc, _, err = run(capsys, "index", tmp_path, "--out", tmp_path / "i", "--frames", "0", *TOY)
    assert rc == 2 and "--frames: must be 1 or more, got 0" in _error_line(err)
    rc, _, err = run(capsys, "search", tmp_path, "q", "--bogus")   # the subcommand's help, not the top level's
    assert rc == 2 and "unrecognized arguments: --bogus (see `teachclip-lite search --help`)" in _error_line(err)
    parser = cli._parser()
    for name, sub in parser.commands.items():
        if name in cli.TOOLS:
            continue   # their own parsers answer (below)
        assert sub.description, f"{name} has no description"
        undocumented = [a.dest for a in sub._actions if not a.help]
        assert not undocumented, f"{name}: options without help: {undocumented}"
    for name in cli.TOOLS:   # one console script: `teachclip-lite toy --help` is the toy tool's own help
        with pytest.raises(SystemExit) as e:
            cli.main([name, "--help"])
        assert e.value.code == 0 and "usage:" in capsys.readouterr().out


@pytest.fixture(scope="module")
def messy(tmp_path_factory, tiny_toy, long_clip):  # noqa: F811
    """A folder like a company disk: nested clips, non-ASCII names, and every kind of bad file."""
    root = tmp_path_factory.mktemp("messy") / "videos"
    toy = sorted((tiny_toy[0] / "videos").glob("*.mp4"))
    for i, p in enumerate(toy[:6]):
        dst = root / ("team a" if i % 2 else "team b") / f"clip_{i}.mp4"
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(p, dst)
    (root / "réunion").mkdir()
    shutil.copy(toy[6], root / "réunion" / "vidéo_会議.mp4")
    (root / "broken").mkdir()
    make_truncated(root / "broken" / "truncated.mp4")
    make_zero_byte(root / "broken" / "zero_bytes.mp4")
    make_text_as_video(root / "notes.mp4")
    make_one_frame(root / "odd" / "one_frame.mp4")
    make_odd_size(root / "odd" / "size_97x61.mp4")
    make_grayscale(root / "odd" / "grayscale.mkv")
    make_rotated(root / "odd" / "phone_rotated.mp4", -90)
    write_video(root / "odd" / "phone_upright.mp4", upright(), fps=10)   # what the rotated one shows
    make_vfr(root / "odd" / "screen_vfr.mp4")
    (root / "long").mkdir()
    shutil.copy(long_clip, root / "long" / "four_minutes.mp4")
    (root / "README.txt").write_text("not a video\n")
    return root


def test_index_search_reindex_a_messy_folder(messy, tmp_path, capsys):
    out = tmp_path / "index"
    rc, stdout, err = run(capsys, "index", messy, "--out", out, *TOY)
    assert rc == 0, err
    errors = [json.loads(ln) for ln in (out / "errors.jsonl").read_text(encoding="utf-8").splitlines()]
    assert {e["video"] for e in errors} == BAD
    assert all(e["reason"] and "\n" not in e["reason"] for e in errors)
    index = Index.load(out)
    readable = sorted(p.relative_to(messy).as_posix() for p in messy.rglob("*")
                      if p.suffix in (".mp4", ".mkv") and p.relative_to(messy).as_posix() not in BAD)
    assert index.ids == readable and len(readable) == 14 and "réunion/vidéo_会議.mp4" in index.ids
    assert np.allclose(np.linalg.norm(index.vectors, axis=1), 1, atol=1e-5)
    cfg = index.config["encoder"]
    assert cfg["frames"] == 12 and cfg["pooling"] == "meanP" and cfg["backbone"].startswith("teachclip-toy/")
    assert "indexed 14 video(s)" in stdout and "3 file(s) could not be read" in stdout
    assert "1 other file(s)" in stdout   # README.txt
    # the rotated clip is indexed as what it shows: the same as its upright twin
    rot, up = index.vector("odd/phone_rotated.mp4"), index.vector("odd/phone_upright.mp4")
    assert float(rot @ up) > 0.98

    # search: ranked, JSON, deterministic
    rc, stdout, _ = run(capsys, "search", out, "a red circle moving left", "-k", "4", "--json")
    hits = json.loads(stdout)
    assert rc == 0 and [h["rank"] for h in hits] == [1, 2, 3, 4]
    assert all(h["video"] in index.ids for h in hits)
    assert [h["score"] for h in hits] == sorted((h["score"] for h in hits), reverse=True)
    assert all(json.loads(run(capsys, "search", out, "a red circle moving left", "-k", "4", "--json")[1]) == hits
               for _ in range(2))
    rc, stdout, _ = run(capsys, "search", out, "a red circle moving left", "-k", "4")
    assert [ln.split(None, 2)[-1] for ln in stdout.splitlines()] == [h["video"] for h in hits]
    rc, stdout, err = run(capsys, "search", out, "a blue square " * 100, "--json")   # longer than the context
    assert rc == 0 and len(json.loads(stdout)) == 5 and "only the first 32" in err

    # re-run: nothing to embed, same version; then one changed, one deleted, one new file
    version = current_version(out)
    rc, stdout, _ = run(capsys, "index", messy, "--out", out, *TOY)
    assert rc == 0 and "(0 embedded now" in stdout and current_version(out) == version
    changed = messy / "team a" / "clip_1.mp4"
    os.utime(changed, ns=(time.time_ns(), time.time_ns() + 10**9))
    (messy / "team b" / "clip_0.mp4").rename(tmp_path / "moved_away.mp4")
    write_video(messy / "new" / "fresh.mp4", upright(n=4), fps=10)
    try:
        rc, stdout, _ = run(capsys, "index", messy, "--out", out, *TOY)
        assert rc == 0 and "(2 embedded now" in stdout
        again = Index.load(out)
        assert "new/fresh.mp4" in again.ids and "team b/clip_0.mp4" not in again.ids and len(again) == 14
        assert np.array_equal(again.vector("team a/clip_1.mp4"), index.vector("team a/clip_1.mp4"))
    finally:
        shutil.rmtree(messy / "new")
        (tmp_path / "moved_away.mp4").rename(messy / "team b" / "clip_0.mp4")


def _journal_entries(out: Path) -> int:
    n = 0
    for p in (out / "journal").glob("b*.npz"):
        with np.load(p, allow_pickle=False) as z:
            n += len(json.loads(str(z["meta"]))["entries"])
    return n


def test_sigkill_mid_run_then_resume_gives_the_identical_index(tiny_toy, tmp_path, capsys):
    videos, out, ref = tmp_path / "videos", tmp_path / "index", tmp_path / "reference"
    toy = sorted((tiny_toy[0] / "videos").glob("*.mp4"))
    videos.mkdir()
    for p in toy[:5]:
        shutil.copy(p, videos / p.name)
    assert run(capsys, "index", videos, "--out", out, *TOY)[0] == 0      # a complete first version
    first = Index.load(out)
    for copy in ("a", "b"):                                              # 2 x 22 new files to index
        (videos / copy).mkdir()
        for p in toy:
            shutil.copy(p, videos / copy / p.name)

    proc = subprocess.Popen([sys.executable, "-m", "teachclip_lite", "index", str(videos), "--out", str(out), *TOY],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 180
        while not list((out / "journal").glob("b*.npz")):
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.monotonic() < deadline, "no batch committed within 3 minutes"
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGSTOP)   # hold it mid-run while we look
        # search during the run sees the last complete index
        rc, stdout, _ = run(capsys, "search", out, "a green ring moving up", "-k", "50", "--json")
        assert rc == 0 and {h["video"] for h in json.loads(stdout)} == set(first.ids)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert current_version(out) == first.path.name                      # killed before it finished
    committed = _journal_entries(out)
    assert 0 < committed < 44

    t = time.perf_counter()
    rc, stdout, err = run(capsys, "index", videos, "--out", out, *TOY)   # resume
    resume_s = time.perf_counter() - t
    assert rc == 0, err
    assert f"({44 - committed} embedded now" in stdout and "49 video(s)" in stdout
    assert not list((out / "journal").glob("b*.npz"))
    rc, _, err = run(capsys, "index", videos, "--out", ref, *TOY)        # one uninterrupted run
    assert rc == 0, err
    a, b = Index.load(out), Index.load(ref)
    assert a.ids == b.ids and np.array_equal(a.vectors, b.vectors) and a.config == b.config
    assert (out / "errors.jsonl").read_bytes() == (ref / "errors.jsonl").read_bytes()
    print(f"resume after SIGKILL: {resume_s:.2f} s for {44 - committed} remaining videos")


def _console_script() -> list[str]:
    exe = Path(sys.executable).parent / "teachclip-lite"
    return [str(exe)] if exe.is_file() else [sys.executable, "-m", "teachclip_lite"]


def test_offline_default_weights_fail_fast_with_one_line(tmp_path):
    write_video(tmp_path / "v" / "a.mp4", upright(n=3), fps=10)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"),
           "XDG_CACHE_HOME": str(tmp_path / "xdg")}
    env.pop("HF_HUB_CACHE", None)
    t = time.monotonic()
    r = subprocess.run([*_console_script(), "index", str(tmp_path / "v"), "--out", str(tmp_path / "i")],
                       capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 1
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    assert "ViT-B-32 'openai' weights are not in the local cache" in lines[0]
    assert "--pretrained" in lines[0] and "--toy" in lines[0]
    assert not (tmp_path / "i" / "CURRENT").exists()
    print(f"offline error after {time.monotonic() - t:.1f} s (interpreter start included)")


def test_failures_are_one_line_with_what_to_do(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    rc, _, err = run(capsys, "index", tmp_path / "empty", "--out", tmp_path / "i", *TOY)
    assert rc == 1 and "no video files here" in _error_line(err)
    bad = tmp_path / "bad"
    bad.mkdir()
    make_zero_byte(bad / "z.mp4")
    make_text_as_video(bad / "t.mp4")
    rc, _, err = run(capsys, "index", bad, "--out", tmp_path / "ib", *TOY)
    assert rc == 1 and "no video could be indexed: 2 file(s) unreadable" in _error_line(err)
    assert len((tmp_path / "ib" / "errors.jsonl").read_text().splitlines()) == 2
    rc, _, err = run(capsys, "index", bad, "--out", tmp_path / "i", "--toy", "--model", "m.pt")
    assert rc == 2 and "--model brings its own backbone" in _error_line(err)
    rc, _, err = run(capsys, "search", tmp_path / "bad", "anything")
    assert rc == 1 and "not an index folder" in _error_line(err)
    (tmp_path / "half" / "journal").mkdir(parents=True)
    rc, _, err = run(capsys, "search", tmp_path / "half", "anything")
    assert rc == 1 and "no complete index yet" in _error_line(err)
    rc, _, err = run(capsys, "index", tmp_path / "nowhere", "--out", tmp_path / "i", *TOY)
    assert rc == 1 and "nowhere: no such folder" in _error_line(err)
    rc, _, err = run(capsys, "eval", "--model", tmp_path / "none.pt", "--data", tmp_path)
    assert rc == 1 and "model checkpoint not found" in _error_line(err)
    (tmp_path / "c.yaml").write_text("data: x\nout: y\nepochs: 3\n")
    rc, _, err = run(capsys, "train", "--config", tmp_path / "c.yaml")
    assert rc == 1 and "c.yaml: unknown setting(s) epochs" in _error_line(err)
    rc, _, err = run(capsys, "serch", "x")
    assert rc == 2 and "invalid choice" in _error_line(err)
    rc, _, err = run(capsys, "--debug", "search", tmp_path / "bad", "anything")   # tracebacks only with --debug
    assert rc == 1 and "Traceback" in err


def test_train_eval_then_index_with_the_student(tiny_toy, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(features, "CACHE_DIR", tmp_path / "cache")
    data = tmp_path / "data"
    shutil.copytree(tiny_toy[0] / "videos", data / "videos")
    rows = (tiny_toy[0] / "captions.csv").read_text(encoding="utf-8").splitlines()
    first_video = rows[1].split(",")[0]
    long_caption = ("a red circle moves left while a green ring moves up " * 50)[:2000]
    rows += [f"{first_video},un cercle rouge près du café,train", f"{first_video},{long_caption},train"]
    (data / "captions.csv").write_bytes(("\n".join(rows) + "\n").encode("latin-1"))   # a spreadsheet export
    (tmp_path / "poc.yaml").write_text(
        "data: data\nout: run\nbackbone: toy\n" + ("pretrained: random\n" if "random" in TOY else "")
        + "frames: 8\nmodels: [meanP, teachclip]\nteachers: [xpool, xclip]\n"
        "train: {epochs: 1, batch_size: 8}\n")
    rc, stdout, err = run(capsys, "train", "--config", tmp_path / "poc.yaml")
    assert rc == 0, err
    n = len(rows)   # line of the last row (the header is line 1)
    assert f"captions.csv:{n - 1}: warning: file is not UTF-8" in err
    assert f"captions.csv:{n}: warning: caption of" in err and "truncated to the tokenizer's context" in err
    model = tmp_path / "run" / "model.pt"
    assert model.is_file() and (tmp_path / "run" / "metrics.md").is_file()
    assert "| teachclip |" in stdout and "| meanP |" in stdout
    rc, stdout, err = run(capsys, "eval", "--model", model, "--data", data)
    assert rc == 0, err
    assert "| teachclip |" in stdout and "| backbone meanP, zero-shot |" in stdout   # the model by its one name
    rc, stdout, err = run(capsys, "index", data / "videos", "--out", tmp_path / "idx", "--model", model)
    assert rc == 0, err
    index = Index.load(tmp_path / "idx")
    assert index.config["encoder"]["pooling"] == "student" and index.config["encoder"]["frames"] == 8
    rc, stdout, _ = run(capsys, "search", tmp_path / "idx", "a red circle moving left", "-k", "3", "--json")
    assert rc == 0 and len(json.loads(stdout)) == 3


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the decoder child process is Linux-only")
def test_a_file_that_crashes_or_hangs_the_decoder_costs_only_that_file(tmp_path, monkeypatch):
    from teachclip_lite import video
    from teachclip_lite.video import SamplingConfig

    real = video.load_video

    def flaky(path, cfg):   # runs in the forked decoder, which inherits this patch
        name = Path(path).name
        if name.startswith("crash"):
            os.kill(os.getpid(), signal.SIGSEGV)
        if name.startswith("hang"):
            time.sleep(60)
        return real(path, cfg)

    monkeypatch.setattr(video, "load_video", flaky)
    good = [write_video(tmp_path / f"ok{i}.mp4", upright(n=3), fps=10) for i in range(3)]
    paths = [good[0], tmp_path / "crash.mp4", good[1], tmp_path / "hang.mp4", good[2]]
    with decoder.Decoder(SamplingConfig(4, 32), timeout=1.0) as dec:
        results = list(dec.map(paths))
    assert [p for p, _ in results] == paths                          # in order, nothing dropped
    assert [r[0] for _, r in results] == ["ok", "err", "ok", "err", "ok"]
    assert "decoder crashed on this file (signal SIGSEGV)" in results[1][1][1]
    assert "longer than 1 s" in results[3][1][1]


def test_one_index_run_at_a_time(tmp_path, capsys):
    import fcntl

    write_video(tmp_path / "v" / "a.mp4", upright(n=3), fps=10)
    (tmp_path / "i").mkdir()
    with open(tmp_path / "i" / ".index-run.lock", "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        rc, _, err = run(capsys, "index", tmp_path / "v", "--out", tmp_path / "i", *TOY)
    assert rc == 1 and "another `teachclip-lite index` run is writing this index" in _error_line(err)
    assert run(capsys, "index", tmp_path / "v", "--out", tmp_path / "i", *TOY)[0] == 0


# ---------------------------------------------------------------- what a bad-input battery found (issue 13)

def _clips(tiny_toy, folder: Path, n: int) -> list[Path]:
    toy = sorted((tiny_toy[0] / "videos").glob("*.mp4"))[:n]
    folder.mkdir(parents=True, exist_ok=True)
    return [Path(shutil.copy(p, folder / p.name)) for p in toy]


def test_a_file_name_that_is_not_utf8_is_indexed_and_shown_escaped(tiny_toy, tmp_path, capsys):
    videos = tmp_path / "v"
    _clips(tiny_toy, videos, 2)
    odd = os.fsdecode(b"r\xe9union.mp4")   # Latin-1 bytes: not valid UTF-8
    shutil.copy(sorted((tiny_toy[0] / "videos").glob("*.mp4"))[2], videos / odd)
    rc, out, err = run(capsys, "index", videos, "--out", tmp_path / "i", *TOY)
    assert rc == 0 and "indexed 3 video(s)" in out, err
    assert odd in Index.load(tmp_path / "i").ids   # the id is the name itself, losslessly
    rc, out, err = run(capsys, "search", tmp_path / "i", "a red circle", "-k", "3", "--json")
    assert rc == 0 and "r\\xe9union.mp4" in {h["video"] for h in json.loads(out)}
    rc, out, _ = run(capsys, "index", videos, "--out", tmp_path / "i", *TOY)
    assert rc == 0 and "0 embedded now; 3 unchanged" in out


def test_damaged_vectors_are_reported_by_name_and_repaired(tiny_toy, tmp_path, capsys):
    videos = tmp_path / "v"
    _clips(tiny_toy, videos, 4)
    assert run(capsys, "index", videos, "--out", tmp_path / "i", *TOY)[0] == 0
    good = Index.load(tmp_path / "i").vectors.copy()
    vec = tmp_path / "i" / current_version(tmp_path / "i") / "vectors.npy"
    raw = bytearray(vec.read_bytes())
    raw[-16:] = b"\x7f" * 16   # huge floats: search would rank that video first with a silly score
    vec.write_bytes(bytes(raw))
    rc, _, err = run(capsys, "search", tmp_path / "i", "anything")
    assert rc == 1 and "vectors.npy: damaged" in _error_line(err)
    rc, _, err = run(capsys, "index", videos, "--out", tmp_path / "i", "--verify", *TOY)
    assert rc == 1 and "vectors.npy: damaged" in _error_line(err)
    rc, out, err = run(capsys, "index", videos, "--out", tmp_path / "i", *TOY)
    assert rc == 0 and "vectors.npy: damaged" in err and "rebuilding" in err and "4 embedded now" in out
    np.testing.assert_array_equal(Index.load(tmp_path / "i").vectors, good)
    rc, out, _ = run(capsys, "index", videos, "--out", tmp_path / "i", "--verify", *TOY)
    assert rc == 0 and "4 vectors" in out and "intact" in out


def test_failed_files_are_retried_when_readable_or_asked(tiny_toy, tmp_path, capsys, monkeypatch):
    from test_ingest import make_text_as_video   # noqa: F811

    videos = tmp_path / "v"
    locked, = _clips(tiny_toy, videos, 1)
    make_text_as_video(videos / "notes.mp4")
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, **kw: False if Path(p).name == locked.name
                        else real_access(p, mode, **kw))   # as if chmod 000 (root reads anything)
    rc, _, err = run(capsys, "index", videos, "--out", tmp_path / "i", *TOY)
    assert rc == 1 and "2 file(s) unreadable" in _error_line(err)
    errors = {e["video"]: e for e in map(json.loads, (tmp_path / "i" / "errors.jsonl").read_text().splitlines())}
    assert errors[locked.name]["reason"].startswith("permission denied") and all(e["raw"] for e in errors.values())
    monkeypatch.setattr(os, "access", real_access)   # chmod +r: size and date did not change
    rc, out, err = run(capsys, "index", videos, "--out", tmp_path / "i", *TOY)
    assert rc == 0 and "1 embedded now" in out and "(1 of them unchanged since an earlier run, not retried)" in out
    rc, out, _ = run(capsys, "index", videos, "--out", tmp_path / "i", "--retry-failed", *TOY)
    assert rc == 0 and "1 file(s) could not be read" in out and "not retried" not in out


def test_decoder_reasons_are_plain_words_with_the_raw_kept():
    from teachclip_lite.video import plain_reason

    assert plain_reason("av_read_frame failed with 1094995529") == "the file is truncated or damaged"
    assert plain_reason("Check failed: st_nb >= 0").startswith("no video stream")
    assert plain_reason("Decoder (codec hevc) not found") == "unsupported codec"
    assert plain_reason("Error reading /x/truncated_clip.mp4...", "/x/truncated_clip.mp4").startswith(
        "not a readable video")   # the file's own name is not evidence


def test_links_to_nothing_are_counted_and_a_folder_emptied_gives_an_empty_index(tiny_toy, tmp_path, capsys):
    videos = tmp_path / "v"
    clips = _clips(tiny_toy, videos, 2)
    (videos / "gone.mp4").symlink_to(tmp_path / "nowhere.mp4")
    (videos / "loop.mp4").symlink_to(videos / "loop.mp4")
    rc, out, err = run(capsys, "index", videos, "--out", tmp_path / "i", *TOY)
    assert rc == 0 and "2 symbolic link(s)" in out and "indexed 2 video(s)" in out, err
    for p in clips:
        p.unlink()
    rc, out, err = run(capsys, "index", videos, "--out", tmp_path / "i", *TOY)
    assert rc == 0 and "empty index" in out, err
    rc, out, err = run(capsys, "search", tmp_path / "i", "a red circle")
    assert rc == 0 and out == ""   # no deleted file comes back


def test_a_full_disk_names_the_file(tmp_path, monkeypatch):
    import errno

    from teachclip_lite.paths import write_atomic

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OSError) as e:
        write_atomic(tmp_path / "out" / "vectors.json", "x" * 10)
    assert e.value.filename == str(tmp_path / "out" / "vectors.json")
    line, code = cli._explain(e.value)
    assert code == 1 and str(tmp_path / "out" / "vectors.json") in line and "free some space" in line
    assert not list((tmp_path / "out").iterdir())   # no temp file left behind


# ---------------------------------------------------------------- precision (issue 14)

def test_the_index_records_its_precision_and_refuses_mixing(tiny_toy, tmp_path, capsys):
    videos = tmp_path / "v"
    _clips(tiny_toy, videos, 3)
    rc, out, err = run(capsys, "index", videos, "--out", tmp_path / "b", "--precision", "bf16", *TOY)
    assert rc == 0 and "bf16" in out, err
    assert Index.load(tmp_path / "b").config["encoder"]["precision"] == "bf16"
    rc, out, _ = run(capsys, "index", videos, "--out", tmp_path / "b", *TOY)   # a re-run keeps the index's format
    assert rc == 0 and "0 embedded now; 3 unchanged" in out
    rc, _, err = run(capsys, "index", videos, "--out", tmp_path / "b", "--precision", "fp32", *TOY)
    assert rc == 1 and "holds an index built with" in _error_line(err) and "bf16" in _error_line(err)
    rc, _, err = run(capsys, "search", tmp_path / "b", "a red circle", "--precision", "fp32")
    assert rc == 1 and "this index was built in bf16" in _error_line(err)
    rc, out, _ = run(capsys, "search", tmp_path / "b", "a red circle", "-k", "3")
    assert rc == 0 and len(out.splitlines()) == 3
    rc, _, _ = run(capsys, "index", videos, "--out", tmp_path / "f", "--precision", "fp32", *TOY)
    a, b = Index.load(tmp_path / "f").vectors, Index.load(tmp_path / "b").vectors
    assert rc == 0 and float((a * b).sum(1).min()) >= 0.999   # bf16 vectors: within 0.001 cosine of fp32
    first = a.copy()
    shutil.rmtree(tmp_path / "f")
    assert run(capsys, "index", videos, "--out", tmp_path / "f", "--precision", "fp32", *TOY)[0] == 0
    np.testing.assert_array_equal(Index.load(tmp_path / "f").vectors, first)   # fp32 stays bit-stable
