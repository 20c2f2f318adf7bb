"""The frozen CLIP under everything: open_clip models, loaded one of three ways.

1. an open_clip pretrained tag (ViT-B-32 + "openai" is the paper's backbone),
   from the local cache or downloaded when the network allows;
2. a local checkpoint file;
3. the kit's toy CLIP, a tiny config registered with open_clip
   (model_configs/teachclip-toy.json) and pretrained here on the toy world's
   per-frame captions, so that every path runs offline, in CI too.

Whatever the source, `Backbone` gives the same four things the rest of the kit
needs: frame embeddings, patch tokens, sentence embeddings and word tokens,
all projected into CLIP's joint space.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import socket
import threading
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import open_clip
import torch
import torch.nn.functional as F

from .losses import info_nce
from .paths import write_atomic

HERE = Path(__file__).resolve().parent
TOY_MODEL = "teachclip-toy"
TOY_CHECKPOINT = HERE / "assets" / "toy_clip.pt"
open_clip.add_model_config(HERE / "model_configs" / f"{TOY_MODEL}.json")


class BackboneError(RuntimeError):
    """The backbone cannot be loaded; the message says what to do instead."""


@dataclass(frozen=True)
class BackboneConfig:
    """name: "toy" or an open_clip model name. pretrained: an open_clip tag, a checkpoint path,
    "random" (architecture only), or None (the toy checkpoint for "toy", "openai" otherwise)."""

    name: str = "toy"
    pretrained: str | None = None
    device: str | None = None
    precision: str = "fp32"      # "fp32" | "bf16" | "auto" (precision.py); not fp32: the key says so


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def file_digest(path: Path, length: int = 12) -> str:
    """Leading hex digits of a file's SHA-256: names weights in cache keys and index configs."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:length]


def _reachable(host: str, timeout: float = 4.0) -> bool:
    """Can we open a TCP connection? Runs in a thread so a hanging DNS lookup cannot block us."""
    ok = []

    def probe():
        try:
            socket.create_connection((host, 443), timeout=timeout).close()
            ok.append(True)
        except OSError:
            pass

    t = threading.Thread(target=probe, daemon=True)
    t.start()
    t.join(timeout + 1.0)
    return bool(ok)


def _cached_weights(name: str, tag: str) -> str | None:
    """Path of already-downloaded weights for an open_clip tag, without touching the network."""
    cfg = open_clip.get_pretrained_cfg(name, tag)
    repo = (cfg.get("hf_hub") or "").rstrip("/")
    if repo:
        from huggingface_hub import try_to_load_from_cache

        for fname in ("open_clip_model.safetensors", "open_clip_pytorch_model.bin"):
            hit = try_to_load_from_cache(repo, fname)
            if isinstance(hit, str):
                return hit
    url = cfg.get("url") or ""
    if url:
        local = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "clip" / os.path.basename(url)
        if local.exists():
            return str(local)
    return None


def resolve_weights(cfg: BackboneConfig) -> tuple[str, str | None, str]:
    """(open_clip model name, what to pass as `pretrained`, cache key) — or a BackboneError in seconds."""
    if cfg.name == "toy":
        if cfg.pretrained == "random":
            return TOY_MODEL, None, f"{TOY_MODEL}/random"
        path = Path(cfg.pretrained) if cfg.pretrained else TOY_CHECKPOINT
        if not path.is_file():
            raise BackboneError(f"{path}: toy CLIP checkpoint not found; run `make toy-clip` to train it "
                                f"(about 3 minutes on 2 CPU cores)")
        return TOY_MODEL, str(path), f"{TOY_MODEL}/{file_digest(path)}"
    if cfg.name not in open_clip.list_models():
        raise BackboneError(f"unknown open_clip model {cfg.name!r}; see open_clip.list_models() or use 'toy'")
    tag = cfg.pretrained if cfg.pretrained is not None else "openai"
    if tag == "random":
        return cfg.name, None, f"{cfg.name}/random"
    path = Path(tag).expanduser()
    if path.is_file():
        return cfg.name, str(path), f"{cfg.name}/{file_digest(path)}"
    if path.suffix in (".pt", ".pth", ".bin", ".safetensors") or os.sep in tag:
        raise BackboneError(f"{path}: checkpoint file not found")
    tags = open_clip.list_pretrained_tags_by_model(cfg.name)
    if tag not in tags:
        raise BackboneError(f"{cfg.name} has no pretrained tag {tag!r} (known: {', '.join(tags) or 'none'}); "
                            f"pass a local checkpoint path instead")
    cached = _cached_weights(cfg.name, tag)
    if cached:
        return cfg.name, cached, f"{cfg.name}/{tag}"
    if os.environ.get("HF_HUB_OFFLINE") == "1" or not _reachable("huggingface.co"):
        raise BackboneError(
            f"{cfg.name} '{tag}' weights are not in the local cache and cannot be downloaded (offline). "
            f"Download them once on a networked machine (open_clip caches them under ~/.cache/huggingface), "
            f"pass a local checkpoint file (--pretrained /path/to/{cfg.name}.pt), or use the kit's toy backbone (--toy)")
    return cfg.name, tag, f"{cfg.name}/{tag}"


