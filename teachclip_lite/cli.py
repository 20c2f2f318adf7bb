"""The `teachclip-lite` console script: a folder of videos in, a search you can try out.

    teachclip-lite index VIDEO_DIR --out INDEX_DIR [--toy | --backbone NAME --pretrained TAG_OR_PATH
                                                    | --model CHECKPOINT] [--frames 12]
    teachclip-lite search INDEX_DIR "QUERY" [-k 5] [--json]
    teachclip-lite train --config CONFIG.yaml
    teachclip-lite eval --model CHECKPOINT --data DATASET_DIR

(also `python -m teachclip_lite ...`; `--debug` anywhere shows tracebacks). Every
failure is one line on stderr saying what went wrong and what to do, and a
non-zero exit status.

The work itself lives in `ingest.py` (index), `search.py` (search) and `poc.py` (train, eval);
this file is the parser and the one-line error handling.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
import warnings
from contextlib import contextmanager
from pathlib import Path

from .encoder import load_encoder
from .errors import PROG, UserError, one_line, shown
from .ingest import build_index
from .search import search_index
from .poc import TRAIN_KEYS, run_eval, run_train
from .precision import PRECISIONS


# ---------------------------------------------------------------------- the command line

# The kit's tools, one console script: `teachclip-lite toy --help` is `python -m teachclip_lite.toy --help`.
TOOLS = {"toy": ("teachclip_lite.toy", "generate the toy world (videos with known ground truth)"),
         "pretrain-toy": ("teachclip_lite.backbone", "train the toy CLIP on the toy world's per-frame captions"),
         "bench": ("teachclip_lite.bench", "the quality and efficiency benchmark (make bench)"),
         "lessons": ("teachclip_lite.runner", "run the notebooks with papermill and check their claims (make demo)")}


def _tool(name: str, argv: list[str]) -> int:
    import importlib

    module = importlib.import_module(TOOLS[name][0])
    return int(module.main(["pretrain-toy", *argv] if name == "pretrain-toy" else argv) or 0)

class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line like every other failure."""

    def error(self, message):
        raise UserError(f"{message} (see `{self.prog} --help`)", code=2)


