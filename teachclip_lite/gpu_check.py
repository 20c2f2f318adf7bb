"""`make gpu-check`: the paper-shaped student trained end to end on a CUDA machine, single GPU and torchrun.

What it trains: the TeachCLIP student (seqTransf + AFA) on ViT-B-32 with random weights (nothing to
download), 12 frames per video at 224 px, fine-tuning all of CLIP with bf16 autocast, on a subset of the
toy world (its videos decoded at 224 px), InfoNCE only, for `steps` steps at the largest batch that fits
(tried from large to small). Then the same through `torchrun --standalone --nproc_per_node=<all GPUs>`.
It writes runs/gpu_check.json: {device, steps, batch, samples_per_s, peak_memory_gb, world_size,
loss_first, loss_last, seconds} of the single-GPU run, and the same record of the torchrun run under
"torchrun". On a machine without CUDA it says so and
measures nothing (exit 0), unless --allow-cpu (a tiny run, for the kit's own tests).

It needs nothing but the repository and its venv: `make venv data gpu-check`.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

from . import distributed
from .paths import RUNS_DIR, TOY_DIR, write_atomic

BATCHES = (512, 384, 256, 192, 128, 96, 64, 32, 16, 8)


def _subset(dataset, videos: int):
    """The first `videos` training videos and an eighth as many validation videos, with their captions."""
    from .data import Dataset

    keep = set(dataset.videos("train")[:videos]) | set(dataset.videos("val")[:max(2, videos // 8)])
    return Dataset(dataset.root, [c for c in dataset.captions if c.video in keep], dataset.source, dataset.problems)


def prepare(backbone_name: str, videos: int, frames: int, device: str):
    """(train features, val features, backbone): the toy subset encoded once by the frozen backbone (what
    the cache holds), with its pixels at the backbone's input size for end-to-end training."""
    from .backbone import BackboneConfig, load_backbone
    from .data import load_dataset
    from .features import build_features
    from .finetune import attach_pixels
    from .video import SamplingConfig

    bb = load_backbone(BackboneConfig(backbone_name, "random" if backbone_name != "toy" else None, device=device))
    ds = _subset(load_dataset(TOY_DIR), videos)
    progress = distributed.is_main()
    fs = build_features(ds, bb, SamplingConfig(frames, bb.image_size), progress=progress)
    attach_pixels(fs, ds.root, bb, progress=progress)
    return fs.split("train"), fs.split("val"), bb


def train_once(train_fs, val_fs, bb, batch: int, steps: int, blocks: int, checkpointing: bool) -> dict:
    from .student import StudentConfig
    from .train import TrainConfig, epoch_batches, train_student

    per_epoch = len(epoch_batches(train_fs.texts.video, batch, 0, 0))
    epochs = max(1, math.ceil(steps / per_epoch))
    cfg = TrainConfig(epochs=epochs, batch_size=batch, finetune=blocks, grad_checkpointing=checkpointing,
                      precision="auto", weights=(1.0, 0.0, 0.0), lr=1e-4)
    scfg = StudentConfig(dim=bb.embed_dim, num_frames=train_fs.videos.mask.shape[1], logit_scale=train_fs.logit_scale)
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    _, hist = train_student(cfg, train_fs, val_fs, student=scfg, backbone=bb, progress=distributed.is_main())
    if cuda:
        torch.cuda.synchronize()
    secs = time.perf_counter() - t0
    samples = epochs * len(train_fs.texts)
    dev = torch.cuda.get_device_name() if cuda else "cpu"
    return {"device": dev, "backbone": bb.name, "steps": epochs * per_epoch, "batch": batch, "epochs": epochs,
            "samples_per_s": round(samples / secs, 1),
            "peak_memory_gb": round(torch.cuda.max_memory_allocated() / 2**30, 2) if cuda else None,
            "world_size": distributed.size(), "loss_first": round(hist[0]["loss"], 4),
            "loss_last": round(hist[-1]["loss"], 4), "seconds": round(secs, 1),
            "note": "samples_per_s counts training captions over the whole call, per-epoch validation included"}


def largest_batch(train_fs, val_fs, bb, blocks: int, checkpointing: bool, start: int | None) -> int:
    """The largest batch of BATCHES (at most the training captions) whose step runs without running out of
    memory: one short epoch each, from large to small."""
    for b in [b for b in BATCHES if (start is None or b <= start) and b <= len(train_fs.texts)]:
        try:
            train_once(train_fs, val_fs, bb, b, 1, blocks, checkpointing)
            return b
        except torch.OutOfMemoryError:
            torch.cuda.empty_cache()
    raise RuntimeError("not even a batch of 8 fits on this GPU")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m teachclip_lite.gpu_check", description=__doc__.split("\n")[0])
    p.add_argument("--out", default=str(RUNS_DIR / "gpu_check.json"))
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--videos", type=int, default=512, help="training videos of the toy world to use")
    p.add_argument("--frames", type=int, default=12)
    p.add_argument("--backbone", default="ViT-B-32")
    p.add_argument("--finetune", type=int, default=-1, help="CLIP blocks to train (-1: all, as the paper)")
    p.add_argument("--checkpointing", action="store_true", help="gradient checkpointing in CLIP")
    p.add_argument("--batch", type=int, default=None, help="fixed batch (default: the largest that fits)")
    p.add_argument("--allow-cpu", action="store_true", help="run without CUDA (tiny settings; for tests)")
    p.add_argument("--no-torchrun", action="store_true", help="only the single-process run")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if not torch.cuda.is_available() and not a.allow_cpu:
        print("gpu-check needs a CUDA GPU (torch.cuda.is_available() is False here): nothing measured. "
              "Run `make gpu-check` on a machine with one; everything else in the kit runs on CPU.", file=sys.stderr)
        return 0
    distributed.setup()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    train_fs, val_fs, bb = prepare(a.backbone, a.videos, a.frames, device)
    batch = a.batch or largest_batch(train_fs, val_fs, bb, a.finetune, a.checkpointing, None)
    if a.worker:   # one rank of the torchrun run: the same training, each rank holding batch / N of every batch
        rec = train_once(train_fs, val_fs, bb, batch, a.steps, a.finetune, a.checkpointing)
        if distributed.is_main():
            write_atomic(a.out, json.dumps(rec, indent=1))
        distributed.barrier()
        return 0
    runs = [train_once(train_fs, val_fs, bb, batch, a.steps, a.finetune, a.checkpointing)]
    print(json.dumps(runs[-1]), file=sys.stderr, flush=True)
    if not a.no_torchrun:
        import gc

        gc.collect()
        if torch.cuda.is_available():   # hand this process's cached GPU memory back before the ranks start
            torch.cuda.empty_cache()
        n = max(1, torch.cuda.device_count())
        part = Path(a.out).with_suffix(".torchrun.json")
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={n}",
               "-m", "teachclip_lite.gpu_check", "--worker", "--out", str(part), "--steps", str(a.steps),
               "--videos", str(a.videos), "--frames", str(a.frames), "--backbone", a.backbone,
               "--finetune", str(a.finetune), "--batch", str(batch)]
        cmd += ["--checkpointing"] if a.checkpointing else []
        cmd += ["--allow-cpu"] if a.allow_cpu else []
        subprocess.run(cmd, check=True, env={**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "4")})
        runs.append(json.loads(part.read_text()))
        part.unlink()
        print(json.dumps(runs[-1]), file=sys.stderr, flush=True)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    out = {**runs[0], "torchrun": runs[1] if len(runs) > 1 else None, "torch": torch.__version__,
           "date": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    write_atomic(a.out, json.dumps(out, indent=1))
    print(f"wrote {a.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
