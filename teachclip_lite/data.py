"""Datasets: which captions describe which video files, and in which split.

One format serves the toy world and a company PoC alike (data/README.md): a
folder of videos, any depth, and `captions.csv` with columns `video` (path
relative to the folder), `caption` and optionally `split`; or `captions.jsonl`
with the same fields. MSR-VTT's files as CLIP4Clip distributes them load too.
Validation collects every problem with its file and line instead of stopping at
the first, so a spreadsheet can be fixed in one pass.
"""
from __future__ import annotations

import csv
import io
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

COLUMNS = ("video", "caption", "split")
CAPTION_FILES = ("captions.csv", "captions.jsonl")
MSRVTT_FILES = ("MSRVTT_data.json", "MSRVTT_train.9k.csv", "MSRVTT_JSFUSION_test.csv")


class DataError(ValueError):
    """A dataset that cannot be used; the message names the file (and line)."""


@dataclass(frozen=True)
class Problem:
    file: str
    line: int | None
    message: str
    severity: str = "error"   # "error": the row is dropped; "warning": kept or fixed up

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.severity}: {self.message}"


@dataclass(frozen=True)
class Caption:
    video: str      # path relative to Dataset.root
    text: str
    split: str = ""
    line: int = 0   # line in the source file, for messages


@dataclass
class Dataset:
    root: Path
    captions: list[Caption]
    source: Path
    problems: list[Problem] = field(default_factory=list)

    def videos(self, split: str | None = None) -> list[str]:
        """Distinct videos in order of first appearance."""
        seen: dict[str, None] = {}
        for c in self.captions:
            if split is None or c.split == split:
                seen.setdefault(c.video, None)
        return list(seen)

    def splits(self) -> list[str]:
        return sorted({c.split for c in self.captions})

    def with_split(self, split: str) -> "Dataset":
        return Dataset(self.root, [c for c in self.captions if c.split == split], self.source, self.problems)


def _decode(path: Path, problems: list[Problem]) -> str:
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        problems.append(Problem(str(path), line, f"file is not UTF-8 (byte 0x{raw[e.start]:02x}); read as "
                                "Latin-1 instead — re-save it as UTF-8 to be sure of the text", "warning"))
        return raw.decode("latin-1")


def _rows_csv(path: Path, problems: list[Problem]):
    text = _decode(path, problems)
    reader = csv.DictReader(io.StringIO(text, newline=""))
    header = [h.strip() for h in (reader.fieldnames or [])]
    reader.fieldnames = header
    missing = [c for c in ("video", "caption") if c not in header]
    if missing:
        raise DataError(f"{path}:1: missing column(s) {', '.join(missing)} (header is {header}; "
                        f"expected video,caption[,split])")
    for h in header:
        if h not in COLUMNS:
            problems.append(Problem(str(path), 1, f"unknown column {h!r} ignored (known: {', '.join(COLUMNS)})",
                                    "warning"))
    start = 2
    for row in reader:
        yield start, row
        start = reader.line_num + 1


