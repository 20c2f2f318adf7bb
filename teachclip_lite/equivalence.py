"""Does training on N processes equal training on one? The check `make bench` and the tests run.

The same few steps run twice on the same small data: in one process with the full batch, and as
`torchrun --standalone --nproc_per_node=N` ranks (gloo on CPU, NCCL on CUDA) that each encode B/N rows of
every batch (distributed.py). Then the weights are compared. Three trainings are checked: a teacher
(X-CLIP, InfoNCE over its pair logits), the TeachCLIP student taught by it (InfoNCE + coarse + fine), and
the same student fine-tuning the toy CLIP's last block end to end (from random pixels: what is checked is
the arithmetic, not what it learns). `resume` also kills nothing but stops the N-process run after one
epoch and runs it again, which must land on the same weights as the uninterrupted run.

    python -m teachclip_lite.equivalence            # world 2 on this machine, prints the JSON
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from . import distributed


def _data(finetune: bool):
    from .experiments import synthetic_features

    fs = synthetic_features(n_train=96, n_val=24, n_test=24, dim=64 if finetune else 32, seed=0)[0]
    backbone = None
    if finetune:
        from .backbone import BackboneConfig, load_backbone

        backbone = load_backbone(BackboneConfig("toy", device="cpu"))
        g = torch.Generator().manual_seed(0)
        T, S = fs.videos.mask.shape[1], backbone.image_size
        fs.videos.pixels = torch.randint(0, 256, (len(fs.videos), T, 3, S, S), dtype=torch.uint8, generator=g)
        fs.texts.tokens = backbone.tokenize([f"a red square then a blue circle {c}" for c in fs.texts.captions])
    return fs.split("train"), fs.split("val"), backbone


LR = 1e-4   # the official lr of the new modules; see check() for why not the kit's laptop 1e-2


def train(out: Path, finetune: bool, epochs: int = 2, stop_after: int | None = None) -> dict[str, torch.Tensor]:
    """The trainings both sides run; returns every trained weight by name (teacher.*, student.*). `stop_after`
    stops the student (taught by the finished teacher) after that many epochs; the next call resumes it."""
    from .train import TrainConfig, train_student, train_teacher

    tr, va, backbone = _data(finetune)
    tcfg = TrainConfig.for_teachers(epochs=epochs, batch_size=30, threads=1, lr=LR)
    teacher, _ = train_teacher(tcfg, tr, va, "xclip", out_dir=out / "teacher", progress=False)
    scfg = TrainConfig(epochs=epochs, batch_size=30, threads=1, finetune=1 if finetune else 0, precision="fp32",
                       lr=LR)
    student, _ = train_student(scfg, tr, va, [teacher], out_dir=out / "student", progress=False,
                               stop_after=stop_after, backbone=backbone)
    weights = {f"teacher.{k}": v for k, v in teacher.state_dict().items()}
    weights |= {f"student.{k}": v for k, v in student.state_dict().items()
                if not k.startswith("clip.") or k[5:] in getattr(student, "tuned", ())}
    return weights


def max_diff(a: dict, b: dict) -> float:
    if a.keys() != b.keys():
        raise ValueError(f"different weights: {sorted(a.keys() ^ b.keys())[:3]}")
    return max(float((a[k].double() - b[k].double()).abs().max()) for k in a if a[k].numel())


def _torchrun(world: int, out: Path, finetune: bool, epochs: int, stop_after: int | None, timeout: float) -> dict:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={world}",
           "-m", "teachclip_lite.equivalence", "--worker", "--out", str(out), "--epochs", str(epochs)]
    cmd += ["--finetune"] if finetune else []
    cmd += ["--stop-after", str(stop_after)] if stop_after else []
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"torchrun failed ({done.returncode}): {done.stderr.strip()[-1500:]}")
    return torch.load(out / "weights.pt", weights_only=True)


def check(world: int = 2, finetune: bool = True, resume: bool = True, epochs: int = 2,
          timeout: float = 600) -> dict:
    """{world_size, max_param_diff (N ranks vs one process), resume_diff (stopped and resumed vs not), seconds}."""
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        one = train(tmp / "one", finetune, epochs)
        many = _torchrun(world, tmp / "many", finetune, epochs, None, timeout)
        out = {"world_size": world, "finetune": finetune, "epochs": epochs, "weights": len(one),
               "max_param_diff": max_diff(one, many)}
        if resume:
            _torchrun(world, tmp / "resumed", finetune, epochs, 1, timeout)
            resumed = _torchrun(world, tmp / "resumed", finetune, epochs, None, timeout)
            out["resume_diff"] = max_diff(many, resumed)
    out["seconds"] = round(time.perf_counter() - t0, 1)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="N-process training (torchrun, gloo on CPU) against one process")
    p.add_argument("--world", type=int, default=2, help="processes of the distributed run (default 2)")
    p.add_argument("--no-finetune", action="store_true", help="skip the end-to-end student")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)   # one rank of the torchrun side
    p.add_argument("--out", help=argparse.SUPPRESS)
    p.add_argument("--epochs", type=int, default=2, help=argparse.SUPPRESS)
    p.add_argument("--finetune", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--stop-after", type=int, default=None, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if not a.worker:
        print(json.dumps(check(a.world, finetune=not a.no_finetune), indent=1))
        return 0
    distributed.setup()
    torch.set_num_threads(1)
    weights = train(Path(a.out), a.finetune, a.epochs, a.stop_after)
    if distributed.is_main():
        torch.save(weights, Path(a.out) / "weights.pt")
    distributed.barrier()
    return 0


if __name__ == "__main__":
    sys.exit(main())
