"""Where things live: the toy world, the feature cache, runs. One place, so notebooks,
CLI and tests agree whatever their working directory. And how a file gets there: atomically."""
from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = PROJECT_ROOT / "data"
TOY_DIR = Path(os.environ.get("TEACHCLIP_TOY", DATA_DIR / "toy"))
CACHE_DIR = Path(os.environ.get("TEACHCLIP_CACHE") or
                 (DATA_DIR / "cache" if DATA_DIR.is_dir() else Path.home() / ".cache" / "teachclip-lite"))
RUNS_DIR = PROJECT_ROOT / "runs"


def fsync_dir(path: str | os.PathLike) -> None:
    """Make a rename or a new file in `path` durable (a no-op where folders cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: str | os.PathLike, data: str | bytes) -> Path:
    """Write a file that readers see whole or not at all: a temp file in the same folder
    (".tmp-<pid>-<name>", so a killed writer's leftovers are recognisable), synced, then renamed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp-{os.getpid()}-{path.name}")
    with open(tmp, "wb") as f:
        f.write(data.encode("utf-8") if isinstance(data, str) else data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)
    return path