def _rows_jsonl(path: Path, problems: list[Problem]):
    for i, line in enumerate(_decode(path, problems).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            problems.append(Problem(str(path), i, f"not valid JSON ({e.msg})"))
            continue
        if not isinstance(row, dict):
            problems.append(Problem(str(path), i, "each line must be a JSON object"))
            continue
        for k in row:
            if k not in COLUMNS:
                problems.append(Problem(str(path), i, f"unknown field {k!r} ignored", "warning"))
        yield i, row


def read_captions(path: str | os.PathLike, root: str | os.PathLike | None = None,
                  check_videos: bool = True) -> Dataset:
    """Read a captions.csv / captions.jsonl; rows with problems are dropped and the problems kept."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: captions file not found")
    root = Path(root) if root is not None else path.parent
    problems: list[Problem] = []
    rows = _rows_jsonl(path, problems) if path.suffix == ".jsonl" else _rows_csv(path, problems)
    captions, seen, exists = [], set(), {}
    for line, row in rows:
        video = str(row.get("video") or "").strip()
        text = " ".join(str(row.get("caption") or "").split())
        split = str(row.get("split") or "").strip()
        if not video:
            problems.append(Problem(str(path), line, "empty video path"))
            continue
        if not text:
            problems.append(Problem(str(path), line, f"empty caption for {video}"))
            continue
        if (video, text) in seen:
            problems.append(Problem(str(path), line, f"duplicate row ({video}, {text[:40]!r}) dropped", "warning"))
            continue
        if check_videos:
            if video not in exists:
                exists[video] = (root / video).is_file()
            if not exists[video]:
                problems.append(Problem(str(path), line, f"video not found: {root / video}"))
                continue
        seen.add((video, text))
        captions.append(Caption(video, text, split, line))
    if not captions:
        first = f" (first problem: {problems[0]})" if problems else ""
        raise DataError(f"{path}: no usable caption rows{first}")
    return Dataset(root, captions, path, problems)


def load_msrvtt(annotations: str | os.PathLike, videos: str | os.PathLike | None = None) -> Dataset:
    """MSR-VTT as CLIP4Clip/TeachCLIP distribute it: 9k train videos with all their sentences,
    and the 1k-A test (JSFUSION): one sentence per video. Videos are `<video_id>.mp4` under `videos`."""
    ann = Path(annotations)
    for name in MSRVTT_FILES:
        if not (ann / name).is_file():
            raise DataError(f"{ann / name}: MSR-VTT annotation file not found")
    if videos is None:
        videos = next((p for p in (ann / "videos" / "all", ann / "videos", ann) if p.is_dir()), ann)
    try:
        data = json.loads((ann / "MSRVTT_data.json").read_text(encoding="utf-8"))
        sentences = data["sentences"]
    except (json.JSONDecodeError, KeyError) as e:
        raise DataError(f"{ann / 'MSRVTT_data.json'}: not MSR-VTT data ({type(e).__name__}: {e})") from None
    with open(ann / "MSRVTT_train.9k.csv", encoding="utf-8-sig", newline="") as f:
        train_ids = {r["video_id"].strip() for r in csv.DictReader(f)}
    captions = [Caption(f"{s['video_id']}.mp4", " ".join(s["caption"].split()), "train")
                for s in sentences if s["video_id"] in train_ids]
    with open(ann / "MSRVTT_JSFUSION_test.csv", encoding="utf-8-sig", newline="") as f:
        for line, r in enumerate(csv.DictReader(f), start=2):
            captions.append(Caption(f"{r['video_id'].strip()}.mp4", " ".join(r["sentence"].split()), "test", line))
    return Dataset(Path(videos), captions, ann / "MSRVTT_data.json")


def load_dataset(path: str | os.PathLike, check_videos: bool = True, strict: bool = False) -> Dataset:
    """A dataset folder (captions.csv, captions.jsonl or the MSR-VTT files) or a captions file.

    strict=True raises on any error-level problem; otherwise bad rows are dropped and listed in .problems.
    """
    path = Path(path)
    if path.is_dir():
        found = [path / n for n in CAPTION_FILES if (path / n).is_file()]
        if found:
            ds = read_captions(found[0], path, check_videos)
        elif all((path / n).is_file() for n in MSRVTT_FILES):
            ds = load_msrvtt(path)
        else:
            raise DataError(f"{path}: no captions.csv, captions.jsonl or MSR-VTT annotation files in this folder")
    elif path.is_file():
        ds = read_captions(path, path.parent, check_videos)
    else:
        raise DataError(f"{path}: no such file or folder")
    errors = [p for p in ds.problems if p.severity == "error"]
    if strict and errors:
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise DataError(f"{errors[0]}{more}")
    return ds


def check_caption_lengths(dataset: Dataset, count_tokens, context_length: int) -> list[Problem]:
    """Warnings (with file and line) for captions longer than the text encoder's context.

    CLIP's tokenizer cuts such captions to `context_length` tokens, so the end of a long
    caption never reaches the model; better to know which ones. `count_tokens(text)` is
    the backbone's (tokens with start/end markers). The warnings are also added to
    dataset.problems.
    """
    out = []
    for c in dataset.captions:
        n = count_tokens(c.text)
        if n > context_length:
            out.append(Problem(str(dataset.source), c.line or None,
                               f"caption of {n} tokens ({len(c.text)} characters) for {c.video} truncated to the "
                               f"tokenizer's context of {context_length} tokens", "warning"))
    dataset.problems.extend(out)
    return out