def _positive(text: str) -> int:
    """An argparse type: a whole number >= 1 (`--frames 0` is refused, not silently taken as the default)."""
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, got {n}")
    return n


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="show the full traceback when something fails")
    p = _Parser(prog=PROG, parents=[common],
                description="Text-to-video retrieval the TeachCLIP way: index a folder of videos, search it, "
                            "train and evaluate students.")
    sub = p.add_subparsers(dest="command", metavar="{index,search,train,eval,toy,pretrain-toy,bench,lessons}",
                           parser_class=_Parser)
    sub.required = True

    pi = sub.add_parser("index", parents=[common], help="embed every video under a folder into a search index",
                        description="Embed every video file under VIDEO_DIR (any depth) into INDEX_DIR. Re-running "
                                    "embeds only new or changed files; an interrupted run resumes.")
    pi.add_argument("video_dir", metavar="VIDEO_DIR", help="folder of video files (searched at any depth)")
    pi.add_argument("--out", required=True, metavar="INDEX_DIR", help="index folder (created if needed)")
    pi.add_argument("--toy", action="store_true", help="the kit's toy backbone (offline, for the toy world)")
    pi.add_argument("--backbone", metavar="NAME", help="open_clip model name (default ViT-B-32)")
    pi.add_argument("--pretrained", metavar="TAG_OR_PATH", help="open_clip weights tag or a checkpoint file "
                                                                  "(default: openai)")
    pi.add_argument("--model", metavar="CHECKPOINT", help="a trained TeachCLIP student (OUT/model.pt of `train`)")
    pi.add_argument("--frames", type=_positive, metavar="N", help="frames sampled per video (default 12, or the model's)")
    pi.add_argument("--precision", choices=PRECISIONS, default=None,
                    help="number format of the backbone: auto (bf16 on CPUs with bf16 matrix instructions, autocast "
                         "on CUDA), fp32 or bf16; default: the index's own, else auto")
    pi.add_argument("--retry-failed", action="store_true",
                    help="try again the files that failed in an earlier run, even if they did not change")
    pi.add_argument("--verify", action="store_true",
                    help="only check the index at --out against its checksums (every file), then exit")
    pi.set_defaults(func=_cmd_index)

    ps = sub.add_parser("search", parents=[common], help="rank the indexed videos for a text query",
                        description="Rank the videos of INDEX_DIR for QUERY with the encoder the index was built "
                                    "with; prints rank, score and video path, best first. Works while `index` "
                                    "is still running (it reads the last complete version).")
    ps.add_argument("index_dir", metavar="INDEX_DIR", help="an index folder written by `index`")
    ps.add_argument("query", metavar="QUERY", help="what you are looking for, in words (quote it)")
    ps.add_argument("-k", type=_positive, default=5, help="how many results (default 5)")
    ps.add_argument("--json", action="store_true", help='print a JSON list of {"rank", "score", "video"}')
    ps.add_argument("--precision", choices=PRECISIONS, default=None,
                    help="check the query is encoded in this format (default: the index's, which is the only one "
                         "allowed)")
    ps.set_defaults(func=_cmd_search)

    pt = sub.add_parser("train", parents=[common], help="train teachers, then the TeachCLIP student",
                        formatter_class=argparse.RawDescriptionHelpFormatter,
                        description="Train the teachers, then the TeachCLIP student (and the baselines named in "
                                    "'models') on a dataset in the kit's format (data/README.md). Checkpoints, "
                                    "results.json, metrics.md and model.pt go to the config's 'out' folder; a "
                                    "re-run resumes.",
                        epilog="CONFIG.yaml settings (paths relative to the file):\n" + "\n".join(
                            f"  {k + ':':<14}{v}" for k, v in TRAIN_KEYS.items()) +
                        "\n\nexample:\n  data: my_videos\n  out: runs/poc\n  backbone: ViT-B-32\n"
                        "  pretrained: openai\n  train: {epochs: 10, batch_size: 120}")
    pt.add_argument("--config", required=True, metavar="CONFIG.yaml",
                    help="the settings below, as YAML (data/poc.yaml is an example)")
    pt.add_argument("--finetune", type=int, default=None, metavar="BLOCKS",
                    help="train the student end to end from pixels, CLIP's last BLOCKS blocks of each tower with it "
                         "(-1: all of CLIP; 0: frozen CLIP, heads on cached features, the default); overrides "
                         "train: {finetune: ...}. On several GPUs: torchrun --standalone --nproc_per_node=N "
                         "-m teachclip_lite train --config CONFIG.yaml")
    pt.set_defaults(func=_cmd_train)

    pe = sub.add_parser("eval", parents=[common], help="retrieval metrics of a trained student on a dataset",
                        description="Text-to-video metrics (R@1/5/10, MdR, MnR, SumR, v2t R@1) of a trained student "
                                    "on DATASET_DIR's test split (else every caption), beside the backbone's "
                                    "zero-shot mean pooling.")
    pe.add_argument("--model", required=True, metavar="CHECKPOINT", help="a student written by `train` (OUT/model.pt)")
    pe.add_argument("--data", required=True, metavar="DATASET_DIR",
                    help="videos + captions.csv in the kit's format (data/README.md)")
    pe.add_argument("--precision", choices=PRECISIONS, default=None,
                    help="number format of the backbone (default: the one the model was trained with)")
    pe.set_defaults(func=_cmd_eval)
    for name, (_, what) in TOOLS.items():   # listed here; `main` hands their arguments to the tool itself
        sub.add_parser(name, help=what, add_help=False)
    p.commands = sub.choices
    return p


def _cmd_index(a) -> int:
    if a.verify:
        from .index import Index

        if not (Path(a.out) / "CURRENT").exists():
            raise UserError(f"{a.out}: no index here to verify")
        index = Index.load(a.out, verify=True)
        print(f"{a.out}: {len(index)} vectors in {index.path.name}; vectors, ids and config are intact")
        return 0
    if a.model and (a.toy or a.backbone or a.pretrained):
        raise UserError("--model brings its own backbone; give --model alone, or --toy / --backbone without it",
                       code=2)
    if a.toy and (a.backbone or a.pretrained):
        raise UserError("--toy already names the backbone; give --toy, or --backbone NAME --pretrained TAG_OR_PATH",
                       code=2)
    out = Path(a.out)
    if Path(a.video_dir).resolve() == out.resolve():
        raise UserError("--out must be another folder than VIDEO_DIR (e.g. VIDEO_DIR/index or a folder next to it)",
                       code=2)
    if not Path(a.video_dir).is_dir():
        raise UserError(f"{a.video_dir}: no such folder (give the folder that holds your videos)")
    encoder = load_encoder(a.toy, a.backbone, a.pretrained, a.model, a.frames,
                           a.precision or _index_precision(out) or "auto")
    r = build_index(a.video_dir, out, encoder, retry_failed=a.retry_failed)
    from . import distributed

    if not distributed.is_main():   # under torchrun rank 0 reports
        return 0
    rate = f"{r.embedded / r.seconds:.1f} videos/s, {r.frames / r.seconds:.0f} frames/s" if r.embedded else ""
    if r.broken_links:
        print(f"{len(r.broken_links)} symbolic link(s) under {a.video_dir} point to nothing (or to themselves) and "
              f"were skipped, e.g. {shown(r.broken_links[0])}")
    if r.indexed == 0 and r.failed:
        first = r.errors[0]
        raise UserError(f"no video could be indexed: {r.failed} file(s) unreadable, e.g. {shown(first['video'])}: "
                       f"{first['reason']} (all listed in {out / 'errors.jsonl'})")
    if r.indexed == 0:
        print(f"no videos under {a.video_dir} any more: {out} is now an empty index (searches return nothing)")
        return 0
    print(f"indexed {r.indexed} video(s) into {out} ({r.embedded} embedded now"
          f"{', ' + rate if rate else ''}; {r.reused} unchanged) in {r.seconds:.1f} s with {encoder.describe()}")
    if r.failed:
        print(f"{r.failed} file(s) could not be read and were skipped: see {out / 'errors.jsonl'}"
              + (f" ({r.not_retried} of them unchanged since an earlier run, not retried)" if r.not_retried else ""))
    if r.ignored:
        print(f"{r.ignored} other file(s) under {a.video_dir} are not videos (by extension) and were ignored")
    print(f"try: {PROG} search {out} \"what you are looking for\"")
    return 0


