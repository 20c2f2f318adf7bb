"""The trade in numbers: how close the student gets to its teachers, and what each costs.

    python -m teachclip_lite.bench --out runs/bench.json [--quick]

writes one JSON and prints a markdown table with

- quality: the named ablation of experiments.py on the toy world (mean and std
  over seeds);
- efficiency: per corpus size N (random unit vectors stand in for videos), the
  student's exact top-k search through index.py (one query alone, and 32 at once,
  per query), the floor (one bare `torch.matmul` + `topk` on a contiguous float32
  matrix in memory, same queries, same run; for one query alone, the same bare
  product of that query, `matmul_floor_single_ms`) and each teacher's time per query
  (measured up to `teacher_sizes`, extrapolated linearly beyond and flagged);
- storage_bytes_per_video and flops_per_query: what each model keeps per video,
  and the FLOPs (torch.utils.flop_counter: matrix products, the cost that grows
  with the corpus) of scoring one query against one stored video;
- paper_scale: the same at ViT-B/32 shapes (d 512, 12 frames, 50 tokens per
  frame), plus the encoders' FLOPs counted on open_clip's real ViT-B-32
  architecture, weightless on the meta device (text tower, 32 tokens: once per
  query; image tower on 12 frames: once per video, at indexing time);
- index: peak RSS of searching a 1M x 512 float16 index (in a fresh process),
  float16 search speed, and faiss IVF recall@10 and speed (when faiss is installed).

Timings are the best of `repeats` rounds, with the candidates interleaved in each
round so that load from other processes hits them alike. The floor and the
teachers are each timed with torch's default threads and with one thread, and the
faster counts (on a busy machine one thread can win): the student is compared with
the best the bare operation and the teachers can do. Teachers are timed as
they would serve: their video side encoded once (as an index would store it),
then per query the text side and the pair scoring against every stored video.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from .index import FaissIndex, Index, faiss_available, single_threaded
from .paths import TOY_DIR, write_atomic
from .search import teacher_search
from .tables import markdown_table
from .models import get_model, list_models

TEACHER_NAMES = tuple(get_model(m).architecture for m in list_models("teacher"))   # xpool, xclip, ts2net (models.py)
PAPER = {"dim": 512, "frames": 12, "tokens": 50, "words": 32, "backbone": "ViT-B-32"}


@dataclass
class BenchConfig:
    sizes: tuple[int, ...] = (1_000, 10_000, 100_000, 1_000_000)
    teacher_sizes: tuple[int, ...] = (1_000, 10_000)  # measured; larger N are extrapolated
    dim: int = 512
    frames: int = 12
    tokens: int = 50                  # patch tokens per frame incl. CLS (ViT-B/32 at 224 px)
    words: int = 32                   # caption tokens (the paper's max words)
    k: int = 10
    batch: int = 32
    single_queries: int = 8           # queries searched one at a time (mean of their best times)
    repeats: int = 5
    rss_size: int = 1_000_000         # float16 index searched in a fresh process for peak RSS
    faiss_sizes: tuple[int, ...] = (100_000, 1_000_000)
    faiss_nprobe: tuple[int, ...] = (8, 32, 128)
    quality: bool = True
    features: str = "toy"             # "toy" (toy_features) or "synthetic" (experiments.synthetic_features)
    experiment: object = None         # experiments.ExperimentConfig; None: its defaults (or quick())
    quick: bool = False
    seed: int = 0
    encoding: bool = True             # the `encoding` section: bf16 against fp32 for the toy CLIP and ViT-B-32
    encode_batch: int = 48            # frames per timed encoder call
    encode_backbones: tuple[str, ...] = ("toy", "ViT-B-32")
    query_corpus: int = 100_000       # vectors in the index one query is searched against (encode + top-10)
    breakdown_clips: int = 24         # toy-world clips profiled for where encoding time goes (0: none)
    end_to_end: bool = True           # the `end_to_end` section: frozen features against fine-tuning the toy CLIP
    e2e_videos: int = 1000            # training videos of the toy world it uses (all of them)
    e2e_epochs: int = 15
    e2e_finetune: int = 1             # CLIP blocks fine-tuned
    e2e_backbone_lr_mult: float = 1e-2
    e2e_ddp: bool = True              # and the 2-process equivalence check (equivalence.py)
    e2e_random: bool = False          # a randomly initialised toy CLIP instead of the pretrained one (the study)
    loss_choice: bool = True          # and experiments.loss_choice (seed 0): lesson 02 then loads its students

    @classmethod
    def quick_config(cls, **kw) -> "BenchConfig":
        """Small N, few repeats, one-seed two-epoch quality: about a minute on a quiet 2-core machine."""
        base = dict(sizes=(1_000, 10_000), teacher_sizes=(1_000,), repeats=2, single_queries=4,
                    rss_size=20_000, faiss_sizes=(10_000,), faiss_nprobe=(8, 64), quick=True, encode_batch=8,
                    encode_backbones=("toy",), query_corpus=10_000, breakdown_clips=2, e2e_videos=24, e2e_epochs=1, e2e_ddp=False,
                    loss_choice=False)
        return cls(**{**base, **kw})


# ---------------------------------------------------------------------- helpers

def unit_vectors(n: int, dim: int, seed: int, step: int = 65_536) -> torch.Tensor:
    """[n, dim] float32 random unit vectors, drawn in slices (no second full-size temporary)."""
    g = torch.Generator().manual_seed(seed)
    out = torch.empty(n, dim)
    for s in range(0, n, step):
        x = torch.randn(min(step, n - s), dim, generator=g)
        out[s:s + len(x)] = x / x.norm(dim=1, keepdim=True)
    return out


def best_times(fns: dict, repeats: int) -> dict[str, float]:
    """Best wall time (s) of each callable over `repeats` rounds, interleaved, after one warm-up each."""
    for f in fns.values():
        f()
    best = {name: float("inf") for name in fns}
    for _ in range(repeats):
        for name, f in fns.items():
            t = time.perf_counter()
            f()
            best[name] = min(best[name], time.perf_counter() - t)
    return best


def count_flops(fn) -> int:
    """Matrix-product FLOPs of fn() (torch.utils.flop_counter; 2 per multiply-add)."""
    from torch.utils.flop_counter import FlopCounterMode

    fast = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)  # the fused attention kernel is invisible to the counter
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            fn()
    finally:
        torch.backends.mha.set_fastpath_enabled(fast)
    return int(counter.get_total_flops())


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return (f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__} ({torch.get_num_threads()} threads), "
            f"{platform.system()} {platform.release()}")


# ---------------------------------------------------------------------- teachers

def _teacher(name: str, dim: int, frames: int):
    from .teachers import build_teacher

    return build_teacher(name, dim, frames).eval()


def _random_texts(n: int, dim: int, words: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    sentence = torch.randn(n, dim, generator=g)
    return sentence, torch.randn(n, words, dim, generator=g), torch.ones(n, words, dtype=torch.bool)


@torch.no_grad()
def _stored_videos(teacher, n: int, dim: int, frames: int, tokens: int, seed: int, distinct: int = 64,
                   step: int = 32) -> dict:
    """What the teacher's index would hold for n videos: its encoded video side.

    `distinct` random videos are encoded (patch tokens make encoding the costly part)
    and tiled to n rows in fresh memory; scoring time does not depend on the values.
    """
    g = torch.Generator().manual_seed(seed)
    parts = []
    for s in range(0, min(n, distinct), step):
        b = min(step, min(n, distinct) - s)
        f = torch.randn(b, frames, dim, generator=g)
        m = torch.ones(b, frames, dtype=torch.bool)
        p = torch.randn(b, frames, tokens, dim, generator=g).half() if teacher.needs_patches else None
        parts.append(teacher.encode_videos(f, m, p))
    one = {k: torch.cat([p[k] for p in parts]) for k in parts[0]}
    reps = -(-n // len(one["mask"]))
    return {k: v.repeat(reps, *([1] * (v.ndim - 1)))[:n].contiguous() for k, v in one.items()}


def teacher_pair_flops(name: str, dim: int, frames: int, tokens: int, words: int, videos: int = 8) -> int:
    """FLOPs of scoring one query against one stored video (pair scoring only, matrix products)."""
    teacher = _teacher(name, dim, frames)
    stored = _stored_videos(teacher, videos, dim, frames, tokens, seed=0, distinct=videos)
    with torch.no_grad():
        t = teacher.encode_texts(*_random_texts(1, dim, words, seed=0))
    return round(count_flops(lambda: teacher.pair_sims(t, stored)) / videos)


def student_pair_flops(dim: int, videos: int = 1_000) -> int:
    index = Index(unit_vectors(videos, dim, seed=0), [str(i) for i in range(videos)])
    return round(count_flops(lambda: index.search(unit_vectors(1, dim, seed=1), 10)) / videos)


def storage(dim: int, frames: int, tokens: int) -> dict[str, int]:
    out = {"student": dim * 4, "student_float16": dim * 2}
    for name in TEACHER_NAMES:
        out[name] = int(_teacher(name, dim, frames).bytes_per_video(frames, dim, tokens))
    return out


def pair_flops(dim: int, frames: int, tokens: int, words: int) -> dict[str, int]:
    out = {"student": student_pair_flops(dim)}
    for name in TEACHER_NAMES:
        out[name] = teacher_pair_flops(name, dim, frames, tokens, words)
    return out


# ---------------------------------------------------------------------- sections

def efficiency(cfg: BenchConfig, workdir: Path, log=print) -> dict:
    """Per N: student (index.py, mmap-loaded from disk), floor, teachers."""
    out = {}
    queries = unit_vectors(cfg.batch, cfg.dim, seed=cfg.seed + 1)
    text = _random_texts(1, cfg.dim, cfg.words, seed=cfg.seed + 2)
    teacher_ms = {}
    for n in cfg.sizes:
        corpus = unit_vectors(n, cfg.dim, seed=cfg.seed)
        folder = workdir / f"student_{n}"
        Index(corpus, [str(i) for i in range(n)], {"bench": True}).save(folder)
        index = Index.load(folder)

        def floor():
            return torch.matmul(queries, corpus.T).topk(cfg.k, dim=1)

        def floor_one_thread():  # on a busy machine one thread can beat torch's default: the floor is the better
            with single_threaded():
                return floor()

        def batched():
            return index.search(queries, cfg.k)

        singles = {f"single{i}": (lambda q: lambda: index.search(q, cfg.k))(queries[i:i + 1])
                   for i in range(cfg.single_queries)}
        bare = {f"bare{i}": (lambda q: lambda: torch.matmul(q, corpus.T).topk(cfg.k, dim=1))(queries[i:i + 1])
                for i in range(cfg.single_queries)}   # the one-query floor: the same product, bare
        t = best_times({"floor": floor, "floor_1": floor_one_thread, "batched": batched, **singles, **bare},
                       cfg.repeats)
        row = {"student_ms_per_query": 1e3 * float(np.mean([t[name] for name in singles])),
               "student_batched_ms_per_query": 1e3 * t["batched"] / cfg.batch,
               "matmul_floor_ms_per_query": 1e3 * min(t["floor"], t["floor_1"]) / cfg.batch,
               "matmul_floor_single_ms": 1e3 * float(np.mean([t[name] for name in bare]))}
        del corpus, index
        if n in cfg.teacher_sizes:
            teacher_ms[n] = {}
            for name in TEACHER_NAMES:
                teacher = _teacher(name, cfg.dim, cfg.frames)
                stored = _stored_videos(teacher, n, cfg.dim, cfg.frames, cfg.tokens, seed=cfg.seed)
                def serve():
                    return teacher_search(teacher, text, stored, cfg.k)

                def serve_one_thread():
                    with single_threaded():
                        return serve()

                secs = best_times({"default": serve, "one": serve_one_thread}, max(1, cfg.repeats - 2))
                teacher_ms[n][name] = 1e3 * min(secs.values())
                del stored
        measured = max((m for m in teacher_ms if m <= n), default=None)
        if n in teacher_ms:
            row["teacher_ms_per_query"], row["extrapolated"] = dict(teacher_ms[n]), False
        elif measured is not None:   # pair scoring is linear in N
            row["teacher_ms_per_query"] = {k: v * n / measured for k, v in teacher_ms[measured].items()}
            row["extrapolated"] = True
        else:
            row["teacher_ms_per_query"], row["extrapolated"] = {}, False
        out[str(n)] = row
        log(f"N={n}: student {row['student_ms_per_query']:.3f} ms (bare {row['matmul_floor_single_ms']:.3f}), "
            f"batched {row['student_batched_ms_per_query']:.3f} ms/q, floor {row['matmul_floor_ms_per_query']:.3f} ms/q, teachers "
            + ", ".join(f"{k} {v:.1f}" for k, v in row["teacher_ms_per_query"].items())
            + (" (extrapolated)" if row["extrapolated"] else ""))
    return out


def paper_scale(log=print) -> dict:
    """ViT-B/32 shapes; encoder FLOPs on open_clip's real architecture, built on the meta device.

    Meta tensors carry shapes and no data, so nothing is downloaded or computed and
    attention is counted too (on CPU tensors the fused attention kernel is invisible
    to the counter: the count would miss QK^T and AV).
    """
    import open_clip

    d, frames, tokens, words = PAPER["dim"], PAPER["frames"], PAPER["tokens"], PAPER["words"]
    with torch.device("meta"):  # the architecture without weights: FLOPs need shapes only (and no download)
        model = open_clip.create_model(PAPER["backbone"], pretrained=None, force_context_length=words,
                                       device="meta").eval()
    side = model.visual.image_size
    side = side[0] if isinstance(side, (tuple, list)) else side
    patch = model.visual.patch_size
    grid = side // (patch[0] if isinstance(patch, (tuple, list)) else patch)
    if grid * grid + 1 != tokens:
        raise RuntimeError(f"{PAPER['backbone']} has {grid * grid + 1} tokens per frame, expected {tokens}")
    if model.text_projection.shape[-1] != d:
        raise RuntimeError(f"{PAPER['backbone']} embeds in {model.text_projection.shape[-1]} dims, expected {d}")
    text = torch.zeros(1, words, dtype=torch.long, device="meta")
    frames_in = torch.zeros(frames, 3, side, side, device="meta")
    flops = pair_flops(d, frames, tokens, words)
    flops["text_encoder"] = count_flops(lambda: model.encode_text(text))
    flops["video_encoder"] = count_flops(lambda: model.encode_image(frames_in))
    log(f"paper scale: text encoder {flops['text_encoder'] / 1e9:.2f} GFLOPs per query, "
        f"video encoder {flops['video_encoder'] / 1e9:.1f} GFLOPs per video")
    return {"storage_bytes_per_video": storage(d, frames, tokens), "flops_per_query": flops}


def peak_rss_mib() -> float:
    """Peak resident memory of this process in MiB (VmHWM: unlike ru_maxrss, not inherited across exec)."""
    try:
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2 ** 20 if sys.platform == "darwin" else peak / 1024  # bytes on macOS, KiB elsewhere


def _rss_probe(folder: str, k: int, batch: int, dim: int) -> None:
    """Run in a fresh process: peak RSS of loading `folder` and searching it (one JSON line on stdout)."""
    base = peak_rss_mib()
    index = Index.load(folder)
    q = unit_vectors(batch, dim, seed=123)
    index.search(q[:1], k)
    secs = best_times({"batched": lambda: index.search(q, k)}, 2)["batched"]
    print(json.dumps({"peak_rss_mib": peak_rss_mib(), "rss_after_import_mib": base,
                      "index_mib": index.vectors.nbytes / 2 ** 20, "batched_ms_per_query": 1e3 * secs / batch}))


def roofline(size: int = 2048, repeats: int = 3) -> dict:
    """What one matrix product reaches here, in GFLOP/s, in fp32 and in bf16 (torch's thread count)."""
    out = {}
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        a, b = torch.randn(size, size).to(dtype), torch.randn(size, size).to(dtype)
        t = best_times({"mm": lambda: a @ b}, repeats)["mm"]
        out[f"{name}_gflops"] = 2 * size ** 3 / t / 1e9
    return out


def encoding(cfg: BenchConfig, log=print) -> dict:
    """Encoders in fp32 and bf16 (precision.py), measured: frames per second at `encode_batch` frames a call,
    the share of the matmul roofline that is (the frame encoder's FLOPs counted by torch), the cosine of each
    bf16 frame embedding with its fp32 one (the worst), and one query's text encoding in ms. ViT-B-32 runs
    with random weights: speed and agreement do not depend on the values."""
    from .backbone import BackboneConfig, load_backbone

    roof = roofline(repeats=cfg.repeats)
    log(f"roofline: fp32 {roof['fp32_gflops']:.0f} GFLOP/s, bf16 {roof['bf16_gflops']:.0f} GFLOP/s")
    out = {"roofline": roof, "query_ms": {}, "query_search_ms": {}, "query_corpus": cfg.query_corpus}
    g = torch.Generator().manual_seed(cfg.seed)
    for name in cfg.encode_backbones:
        pretrained = "random" if name != "toy" else None
        per, emb = {}, {}
        torch.manual_seed(cfg.seed)   # random weights: the same ones for both formats
        fp32 = load_backbone(BackboneConfig(name, pretrained))
        frames = torch.randint(0, 256, (cfg.encode_batch, 3, fp32.image_size, fp32.image_size), generator=g,
                               dtype=torch.uint8)
        flops = count_flops(lambda: fp32.model.encode_image(fp32.preprocess(frames[:1])))
        for precision in ("fp32", "bf16"):
            if precision != "fp32":
                torch.manual_seed(cfg.seed)
            bb = fp32 if precision == "fp32" else load_backbone(BackboneConfig(name, pretrained, precision=precision))
            emb[precision] = bb.encode_frames(frames)[0]
            secs = best_times({"enc": lambda: bb.encode_frames(frames)}, max(2, cfg.repeats // 2))["enc"]
            fps = cfg.encode_batch / secs
            query = ["a person opens a door and walks into a bright kitchen"]
            per[precision] = {"frames_per_s": fps, "gflops_per_frame": flops / 1e9,
                              "share_of_roofline": fps * flops / 1e9 / roof[f"{precision}_gflops"]}
            videos = sorted((Path(TOY_DIR) / "videos").glob("*.mp4"))[:cfg.breakdown_clips]
            if videos and cfg.breakdown_clips:
                per[precision]["ms_per_clip"] = encode_breakdown(bb, videos, cfg.frames)
            index = Index(unit_vectors(cfg.query_corpus, bb.embed_dim, seed=cfg.seed),
                          [str(i) for i in range(cfg.query_corpus)])

            def answer():   # what `search` does per query: encode, normalise, exact top-10
                return index.search(torch.nn.functional.normalize(bb.encode_text(query)[0], dim=-1), 10)

            t = best_times({"q": lambda: bb.encode_text(query), "answer": answer}, cfg.repeats)
            out["query_ms"].setdefault(name, {})[precision] = 1e3 * t["q"]
            out["query_search_ms"].setdefault(name, {})[precision] = 1e3 * t["answer"]
        cos = torch.nn.functional.cosine_similarity(emb["fp32"], emb["bf16"], dim=-1)
        per["bf16"]["cos_vs_fp32"] = float(cos.min())
        per["fp32"]["cos_vs_fp32"] = 1.0
        out[name] = per
        log(f"encoding {name}: " + "; ".join(f"{p} {v['frames_per_s']:.0f} frames/s "
                                             f"({100 * v['share_of_roofline']:.0f}% of its roofline)"
                                             for p, v in per.items()) + f"; bf16 cosine >= {cos.min():.4f}")
    return out


# profiler op names -> where an encoder's time goes
_OP_KINDS = {"matmuls": ("aten::addmm", "aten::mm", "aten::bmm", "aten::matmul", "aten::linear"),
             "attention": ("aten::_scaled_dot_product", "aten::_native_multi_head_attention", "aten::softmax"),
             "patch embedding": ("aten::convolution", "aten::_convolution", "aten::mkldnn_convolution",
                                 "aten::conv2d"),
             "resize": ("aten::upsample_bicubic2d", "aten::_upsample_bicubic2d_aa")}


def encode_breakdown(bb, videos: list, frames: int = 12) -> dict:
    """Where one clip's time goes, ms per clip: decoding (decord, resized and cropped to the model's input:
    the decoder child's work, overlapped with encoding by `index`) and, of the encoder (bb.encode_frames),
    the matrix products, attention, patch embedding, resize and everything else (norms, activations, copies),
    from torch.profiler's self times."""
    from torch.profiler import profile

    from .video import SamplingConfig, load_video

    sampling = SamplingConfig(num_frames=frames, size=bb.image_size)
    t0 = time.perf_counter()
    clips = [load_video(v, sampling) for v in videos]
    decode = (time.perf_counter() - t0) / len(videos)
    bb.encode_frames(clips[0].frames)   # warm-up
    t0 = time.perf_counter()
    with profile() as prof:
        for c in clips:
            bb.encode_frames(c.frames[c.mask])
    total = (time.perf_counter() - t0) / len(clips)
    self_ms = {}
    for e in prof.key_averages():
        kind = next((k for k, names in _OP_KINDS.items() if any(e.key.startswith(n) for n in names)), "other")
        self_ms[kind] = self_ms.get(kind, 0.0) + e.self_cpu_time_total / 1e3 / len(clips)
    scale = 1e3 * total / max(1e-9, sum(self_ms.values()))   # the profiler's own overhead taken out
    return {"decode": 1e3 * decode, "encode": 1e3 * total,
            **{k: v * scale for k, v in sorted(self_ms.items(), key=lambda kv: -kv[1])}}


def end_to_end(cfg: BenchConfig, log=print) -> dict:
    """The same student (the TeachCLIP student, InfoNCE only, 1 seed) at the same budget, on frozen toy-CLIP
    features and fine-tuning the toy CLIP's last blocks from pixels (finetune.py), on a subset of the toy
    world's training videos; evaluated on the whole test split. Then N-process training against one
    (equivalence.py). Needs the toy world on disk."""
    from .backbone import BackboneConfig, load_backbone
    from .features import FeatureSet, toy_features
    from .finetune import attach_pixels
    from .student import StudentConfig
    from .train import TrainConfig, evaluate_student, train_student

    t0 = time.perf_counter()
    threads = torch.get_num_threads()
    if cfg.e2e_random:   # what fine-tuning does where the frozen features know nothing (docs/TOY_WORLD.md)
        from .data import load_dataset
        from .features import build_features
        from .video import SamplingConfig

        bb = load_backbone(BackboneConfig("toy", "random"))
        fs = build_features(load_dataset(TOY_DIR), bb, SamplingConfig(12, bb.image_size), progress=False)
    else:
        fs = toy_features(progress=False)   # the cache the quality section uses
        bb = load_backbone(BackboneConfig("toy"))
    train, val, test = fs.split("train"), fs.split("val"), fs.split("test")
    n = min(cfg.e2e_videos, len(train.videos))
    rows = [i for i, v in enumerate(train.texts.video.tolist()) if v < n]
    train = FeatureSet(train.videos.subset(range(n)), train.texts.subset(rows), train.logit_scale, train.key,
                       train.temporal_init)
    for part in (train, val, test):
        attach_pixels(part, TOY_DIR, bb, progress=False)
    scfg = StudentConfig(dim=bb.embed_dim, num_frames=train.videos.mask.shape[1], logit_scale=fs.logit_scale)
    keep = ("t2v_r1", "t2v_r5", "t2v_r10", "t2v_mdr", "sumr")
    out = {"backbone": bb.key, "student": scfg.kind, "epochs": cfg.e2e_epochs, "train_videos": n,
           "test_queries": len(test.texts), "finetune_blocks": cfg.e2e_finetune,
           "backbone_lr_mult": cfg.e2e_backbone_lr_mult}
    for name, blocks in (("frozen", 0), ("finetuned", cfg.e2e_finetune)):
        tcfg = TrainConfig(epochs=cfg.e2e_epochs, finetune=blocks, backbone_lr_mult=cfg.e2e_backbone_lr_mult,
                           weights=(1.0, 0.0, 0.0), threads=threads, seed=cfg.seed)
        t1 = time.perf_counter()
        model, hist = train_student(tcfg, train, val, student=scfg, backbone=bb, progress=False, desc=name)
        metrics = evaluate_student(model.student, model.encode(test))[0] if blocks else evaluate_student(model, test)[0]
        out[name] = {**{k: round(metrics[k], 2) for k in keep}, "best_val_r1": max(r["val_r1"] for r in hist),
                     "precision": _train_precision(tcfg),
                     "seconds": round(time.perf_counter() - t1, 1)}
        log(f"end_to_end {name}: test R@1 {metrics['t2v_r1']:.1f} ({out[name]['seconds']:.0f} s)")
    torch.set_num_threads(threads)
    if cfg.e2e_ddp:
        from .equivalence import check

        out["ddp"] = check(world=2, finetune=True, resume=False)
        log(f"end_to_end ddp: world 2, max |param diff| {out['ddp']['max_param_diff']:.2e}")
    else:
        out["ddp"] = None
    out["seconds"] = round(time.perf_counter() - t0, 1)
    return out


def _train_precision(tcfg) -> str:
    from .train import _precision, resolve_device

    return _precision(tcfg, resolve_device(tcfg.device))


def index_at_scale(cfg: BenchConfig, workdir: Path, log=print) -> dict:
    out = {}
    n = cfg.rss_size
    corpus = unit_vectors(n, cfg.dim, seed=cfg.seed)
    folder = workdir / f"f16_{n}"
    index16 = Index(corpus, [str(i) for i in range(n)], dtype="float16")
    del corpus
    index16.save(folder)
    del index16
    root = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": root + os.pathsep + os.environ.get("PYTHONPATH", "")}
    code = (f"from teachclip_lite.bench import _rss_probe; "
            f"_rss_probe({str(folder)!r}, {cfg.k}, {cfg.batch}, {cfg.dim})")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    if res.returncode != 0:
        raise RuntimeError(f"peak-RSS probe failed: {res.stderr.strip().splitlines()[-1:]}")
    probe = json.loads(res.stdout.strip().splitlines()[-1])
    out["float16_search"] = {"n": n, "dim": cfg.dim, **probe}
    log(f"float16 index N={n}: peak RSS {probe['peak_rss_mib']:.0f} MiB (after import "
        f"{probe['rss_after_import_mib']:.0f} MiB, index file {probe['index_mib']:.0f} MiB)")
    out["faiss"] = faiss_section(cfg, log) if faiss_available() else {"available": False}
    return out


def faiss_section(cfg: BenchConfig, log=print) -> dict:
    """IVF-Flat against exact search: recall@k of the exact top-k, and speed, per nprobe."""
    res = {"available": True, "kind": "ivf"}
    queries = unit_vectors(cfg.batch, cfg.dim, seed=cfg.seed + 1)
    for n in cfg.faiss_sizes:
        index = Index(unit_vectors(n, cfg.dim, seed=cfg.seed), [str(i) for i in range(n)])
        _, exact = index.search(queries, cfg.k)
        t = time.perf_counter()
        ann = FaissIndex(index, "ivf", seed=cfg.seed)
        row = {"build_s": time.perf_counter() - t, "nlist": int(ann.impl.nlist), "nprobe": {}}
        for nprobe in cfg.faiss_nprobe:
            ann.impl.nprobe = min(nprobe, ann.impl.nlist)
            secs = best_times({"b": lambda: ann.search(queries, cfg.k)}, cfg.repeats)["b"]
            _, rows = ann.search(queries, cfg.k)
            hit = sum(len(set(a.tolist()) & set(b.tolist())) for a, b in zip(rows, exact))
            row["nprobe"][str(nprobe)] = {"recall_at_k": hit / exact.numel(),
                                          "batched_ms_per_query": 1e3 * secs / cfg.batch}
        res[str(n)] = row
        log(f"faiss IVF N={n} (nlist {row['nlist']}): " + ", ".join(
            f"nprobe {p}: recall@{cfg.k} {v['recall_at_k']:.3f} at {v['batched_ms_per_query']:.3f} ms/q"
            for p, v in row["nprobe"].items()))
        del index, ann
    return res


def quality(cfg: BenchConfig, log=print) -> tuple[dict, dict, list]:
    """experiments.run_experiments on the toy world (or the synthetic stand-in): summary, uniform and the
    loss-choice rows (experiments.loss_choice on the first seed; [] when turned off, as in quick runs)."""
    try:
        from .experiments import ExperimentConfig, loss_choice, run_experiments, synthetic_features
    except ImportError as e:
        raise RuntimeError(f"bench quality needs teachclip_lite.experiments ({e}); "
                           f"run with --skip-quality for the efficiency part only") from None
    exp = cfg.experiment or (ExperimentConfig.quick() if cfg.quick else ExperimentConfig())
    if cfg.features == "synthetic":
        features, truth = synthetic_features(seed=cfg.seed)
        exp = replace(exp, truth_root=None)
    else:
        try:
            from .features import toy_features
        except ImportError as e:
            raise RuntimeError(f"bench quality needs teachclip_lite.features.toy_features ({e})") from None
        features, truth = toy_features(), None
        if exp.out_dir is None and not cfg.quick:   # the lessons load these models instead of training them again
            from .experiments import models_dir
            exp = replace(exp, out_dir=str(models_dir(exp, features)))
            log(f"checkpoints in {exp.out_dir}")
    results = run_experiments(exp, features, truth=truth)
    log(results.markdown())
    choice = []
    if cfg.loss_choice and ("teachclip", exp.seeds[0]) in results.models:
        choice = loss_choice(results, features, exp, seed=exp.seeds[0])
        log("loss choice: " + "; ".join(f"{r['channel']} {r['loss']} R@1 {r['t2v_r1']:.1f}" for r in choice))
    return results.summary(), dict(results.uniform), choice


def run(cfg: BenchConfig, log=print) -> dict:
    result = {"quality": {}, "attention_hit_uniform": None, "attention_hit_any_uniform": None}
    threads = torch.get_num_threads()
    where = machine()   # now: the trainer changes torch's thread count; the timings run with this one
    if cfg.quality:
        summary, uniform, result["loss_choice"] = quality(cfg, log)
        torch.set_num_threads(threads)  # the trainer sets its own thread count
        result["quality"] = {m: {k: v for k, v in s.items() if k != "seeds"} for m, s in summary.items()}
        result["attention_hit_uniform"] = uniform.get("attention_hit_uniform")
        result["attention_hit_any_uniform"] = uniform.get("attention_hit_any_uniform")
    with tempfile.TemporaryDirectory(prefix="tclite-bench-") as tmp:
        result["efficiency"] = efficiency(cfg, Path(tmp), log)
        result["storage_bytes_per_video"] = storage(cfg.dim, cfg.frames, cfg.tokens)
        result["flops_per_query"] = pair_flops(cfg.dim, cfg.frames, cfg.tokens, cfg.words)
        result["paper_scale"] = paper_scale(log)
        result["index"] = index_at_scale(cfg, Path(tmp), log)
    if cfg.encoding:
        result["encoding"] = encoding(cfg, log)
    if cfg.end_to_end:
        result["end_to_end"] = end_to_end(cfg, log)
        torch.set_num_threads(threads)
    result["machine"] = where
    result["date"] = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    return result


# ---------------------------------------------------------------------- report

def cost_ratios(result: dict) -> list[str]:
    """What a teacher costs per query against the student, as numbers with what makes them: the student's
    pair score is one d-dim dot product; a teacher's is its pair network (FLOPs counted by torch)."""
    eff, flops = result["efficiency"], result["flops_per_query"]
    lines = []
    mid = eff.get("10000") or eff[max(eff, key=int)]
    n = next(k for k, v in eff.items() if v is mid)
    for name, ms in sorted(mid["teacher_ms_per_query"].items(), key=lambda kv: kv[1]):
        lines.append(f"{name}: {ms / mid['student_ms_per_query']:.0f}x the student's time per query at N={int(n):,} "
                     f"(one query alone; {ms / mid['student_batched_ms_per_query']:.0f}x its batched time), "
                     f"{flops[name] / flops['student']:.0f}x its FLOPs per (query, video)")
    lines.append("TS2-Net is the cheapest teacher because its pair score is T text-frame cosines (12 dot products "
                 "where the student has one) pooled over frames; X-Pool and X-CLIP run attention and projections "
                 "per pair. All of them grow linearly with N, like the student, so the ratios hold at any corpus size.")
    big = eff.get("1000000")
    if big:
        lines.append(f"batched student search at N=1M: {big['student_batched_ms_per_query'] / big['matmul_floor_ms_per_query']:.2f}x "
                     "the bare matmul + top-k floor")
    probe = result["index"]["float16_search"]
    lines.append(f"peak RSS searching {probe['n']:,} float16 vectors: {probe['peak_rss_mib']:.0f} MiB; "
                 f"paper-scale student storage {result['paper_scale']['storage_bytes_per_video']['student']} bytes "
                 "per video")
    return lines


def markdown(result: dict) -> str:
    lines = [f"Measured {result['date']} on {result['machine']}.", ""]
    if result["quality"]:
        from .experiments import summary_table

        lines += [summary_table(result["quality"], {"attention_hit_uniform": result["attention_hit_uniform"],
                                                    "attention_hit_any_uniform": result["attention_hit_any_uniform"]}),
                  ""]
    if result.get("loss_choice"):
        lines += ["Teaching loss (teachclip, seed 0; coarse varied with fine \"ce\", fine varied with coarse "
                  "\"pearson\"; test R@1 / SumR):", "",
                  markdown_table(["channel", "loss", "R@1", "R@5", "R@10", "SumR"],
                                 [[r["channel"], r["loss"], *(f"{r[k]:.1f}" for k in ("t2v_r1", "t2v_r5", "t2v_r10",
                                                                                     "sumr"))]
                                  for r in result["loss_choice"]]), ""]
    rows = []
    for n, row in result["efficiency"].items():
        mark = "*" if row["extrapolated"] else ""
        t = row["teacher_ms_per_query"]
        single_floor = row.get("matmul_floor_single_ms")   # absent in results written before it was measured
        rows.append([f"{int(n):,}", f"{row['student_ms_per_query']:.3f}",
                     "–" if single_floor is None else f"{single_floor:.3f}", f"{row['student_batched_ms_per_query']:.3f}",
                     f"{row['matmul_floor_ms_per_query']:.3f}",
                     f"{row['student_batched_ms_per_query'] / row['matmul_floor_ms_per_query']:.2f}",
                     *(f"{t[x]:.1f}{mark}" if x in t else "–" for x in TEACHER_NAMES)])
    lines += ["Search time per query in ms (exact top-10, d=512; teachers: one query, pre-encoded videos).", "",
              markdown_table(["N", "student", "bare matmul, one query", "student, batch 32", "matmul floor, batch 32",
                              "ratio", *TEACHER_NAMES], rows),
              "", "\\* extrapolated linearly from the largest measured N.", ""]
    ps = result["paper_scale"]
    models = ["student", "student_float16", *TEACHER_NAMES]
    per = lambda d: [f"{d.get(m, d['student']):,}" for m in models]   # noqa: E731  (float16 costs what float32 does)
    lines += [markdown_table(["per video / per query", *models], [
        ["bytes stored (bench)", *per(result["storage_bytes_per_video"])],
        ["bytes stored (paper scale)", *per(ps["storage_bytes_per_video"])],
        ["FLOPs per query·video (bench)", *per(result["flops_per_query"])],
        ["FLOPs per query·video (paper)", *per(ps["flops_per_query"])]]), ""]
    f = ps["flops_per_query"]
    lines.append(f"Paper scale encoders (open_clip ViT-B-32): text {f['text_encoder'] / 1e9:.2f} GFLOPs per query; "
                 f"12 frames {f['video_encoder'] / 1e9:.1f} GFLOPs per video (once, at indexing). A query over 1M "
                 f"videos: student {(f['text_encoder'] + 1e6 * f['student']) / 1e9:.1f} GFLOPs, "
                 + ", ".join(f"{t} {(f['text_encoder'] + 1e6 * f[t]) / 1e9:.0f}" for t in TEACHER_NAMES) + ".")
    probe = result["index"]["float16_search"]
    lines += ["", f"float16 index, N={probe['n']:,}: peak RSS {probe['peak_rss_mib']:.0f} MiB "
              f"(of which {probe['rss_after_import_mib']:.0f} MiB is Python + torch; index file "
              f"{probe['index_mib']:.0f} MiB), batch-32 search {probe['batched_ms_per_query']:.3f} ms/query."]
    fa = result["index"]["faiss"]
    if fa.get("available"):
        for n, row in fa.items():
            if isinstance(row, dict):
                lines.append(f"faiss IVF-Flat, N={int(n):,}, nlist {row['nlist']}: " + "; ".join(
                    f"nprobe {p}: recall@10 {v['recall_at_k']:.3f}, {v['batched_ms_per_query']:.3f} ms/query"
                    for p, v in row["nprobe"].items()) + " (random vectors: the hardest case for IVF).")
    else:
        lines.append("faiss: not installed (pip install 'teachclip-lite[faiss]').")
    enc = result.get("encoding")
    if enc:
        r = enc["roofline"]
        names = [n for n in enc if n not in ("roofline", "query_ms", "query_search_ms", "query_corpus")]
        lines += ["", f"Encoding (matmul roofline here: fp32 {r['fp32_gflops']:.0f} GFLOP/s, bf16 {r['bf16_gflops']:.0f} "
                      "GFLOP/s):", "",
                  markdown_table(["backbone", "precision", "frames/s", "GFLOPs/frame", "share of roofline",
                                  "worst cosine vs fp32", "one query encoded, ms",
                                  f"encoded + top-10 of {enc.get('query_corpus', 0):,}, ms"],
                                 [[n, p, f"{v['frames_per_s']:.1f}", f"{v['gflops_per_frame']:.3f}",
                                   f"{100 * v['share_of_roofline']:.0f}%", f"{v['cos_vs_fp32']:.5f}",
                                   f"{enc['query_ms'][n][p]:.1f}", f"{enc['query_search_ms'][n][p]:.1f}"]
                                  for n in names for p, v in enc[n].items()])]
        for n in names:
            for p, v in enc[n].items():
                if "ms_per_clip" in v:
                    b = v["ms_per_clip"]
                    lines.append(f"- {n} {p}, ms per 12-frame toy clip: decoding {b['decode']:.1f} (the decoder "
                                 f"child, overlapped with encoding), encoding {b['encode']:.1f}: " + ", ".join(
                                     f"{k} {x:.1f}" for k, x in b.items() if k not in ("decode", "encode")))
    e2e = result.get("end_to_end")
    if e2e:
        lines += ["", f"End to end ({e2e['student']} student, InfoNCE only, {e2e['epochs']} epochs, "
                      f"{e2e['train_videos']} training videos of the toy world, {e2e['test_queries']} test queries; "
                      f"fine-tuned: the toy CLIP's last {e2e['finetune_blocks']} block(s) of each tower at lr x "
                      f"{e2e['backbone_lr_mult']:g}):", "",
                  markdown_table(["features", "R@1", "R@5", "R@10", "MdR", "SumR", "best val R@1", "precision",
                                  "seconds"],
                                 [[n, *(f"{e2e[n][k]:.1f}" for k in ("t2v_r1", "t2v_r5", "t2v_r10", "t2v_mdr", "sumr",
                                                                     "best_val_r1")),
                                   e2e[n]["precision"], f"{e2e[n]['seconds']:.0f}"] for n in ("frozen", "finetuned")])]
        if e2e.get("ddp"):
            d = e2e["ddp"]
            lines += ["", f"torchrun, {d['world_size']} gloo processes against one (the same global batch, "
                          f"{d['weights']} weight tensors): max |weight difference| {d['max_param_diff']:.1e}."]
    lines += ["", "Cost ratios:"] + [f"- {line}" for line in cost_ratios(result)]
    return "\n".join(lines)


def write_json(result: dict, path: str | os.PathLike) -> None:
    write_atomic(path, json.dumps(result, indent=1))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m teachclip_lite.bench", description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True, help="JSON file to write")
    p.add_argument("--quick", action="store_true", help="small N and few repeats (about a minute)")
    p.add_argument("--skip-quality", action="store_true", help="efficiency, storage and FLOPs only")
    p.add_argument("--features", choices=("toy", "synthetic"), default="toy",
                   help="quality on the toy world (default) or the synthetic feature-space stand-in")
    e2e = p.add_argument_group("the end_to_end section alone (the study in docs/TOY_WORLD.md)")
    e2e.add_argument("--end-to-end-only", action="store_true", help="run only the end_to_end section, print its JSON")
    e2e.add_argument("--e2e-videos", type=int, default=BenchConfig.e2e_videos, help="training videos")
    e2e.add_argument("--e2e-epochs", type=int, default=BenchConfig.e2e_epochs)
    e2e.add_argument("--e2e-finetune", type=int, default=BenchConfig.e2e_finetune, help="CLIP blocks (-1: all)")
    e2e.add_argument("--e2e-lr-mult", type=float, default=BenchConfig.e2e_backbone_lr_mult, help="CLIP lr / lr")
    e2e.add_argument("--e2e-random", action="store_true", help="a randomly initialised toy CLIP")
    e2e.add_argument("--no-ddp", action="store_true", help="skip the 2-process equivalence check")
    args = p.parse_args(argv)
    if args.end_to_end_only:
        cfg = BenchConfig(e2e_videos=args.e2e_videos, e2e_epochs=args.e2e_epochs, e2e_finetune=args.e2e_finetune,
                          e2e_backbone_lr_mult=args.e2e_lr_mult, e2e_random=args.e2e_random, e2e_ddp=not args.no_ddp)
        torch.set_num_threads(max(1, os.cpu_count() or 1))
        result = end_to_end(cfg, log=lambda s: print(s, file=sys.stderr, flush=True))
        write_json(result, args.out)
        print(json.dumps(result, indent=1))
        return 0
    make = BenchConfig.quick_config if args.quick else BenchConfig
    cfg = make(quality=not args.skip_quality, features=args.features)
    t = time.perf_counter()
    try:
        result = run(cfg, log=lambda s: print(s, file=sys.stderr, flush=True))
    except (RuntimeError, ValueError, OSError) as e:
        print(f"bench: {e}", file=sys.stderr)
        return 1
    write_json(result, args.out)
    print(markdown(result))
    print(f"\n(wrote {args.out} in {time.perf_counter() - t:.0f} s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