class Backbone:
    """A frozen open_clip model with the four encoders the kit needs."""

    def __init__(self, model: torch.nn.Module, tokenizer, name: str, key: str, device: str, precision: str = "fp32"):
        self.model, self.tokenizer, self.name, self.key, self.device = model.eval(), tokenizer, name, key, device
        self.precision = precision                     # resolved: "fp32", "bf16" (weights cast) or "auto" (CUDA)
        self.dtype = next(model.parameters()).dtype
        pp = open_clip.get_model_preprocess_cfg(model)
        size = pp.get("size", 224)
        self.image_size = int(size[0] if isinstance(size, (tuple, list)) else size)
        self.mean = torch.tensor(pp.get("mean", open_clip.OPENAI_DATASET_MEAN), device=device).view(1, 3, 1, 1)
        self.std = torch.tensor(pp.get("std", open_clip.OPENAI_DATASET_STD), device=device).view(1, 3, 1, 1)
        self.context_length = int(getattr(model, "context_length", 77))
        for p in self.model.parameters():
            p.requires_grad_(False)

    @property
    def embed_dim(self) -> int:
        return int(self.model.text_projection.shape[1])

    @property
    def logit_scale(self) -> float:
        return float(self.model.logit_scale.exp())

    def _autocast(self):
        from .precision import autocast

        return autocast(self.precision, self.device)

    def preprocess(self, frames: torch.Tensor) -> torch.Tensor:
        """uint8 [N,3,S,S] -> normalised float, resized to the model's input size if needed."""
        x = frames.to(self.device, non_blocking=True).float().div_(255)
        if x.shape[-1] != self.image_size or x.shape[-2] != self.image_size:
            x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bicubic", antialias=True,
                              align_corners=False)
        return ((x - self.mean) / self.std).to(self.dtype)

    def encode_frames(self, frames: torch.Tensor, patches: bool = False):
        """uint8 frames [N,3,S,S] -> (embeddings [N,D], projected patch tokens [N,P,D] or None), float32 on CPU."""
        visual = self.model.visual
        with torch.inference_mode(), self._autocast():
            if not patches:
                pooled, tokens = self.model.encode_image(self.preprocess(frames)), None
            else:
                old = visual.output_tokens
                visual.output_tokens = True
                try:
                    pooled, tokens = visual(self.preprocess(frames))
                finally:
                    visual.output_tokens = old
                if visual.proj is not None:
                    tokens = tokens @ visual.proj
        # clone outside inference mode: callers may then edit the tensors in place
        return pooled.float().cpu().clone(), None if tokens is None else tokens.float().cpu().clone()

    def tokenize(self, texts: list[str]) -> torch.Tensor:
        return self.tokenizer(list(texts))

    def count_tokens(self, text: str) -> int:
        """Tokens a caption needs with SOT/EOT; more than context_length gets truncated."""
        return len(self.tokenizer.encode(text)) + 2 if hasattr(self.tokenizer, "encode") else self.context_length

    def encode_text(self, texts: list[str]):
        """-> (sentence [N,D] = projected EOT token, words [N,L,D] projected tokens, mask [N,L]), float32 on CPU."""
        tokens = self.tokenize(texts)
        n = tokens.shape[1]
        used = int(tokens.argmax(dim=-1).max()) + 1 if len(tokens) else n   # through the batch's last EOT
        with torch.inference_mode():
            sentence, words, mask = _encode_text_tokens(self.model, tokens[:, :used].to(self.device),
                                                        self._autocast())
        # the tower runs on the used positions only (causal attention: they come out as with the full context,
        # at a fraction of the FLOPs: 77 -> about 12 for a short query); words keep the context's length,
        # zero and masked after the EOT
        return (sentence.clone(), F.pad(words, (0, 0, 0, n - used)), F.pad(mask, (0, n - used)))