def _index_precision(out: Path) -> str | None:
    """The number format an existing index was built in (a re-run keeps it unless told otherwise)."""
    from .index import Index, IndexFormatError

    try:
        return (Index.load(out, verify=False).config.get("encoder") or {}).get("precision", "fp32")
    except (IndexFormatError, OSError):
        return None


def _cmd_search(a) -> int:
    hits = [{**h, "video": shown(h["video"])} for h in search_index(a.index_dir, a.query, a.k, precision=a.precision)]
    if a.json:
        print(json.dumps(hits, ensure_ascii=False))
    else:
        for h in hits:
            print(f"{h['rank']:>3}  {h['score']:.4f}  {h['video']}")
    return 0


def _cmd_train(a) -> int:
    run_train(a.config, finetune=a.finetune)
    return 0


def _cmd_eval(a) -> int:
    run_eval(a.model, a.data, precision=a.precision)
    return 0


@contextmanager
def _threads(n: int):
    """One fixed thread count for the run (vectors must not depend on it), restored afterwards."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def _utf8_streams() -> None:
    for s in (sys.stdout, sys.stderr):   # file names with accents must not crash a C-locale terminal
        enc = (getattr(s, "encoding", "") or "").lower().replace("-", "")
        if enc != "utf8" and hasattr(s, "reconfigure"):
            try:
                s.reconfigure(errors="backslashreplace")
            except Exception:
                pass


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in TOOLS:
        return _tool(argv[0], argv[1:])
    debug = "--debug" in argv
    _utf8_streams()
    try:
        with warnings.catch_warnings():
            if not debug:
                warnings.simplefilter("ignore")
            parser = _parser()
            args, extra = parser.parse_known_args(argv)
            if extra:   # a wrong option of a subcommand points at that subcommand's help
                parser.commands[args.command].error(f"unrecognized arguments: {' '.join(extra)}")
            from .backbone import BackboneError
            from .data import DataError
            from .index import IndexFormatError
            from .video import VideoDecodeError

            from . import distributed

            distributed.setup()   # under torchrun: join the other ranks (a no-op otherwise)
            try:
                cores = max(1, (os.cpu_count() or 1) // distributed.size())
                with _threads(min(8, cores)):   # every core: 1.7x on 2 (decode overlaps)
                    return int(args.func(args) or 0)
            except (BackboneError, DataError, IndexFormatError, VideoDecodeError) as e:
                raise UserError(str(e)) from e
    except (Exception, KeyboardInterrupt) as e:
        if debug:
            traceback.print_exc()
        line, code = _explain(e)
        print(f"{PROG}: {line}", file=sys.stderr, flush=True)
        return code


def _explain(e: BaseException) -> tuple[str, int]:
    """The one line a failure prints (after "teachclip-lite: ") and the exit status."""
    if isinstance(e, UserError):
        return f"error: {one_line(e)}", e.code
    if isinstance(e, KeyboardInterrupt):
        return "interrupted; committed work is kept, run the same command again to go on", 130
    if isinstance(e, MemoryError):
        return "error: out of memory; use fewer --frames, or a machine with more memory", 1
    if isinstance(e, OSError):
        where = f"{shown(str(e.filename))}: " if getattr(e, "filename", None) else ""
        import errno

        advice = "free some space, or write elsewhere" if e.errno in (errno.ENOSPC, errno.EDQUOT) else \
            "check the path and its permissions"
        return f"error: {where}{one_line(e.strerror or e)} ({advice})", 1
    return (f"error: unexpected {type(e).__name__}: {one_line(e, 300)} (run again with --debug for the "
            "traceback, and report it)"), 1


if __name__ == "__main__":
    sys.exit(main())
