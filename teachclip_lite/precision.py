"""Which number format the encoders compute in: `fp32`, `bf16`, or `auto` (bf16 where this machine's matmuls
run faster in it, fp32 elsewhere). bf16 keeps fp32's range with an 8-bit mantissa: CLIP embeddings agree
with fp32 to a cosine above 0.999 (bench `encoding`), and CPUs with AVX512-BF16 or AMX run its matrix
products several times faster. On CUDA, `auto` is autocast (bf16 where supported, else fp16).

For a CPU, `auto` goes by what the CPU says it has (AVX512-BF16 or AMX-BF16 in /proc/cpuinfo): a fixed
answer, so that re-running `index` never switches format under an index. `cpu_bf16_speedup` measures what
that buys (the bench reports it)."""
from __future__ import annotations

import time
from contextlib import nullcontext
from functools import lru_cache
from pathlib import Path

import torch

PRECISIONS = ("auto", "fp32", "bf16")
PROBE_SIZE = 512


def check(precision: str) -> str:
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r} is not one of {PRECISIONS}")
    return precision


@lru_cache(maxsize=None)
def cpu_bf16_speedup(size: int = PROBE_SIZE, repeats: int = 3) -> float:
    """How many times faster a [size, size] matrix product runs in bf16 than in fp32 here (best of repeats)."""
    def best(dtype) -> float:
        a, b = torch.randn(size, size).to(dtype), torch.randn(size, size).to(dtype)
        a @ b
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            a @ b
            times.append(time.perf_counter() - t)
        return min(times)

    return best(torch.float32) / best(torch.bfloat16)


@lru_cache(maxsize=None)
def cpu_has_bf16() -> bool:
    """Does this CPU have bf16 matrix instructions (AVX512-BF16 or AMX-BF16)? False where it cannot tell."""
    try:
        flags = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return False
    return " avx512_bf16" in flags or " amx_bf16" in flags


def resolve(precision: str, device: str = "cpu") -> str:
    """"fp32" or "bf16" for a CPU ("auto": bf16 on CPUs with bf16 matrix instructions); on CUDA "auto" stays
    "auto" (autocast)."""
    check(precision)
    if precision != "auto":
        return precision
    if str(device).startswith("cuda"):
        return "auto"
    return "bf16" if cpu_has_bf16() else "fp32"


def dtype_of(precision: str) -> torch.dtype:
    """The weights' dtype for a resolved precision (CUDA "auto" keeps fp32 weights under autocast)."""
    return torch.bfloat16 if precision == "bf16" else torch.float32


def autocast(precision: str, device: str = "cpu"):
    """The context that computes in `precision` on `device` (a no-op for fp32, and for bf16 weights on CPU,
    which compute in bf16 by themselves)."""
    if str(device).startswith("cuda") and precision in ("auto", "bf16"):
        dt = torch.bfloat16 if precision == "bf16" or torch.cuda.is_bf16_supported() else torch.float16
        return torch.autocast("cuda", dtype=dt)
    return nullcontext()