def text_tokens(model, tokens: torch.Tensor):
    """CLIP's text tower, keeping every token (open_clip's encode_text keeps only the EOT one), with gradients
    when the model trains (finetune.py): (sentence [N,D] = projected EOT token, words [N,L,D], mask [N,L]) on
    the model's device. `tokens` may be cut after the batch's last EOT: the attention is causal, so the kept
    positions come out exactly as with the full context."""
    n = tokens.shape[1]
    cast = model.transformer.get_cast_dtype()
    x = model.token_embedding(tokens).to(cast) + model.positional_embedding[:n].to(cast)
    x = model.ln_final(model.transformer(x, attn_mask=model.attn_mask[:n, :n]))
    proj = model.text_projection
    x = proj(x) if isinstance(proj, torch.nn.Linear) else x @ proj
    eot = tokens.argmax(dim=-1)  # the EOT token has the largest id in CLIP's vocabulary
    mask = torch.arange(n, device=tokens.device)[None] <= eot[:, None]
    return x[torch.arange(len(x), device=x.device), eot], x, mask


def _encode_text_tokens(model, tokens: torch.Tensor, autocast=None):
    autocast = autocast or torch.autocast("cpu", enabled=False)
    with autocast:
        sentence, words, mask = text_tokens(model, tokens)
    return sentence.float().cpu(), words.float().cpu(), mask.cpu()


def load_backbone(cfg: BackboneConfig = BackboneConfig()) -> Backbone:
    """Build the open_clip model the config names, with its weights, frozen and in eval mode."""
    from .precision import dtype_of, resolve

    name, pretrained, key = resolve_weights(cfg)
    device = cfg.device or default_device()
    precision = resolve(cfg.precision, device)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import logging

        level = logging.getLogger().level
        logging.getLogger().setLevel(logging.ERROR)  # open_clip logs "no pretrained weights" for random init
        try:
            model = open_clip.create_model(name, pretrained=pretrained, device=device)
        except Exception as e:
            raise BackboneError(f"{pretrained or name}: cannot load weights ({type(e).__name__}: "
                                f"{str(e).splitlines()[0][:200]})") from None
        finally:
            logging.getLogger().setLevel(level)
    if precision == "bf16":   # the weights themselves: faster than autocasting fp32 weights op by op
        model = model.to(dtype_of(precision))
    if precision != "fp32":
        key = f"{key}@{precision}"   # features and indexes computed in another format are kept apart
    return Backbone(model, open_clip.get_tokenizer(name), name, key, device, precision)


# ---------------------------------------------------------------- toy CLIP pretraining

@dataclass(frozen=True)
class ToyClipConfig:
    """Recipe for the toy CLIP: CLIP's contrastive loss on the toy world's per-frame captions."""

    seed: int = 0
    steps: int = 600
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.1
    warmup: float = 0.4             # share of the steps warming up (train.warmup_cosine); 0.1/0.17/0.25/0.4 gave
                                    # test frame-to-caption R@1 0.477/0.520/0.521/0.540
    frames_per_video: int = 12      # frames decoded per training clip
    max_videos: int | None = None   # cap on training clips (small runs in tests)
    compound_prob: float = 0.25     # share of pairs that use a clip caption naming the frame's event
    eval_every: int = 200


def _toy_frame_data(root: Path, split: str, cfg: ToyClipConfig, size: int):
    """Decoded frames of one split and, per frame, its caption (and the clip captions naming its event)."""
    from tqdm.auto import tqdm

    from .toy import frame_captions, load_truth
    from .video import SamplingConfig, load_video

    truth = [r for r in load_truth(root).values() if r["split"] == split]
    if cfg.max_videos:
        truth = truth[: cfg.max_videos]
    frames, caps, compound = [], [], []
    for rec in tqdm(truth, desc=f"decode {split}", leave=False):
        clip = load_video(root / rec["video"], SamplingConfig(cfg.frames_per_video, size))
        per_frame = frame_captions(rec)
        for t in np.flatnonzero(clip.mask.numpy()):
            i = int(clip.indices[t])
            frames.append(clip.frames[t])
            caps.append(per_frame[i])
            compound.append([c["caption"] for c in rec["captions"] if i in c["frames"] and len(c["events"]) > 1])
    return torch.stack(frames), caps, compound


def frame_caption_recall(backbone_model, tokenizer, frames: torch.Tensor, caps: list[str], mean, std,
                         seed: int = 0) -> dict:
    """Held-out retrieval between frames and the distinct frame captions.

    frame->caption: each frame ranks every distinct caption (chance 1/#captions).
    caption->frame: one random frame per distinct caption, ranked among those frames (chance 1/#captions).
    """
    model = backbone_model.eval()
    vocab = sorted(set(caps))
    with torch.inference_mode():
        t = F.normalize(model.encode_text(tokenizer(vocab)), dim=-1)
        img = torch.cat([F.normalize(model.encode_image((frames[i:i + 256].float() / 255 - mean) / std), dim=-1)
                         for i in range(0, len(frames), 256)])
    target = torch.tensor([vocab.index(c) for c in caps])
    f2c = float(((img @ t.T).argmax(1) == target).float().mean())
    g = torch.Generator().manual_seed(seed)
    pick = torch.stack([torch.nonzero(target == j)[torch.randint(int((target == j).sum()), (1,), generator=g)][0, 0]
                        for j in range(len(vocab))])
    c2f = float(((t @ img[pick].T).argmax(1) == torch.arange(len(vocab))).float().mean())
    return {"frame_to_caption_r1": f2c, "caption_to_frame_r1": c2f, "num_captions": len(vocab),
            "chance_r1": 1 / len(vocab), "num_frames": len(frames)}


