"""Where things live: the toy world, the feature cache, runs. One place, so notebooks,
CLI and tests agree whatever their working directory. And how a file gets there: atomically."""
from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, Iterator

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


@contextmanager
def atomic_open(path: str | os.PathLike) -> Iterator[BinaryIO]:
    """A binary file that readers see whole or not at all: written under a temp name in the
    same folder (".tmp-<pid>-<name>", so a killed writer's leftovers are recognisable), synced,
    then renamed; a failed write leaves nothing behind. For writers that want a file object
    (torch.save); `write_atomic` for text and bytes."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp-{os.getpid()}-{path.name}")
    try:
        with open(tmp, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        if e.filename is None:   # a full disk (or a failing one) says which file it was writing
            raise OSError(e.errno, e.strerror, str(path)) from e
        raise
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def write_atomic(path: str | os.PathLike, data: str | bytes) -> Path:
    """Write text (UTF-8) or bytes atomically (see `atomic_open`)."""
    with atomic_open(path) as f:
        f.write(data.encode("utf-8") if isinstance(data, str) else data)
    return Path(path)


@contextmanager
def file_lock(path: str | os.PathLike, wait: bool = True) -> Iterator[None]:
    """An exclusive advisory lock on `path` (created if needed) for this block: writers take it, readers
    never do. `wait=False`: raise BlockingIOError at once when another process holds it. A no-op where
    the platform has no fcntl (one writer at a time is then the caller's business)."""
    try:
        import fcntl
    except ImportError:
        yield
        return
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
