from pathlib import Path

import pytest

from teachclip_lite.data import DataError, load_dataset, load_msrvtt, read_captions

FIX = Path(__file__).parent / "fixtures" / "msrvtt"


def test_msrvtt_sample_loads():
    ds = load_msrvtt(FIX)
    train, test = ds.with_split("train"), ds.with_split("test")
    assert train.videos() == ["video0.mp4", "video1.mp4"] and len(train.captions) == 4
    assert [c.text for c in test.captions] == ["a woman is cooking pasta in a kitchen", "two dogs play in the snow"]
    assert len(test.videos()) == len(test.captions)  # 1k-A: one sentence per test video
    assert "a man talks about cars" in [c.text for c in train.captions]  # whitespace folded
    assert load_dataset(FIX, check_videos=False).splits() == ["test", "train"]


def _folder(tmp_path, text, encoding="utf-8"):
    (tmp_path / "clips").mkdir()
    (tmp_path / "clips" / "a.mp4").write_bytes(b"x")
    (tmp_path / "b.mp4").write_bytes(b"x")
    (tmp_path / "captions.csv").write_bytes(text.encode(encoding))
    return tmp_path


def test_csv_problems_are_reported_with_lines(tmp_path):
    root = _folder(tmp_path, "video,caption,split,extra\n"
                             "clips/a.mp4,a dog runs,train,1\n"
                             "b.mp4,,train,2\n"
                             "missing.mp4,a cat,train,3\n"
                             "clips/a.mp4,a dog runs,train,4\n"
                             "b.mp4,\"a caption, with a comma\",test,5\n")
    ds = load_dataset(root)
    assert [(c.video, c.line) for c in ds.captions] == [("clips/a.mp4", 2), ("b.mp4", 6)]
    msgs = [str(p) for p in ds.problems]
    assert any(m.startswith(f"{root / 'captions.csv'}:1: warning: unknown column 'extra'") for m in msgs)
    assert any(":3: error: empty caption" in m for m in msgs)
    assert any(":4: error: video not found" in m for m in msgs)
    assert any(":5: warning: duplicate row" in m for m in msgs)
    with pytest.raises(DataError, match=r"captions.csv:3: error: empty caption .*\(and 1 more\)"):
        load_dataset(root, strict=True)


def test_latin1_csv_is_read_with_a_warning(tmp_path):
    root = _folder(tmp_path, "video,caption\nb.mp4,un café crème\n", encoding="latin-1")
    ds = load_dataset(root)
    assert ds.captions[0].text == "un café crème"
    assert any("not UTF-8" in str(p) and ":2:" in str(p) for p in ds.problems)


def test_jsonl_and_bad_header(tmp_path):
    root = _folder(tmp_path, "clip,text\nb.mp4,x\n")
    with pytest.raises(DataError, match=r"captions.csv:1: missing column\(s\) video, caption"):
        load_dataset(root)
    (tmp_path / "captions.csv").unlink()
    (tmp_path / "captions.jsonl").write_text('{"video": "b.mp4", "caption": "hello"}\nnot json\n')
    ds = load_dataset(tmp_path)
    assert ds.captions[0].text == "hello" and ":2: error: not valid JSON" in str(ds.problems[0])
    with pytest.raises(DataError, match="nothing.csv: captions file not found"):
        read_captions(tmp_path / "nothing.csv")
    with pytest.raises(DataError, match="nowhere: no such file or folder"):
        load_dataset(tmp_path / "nowhere")
