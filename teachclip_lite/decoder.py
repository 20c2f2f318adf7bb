"""Decoding in a child process: clips are decoded in order, a few ahead of the encoder, in a forked child
(Linux), so that a file that crashes or hangs the decoder costs that file, not the run. Elsewhere a
background thread does the same job."""
from __future__ import annotations

import os
import signal
import sys
import time
from collections import deque

from .errors import one_line

DECODE_TIMEOUT = 600.0     # seconds one file may take to decode before it is given up


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