def pretrain_toy_clip(data_root: str | os.PathLike = "data/toy", out: str | os.PathLike | None = TOY_CHECKPOINT,
                      cfg: ToyClipConfig = ToyClipConfig(), progress: bool = True) -> dict:
    """Train the toy CLIP from scratch; save it (fp16, atomically) with its provenance; return the metrics."""
    from tqdm.auto import tqdm

    from .train import warmup_cosine   # train imports features, which imports this module

    torch.manual_seed(cfg.seed)
    root = Path(data_root)
    model = open_clip.create_model(TOY_MODEL, pretrained=None)
    tok = open_clip.get_tokenizer(TOY_MODEL)
    size = model.visual.image_size[0] if isinstance(model.visual.image_size, (tuple, list)) else model.visual.image_size
    pp = open_clip.get_model_preprocess_cfg(model)
    mean, std = torch.tensor(pp["mean"]).view(1, 3, 1, 1), torch.tensor(pp["std"]).view(1, 3, 1, 1)
    t0 = time.perf_counter()
    frames, caps, compound = _toy_frame_data(root, "train", cfg, size)
    ev_frames, ev_caps, _ = _toy_frame_data(root, "test", cfg, size)
    by_caption: dict[str, list[int]] = {}
    for i, c in enumerate(caps):
        by_caption.setdefault(c, []).append(i)
    vocab = sorted(by_caption)
    decode_s = time.perf_counter() - t0

    rng = np.random.default_rng(cfg.seed)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: warmup_cosine(s, cfg.steps, cfg.warmup))
    history = []
    bar = tqdm(range(cfg.steps), desc="toy CLIP", disable=not progress)
    model.train()
    for step in bar:
        # distinct captions per batch: duplicates would be false negatives for the contrastive loss
        pick = rng.choice(len(vocab), size=min(cfg.batch_size, len(vocab)), replace=False)
        idx = [by_caption[vocab[j]][rng.integers(len(by_caption[vocab[j]]))] for j in pick]
        texts = [rng.choice(compound[i]) if compound[i] and rng.random() < cfg.compound_prob else caps[i]
                 for i in idx]
        x = frames[idx].float() / 255
        img, txt, scale = model(((x - mean) / std), tok(texts))
        logits = scale * img @ txt.T
        loss = info_nce(logits)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, np.log(100))
        bar.set_postfix(loss=f"{loss.item():.3f}")
        if (step + 1) % cfg.eval_every == 0 or step + 1 == cfg.steps:
            m = frame_caption_recall(model, tok, ev_frames, ev_caps, mean, std, cfg.seed)
            history.append({"step": step + 1, "loss": round(loss.item(), 4), **m})
            model.train()
    model.eval()
    metrics = {**history[-1], "train_seconds": round(time.perf_counter() - t0, 1),
               "decode_seconds": round(decode_s, 1), "train_frames": len(frames)}
    if out is not None:
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        # saved by path under a fixed temp name, not through atomic_open: torch names the zip
        # archive inside after the file, so this keeps a rerun's checkpoint identical byte for byte
        tmp = out.with_name(f".{out.name}.tmp")
        torch.save({k: v.half() if v.is_floating_point() else v for k, v in model.state_dict().items()}, tmp)
        os.replace(tmp, out)
        meta = {"model": TOY_MODEL, "recipe": asdict(cfg), "data": str(data_root),
                "toy_world": json.loads((root / "meta.json").read_text())["config"],
                "metrics": metrics, "history": history, "torch": torch.__version__,
                "open_clip": open_clip.__version__, "sha256_12": file_digest(out)}
        write_atomic(out.with_suffix(".json"), json.dumps(meta, indent=2))
    return metrics


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description="teachclip-lite backbone tools")
    sub = p.add_subparsers(dest="cmd", required=True)
    pt = sub.add_parser("pretrain-toy", help="train the toy CLIP on the toy world's per-frame captions")
    pt.add_argument("--data", default="data/toy")
    pt.add_argument("--out", default=str(TOY_CHECKPOINT))
    pt.add_argument("--steps", type=int, default=ToyClipConfig.steps)
    pt.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    m = pretrain_toy_clip(a.data, a.out, ToyClipConfig(seed=a.seed, steps=a.steps))
    print(json.dumps(m, indent=2))


if __name__ == "__main__":
    main()
