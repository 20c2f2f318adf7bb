"""Pictures for the lessons: frame strips, animated previews, heatmaps, curves, tables.

Every figure is a plotly `go.Figure`, interactive in JupyterLab. `setup()` makes
plotly embed its JavaScript once per notebook as well, so a notebook that papermill
executed still draws its figures when exported to HTML (and read offline). Frames
travel as small PNG / GIF images inside the figure or the HTML, never as nested
lists of pixel values, so an executed notebook stays a few megabytes.

Nothing here trains or scores: the numbers come from the library (experiments,
teachers, metrics, bench) and from the lessons' helpers (lessons.py); this file only draws.
"""
from __future__ import annotations

import base64
import html
import io
import os
from functools import lru_cache
from pathlib import Path

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from . import tables
from .models import REGISTRY

WIDTH = 920                       # figure width in pixels: fits JupyterLab and the HTML export
TRUTH = "rgb(44,160,44)"          # frames a caption describes (ground truth)
FILLER_DIM = 0.45                 # frames that show nothing are drawn at this brightness
# a colour per registered model (models.py), the same for a teacher's architecture name (xclip = teacher_xclip)
MODEL_COLOURS = {**{s.architecture: s.colour for s in REGISTRY.values() if s.role in ("teacher", "ensemble")},
                 **{name: s.colour for name, s in REGISTRY.items()},
                 "student": REGISTRY["teachclip"].colour, "teacher": REGISTRY["teacher_ensemble"].colour,
                 "truth": TRUTH, "uniform": "#bcbd22"}
LABELS = {
    "t2v_r1": "R@1", "t2v_r5": "R@5", "t2v_r10": "R@10", "t2v_mdr": "MdR", "t2v_mnr": "MnR", "sumr": "SumR",
    "v2t_r1": "v2t R@1", "attention_hit": "attention hit", "attention_hit_any": "attention hit (any event)",
    "nce": "InfoNCE", "coarse": "coarse teaching", "fine": "fine teaching", "loss": "total loss", "val_r1": "val R@1",
}
# Text-to-video retrieval on MSR-VTT 1k-A with ViT-B/32 (TeachCLIP, Tian et al., CVPR 2024, Table 1 and 5).
PAPER_MSRVTT = {
    "CLIP4Clip meanP": {"t2v_r1": 43.1, "t2v_r5": 70.4, "t2v_r10": 80.8},
    "CLIP4Clip seqTransf": {"t2v_r1": 44.5, "t2v_r5": 71.4, "t2v_r10": 81.6},
    "TeachCLIP": {"t2v_r1": 46.8, "t2v_r5": 74.3, "t2v_r10": 82.6},
}


def setup() -> None:
    """Figures for JupyterLab (plotly's mimetype) and for exported HTML (plotly.js embedded once)."""
    import plotly.io as pio

    # the toolbar stands upright at the right edge, where it covers no title; titles start at the left
    pio.templates["teachclip"] = go.layout.Template(layout=dict(modebar=dict(orientation="v"),
                                                                title=dict(x=0.01, xanchor="left")))
    pio.templates.default = "plotly+teachclip"
    pio.renderers.default = "plotly_mimetype+notebook"


def _label(v: float) -> str:
    return f"{v:.1f}" if abs(v) > 2 else f"{v:.3f}"


def _labels_above(fig: go.Figure, x: list, y: list, err: list, **where) -> float:
    """Value labels above the error bars (a label at the bar's top would be struck through by its cap);
    returns the height the axis must reach to show them."""
    top = 0.0
    for xi, yi, ei in zip(x, y, err):
        fig.add_annotation(x=xi, y=yi + (ei or 0), text=_label(yi), showarrow=False, yshift=9, **where)
        top = max(top, yi + (ei or 0))
    return top * 1.12 if top > 0 else 1.0


def colour(name: str, i: int = 0) -> str:
    palette = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf")
    return MODEL_COLOURS.get(name, palette[i % len(palette)])


def short(text: str, n: int = 42) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


# ------------------------------------------------------------------ frames and previews

@lru_cache(maxsize=256)
def _frames_cached(path: str, size: int | None) -> np.ndarray:
    from .video import read_all_frames

    return read_all_frames(path, size)


def clip_frames(path: str | os.PathLike, size: int | None = None) -> np.ndarray:
    """Every native frame of a (short) clip, uint8 [N, H, W, 3]; cached, previews decode a clip once."""
    return _frames_cached(str(path), size)


def frames_at(path: str | os.PathLike, indices) -> np.ndarray:
    """The native frames at `indices` (what the model saw); index -1 (padding) gives a black frame."""
    frames = clip_frames(path)
    idx = np.asarray(indices).astype(int)
    out = np.zeros((len(idx), *frames.shape[1:]), dtype=np.uint8)
    ok = idx >= 0
    out[ok] = frames[np.clip(idx[ok], 0, len(frames) - 1)]
    return out


def mosaic(frames: np.ndarray, per_row: int = 12, gap: int = 4, highlight=None, dim=None,
           border: int = 3) -> np.ndarray:
    """Frames [N, H, W, 3] as one image, `per_row` to a row; highlighted frames get a green frame,
    dimmed ones (fillers) are darkened. Each frame sits in a cell of (H + gap) x (W + gap) pixels."""
    frames = np.asarray(frames, dtype=np.uint8)
    n, h, w = frames.shape[:3]
    rows = -(-n // per_row)
    ch, cw = h + gap, w + gap
    img = np.full((rows * ch, min(n, per_row) * cw, 3), 255, dtype=np.uint8)
    green = np.array([44, 160, 44], dtype=np.uint8)
    for i, f in enumerate(frames):
        r, c = divmod(i, per_row)
        y, x = r * ch + gap // 2, c * cw + gap // 2
        tile = f.astype(np.float32) * (FILLER_DIM if dim is not None and dim[i] else 1.0)
        img[y:y + h, x:x + w] = tile.astype(np.uint8)
        if highlight is not None and highlight[i]:
            b = min(border, gap // 2 + 1)
            img[y - gap // 2:y + h + gap // 2, x - gap // 2:x - gap // 2 + b] = green
            img[y - gap // 2:y + h + gap // 2, x + w + gap // 2 - b:x + w + gap // 2] = green
            img[y - gap // 2:y - gap // 2 + b, x - gap // 2:x + w + gap // 2] = green
            img[y + h + gap // 2 - b:y + h + gap // 2, x - gap // 2:x + w + gap // 2] = green
    return img


def png_uri(img: np.ndarray) -> str:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.asarray(img, dtype=np.uint8)).save(buf, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def frame_strip(frames: np.ndarray, hover: list[str] | None = None, highlight=None, dim=None,
                per_row: int = 12, title: str | None = None, scale: float = 1.0) -> go.Figure:
    """Thumbnails in rows, with a hover text per frame (what it shows, its index)."""
    frames = np.asarray(frames)
    img = mosaic(frames, per_row, highlight=highlight, dim=dim)
    n, h, w = frames.shape[:3]
    gap = 4
    fig = go.Figure(go.Image(source=png_uri(img), hoverinfo="skip"))
    if hover is not None:
        xs = [(i % per_row) * (w + gap) + (w + gap) / 2 for i in range(n)]
        ys = [(i // per_row) * (h + gap) + (h + gap) / 2 for i in range(n)]
        fig.add_trace(go.Scatter(x=xs, y=ys, mode="markers", marker=dict(size=max(8, w * 0.8), opacity=0),
                                 hovertext=hover, hoverinfo="text", showlegend=False))
    k = min(2.0 * scale, (WIDTH - 20) / img.shape[1])   # on-screen pixels per image pixel
    top = 40 if title else 6
    fig.update_xaxes(visible=False, range=[0, img.shape[1]])
    fig.update_yaxes(visible=False, range=[img.shape[0], 0], scaleanchor="x")
    fig.update_layout(width=int(img.shape[1] * k) + 20, height=int(img.shape[0] * k) + top + 6,
                      margin=dict(l=10, r=10, t=top, b=6), title=dict(text=title, font=dict(size=14)) if title else None,
                      plot_bgcolor="white")
    return fig


def clip_strip(root: str | os.PathLike, record: dict, caption: str | None = None, per_row: int = 12,
               title: str | None = None) -> go.Figure:
    """A toy clip, every native frame: the frames `caption` describes framed in green, fillers dimmed,
    and each frame's own caption on hover (the toy world's ground truth, `truth.jsonl`)."""
    from .toy import frame_captions

    frames = clip_frames(Path(root) / record["video"])
    caps = frame_captions(record)
    described = set()
    if caption is not None:
        described = next((set(c["frames"]) for c in record["captions"] if c["caption"] == caption), set())
    events = {f for e in record["events"] for f in range(e["start"], e["end"])}
    hi = [i in described for i in range(len(frames))]
    dim = [i not in events for i in range(len(frames))]
    hover = [f"frame {i}: {c}" + (" (described)" if hi[i] else "") for i, c in enumerate(caps)]
    return frame_strip(frames, hover, hi, dim, per_row, title or (f"{record['video']}: “{caption}”" if caption
                                                                    else record["video"]))


def gif_bytes(frames: np.ndarray, fps: float = 8, scale: int = 2) -> bytes:
    """An animated GIF (looping) of uint8 frames [N, H, W, 3], enlarged `scale` times."""
    from PIL import Image

    frames = np.asarray(frames, dtype=np.uint8)
    if scale > 1:
        frames = frames.repeat(scale, axis=1).repeat(scale, axis=2)
    imgs = [Image.fromarray(f) for f in frames]
    buf = io.BytesIO()
    imgs[0].save(buf, format="GIF", save_all=True, append_images=imgs[1:], duration=int(1000 / fps), loop=0)
    return buf.getvalue()


@lru_cache(maxsize=512)
def _gif_uri(path: str, fps: float) -> str:
    return "data:image/gif;base64," + base64.b64encode(gif_bytes(clip_frames(path), fps, 1)).decode()


def gif_tag(path: str | os.PathLike, width: int = 128, fps: float = 8, title: str = "") -> str:
    """An <img> tag that plays the clip (a GIF inside the page, so it works offline and in exports).
    About 100 KB for a toy clip: fine for a few previews, too much for every search result."""
    return (f'<img src="{_gif_uri(str(path), fps)}" width="{width}" height="{width}" '
            f'title="{html.escape(title)}" style="image-rendering: pixelated; border-radius: 3px"/>')


@lru_cache(maxsize=2048)
def _sheet_uri(path: str, n: int, cols: int) -> str:
    from PIL import Image

    frames = clip_frames(path)
    idx = np.linspace(0, len(frames) - 1, min(n, len(frames))).round().astype(int)
    buf = io.BytesIO()
    Image.fromarray(mosaic(frames[idx], per_row=cols, gap=2)).save(buf, format="JPEG", quality=80)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()


def sheet_tag(path: str | os.PathLike, width: int = 150, n: int = 6, cols: int = 3, title: str = "") -> str:
    """A contact sheet: n frames spread over the clip, in one small JPEG (a few KB), as an <img> tag."""
    return (f'<img src="{_sheet_uri(str(path), n, cols)}" width="{width}" title="{html.escape(title)}" '
            f'style="image-rendering: pixelated; border-radius: 3px"/>')


def animated_previews(paths: list, captions: list[str] | None = None, width: int = 160):
    """Several clips playing side by side, each with its caption below."""
    from IPython.display import HTML

    cells = []
    for i, p in enumerate(paths):
        cap = html.escape(captions[i]) if captions else html.escape(Path(p).name)
        cells.append(f'<figure style="display:inline-block;margin:4px 10px;width:{width}px;vertical-align:top">'
                     f'{gif_tag(p, width)}<figcaption style="font-size:12px">{cap}</figcaption></figure>')
    return HTML("<div>" + "".join(cells) + "</div>")


# ------------------------------------------------------------------ scores and attention

def similarity_heatmaps(mats: dict[str, np.ndarray], labels: list[str], softmax: bool = True, cols: int = 3,
                        title: str | None = None) -> go.Figure:
    """One B x B heatmap per model (rows: captions, columns: their videos). With softmax, each row is the
    distribution over videos that the coarse teaching loss compares (temperature: the model's own scale)."""
    names = list(mats)
    rows = -(-len(names) // cols)
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=names, horizontal_spacing=0.06, vertical_spacing=0.12)
    ticks = [str(i) for i in range(len(labels))]
    for i, name in enumerate(names):
        m = np.asarray(mats[name], dtype=np.float64)
        if softmax:
            m = np.exp(m - m.max(1, keepdims=True))
            m = m / m.sum(1, keepdims=True)
        hover = [[f"caption {r}: {short(labels[r], 60)}<br>video {c}<br>{'p' if softmax else 'logit'} = {m[r, c]:.3f}"
                  for c in range(m.shape[1])] for r in range(m.shape[0])]
        fig.add_trace(go.Heatmap(z=m, x=ticks, y=ticks, coloraxis="coloraxis", hovertext=hover, hoverinfo="text"),
                      row=i // cols + 1, col=i % cols + 1)
    fig.update_yaxes(autorange="reversed")
    fig.update_yaxes(title_text="caption", col=1)
    fig.update_xaxes(title_text="video", row=rows)
    fig.update_layout(coloraxis=dict(colorscale="Viridis", colorbar=dict(title="p" if softmax else "logit")),
                      width=WIDTH, height=300 * rows + 80, title=title, margin=dict(t=80))
    return fig


def frames_and_bars(thumbs: np.ndarray, series: dict[str, np.ndarray], truth=None, title: str | None = None,
                    yaxis: str = "weight", height: int = 420) -> go.Figure:
    """The T sampled frames on top; below, one bar group per frame for each series (AFA weights,
    teacher relevance, ...), with the ground-truth frames shaded green."""
    thumbs = np.asarray(thumbs)
    T, h, w = thumbs.shape[:3]
    gap = 4
    img = mosaic(thumbs, per_row=T, gap=gap, highlight=truth)
    top, bottom = (60 if title else 20), 90
    # the thumbnail row gets the height that keeps its frames square at the figure's width
    frac = min(0.45, (WIDTH - 160) / T / max(1, height - top - bottom))
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, row_heights=[frac, 1 - frac], vertical_spacing=0.03)
    fig.add_trace(go.Image(source=png_uri(img), x0=-0.5 + 0.5 / (w + gap), dx=1 / (w + gap),
                           y0=0.5 / (h + gap), dy=1 / (h + gap), hoverinfo="skip"), row=1, col=1)
    for i, (name, vals) in enumerate(series.items()):
        vals = np.asarray(vals, dtype=np.float64)
        fig.add_trace(go.Bar(x=list(range(T)), y=vals, name=name, marker_color=colour(name, i),
                             hovertemplate=f"{name}<br>frame %{{x}}: %{{y:.3f}}<extra></extra>"), row=2, col=1)
    if truth is not None:
        for t in np.flatnonzero(np.asarray(truth)):
            fig.add_vrect(x0=t - 0.5, x1=t + 0.5, fillcolor=TRUTH, opacity=0.12, line_width=0, row=2, col=1)
    fig.update_yaxes(visible=False, autorange="reversed", scaleanchor=False, row=1, col=1)
    fig.update_yaxes(title_text=yaxis, row=2, col=1)
    fig.update_xaxes(range=[-0.5, T - 0.5], row=1, col=1, visible=False)
    fig.update_xaxes(range=[-0.5, T - 0.5], row=2, col=1, title_text="sampled frame (green: described by the caption)",
                     tickmode="linear", dtick=1)
    fig.update_layout(barmode="group", width=WIDTH, height=height, title=title, legend=dict(orientation="h", y=-0.25),
                      margin=dict(t=top, b=bottom, l=80, r=80))
    return fig


def heatmap(z: np.ndarray, x: list, y: list, title: str | None = None, zlabel: str = "cosine",
            height: int | None = None) -> go.Figure:
    """One heatmap, rows labelled `y` (top to bottom), columns `x`."""
    fig = go.Figure(go.Heatmap(z=np.asarray(z), x=[str(v) for v in x], y=[str(v) for v in y], colorscale="Viridis",
                               colorbar=dict(title=zlabel),
                               hovertemplate="%{y}<br>%{x}: %{z:.3f}<extra></extra>"))
    fig.update_yaxes(autorange="reversed")
    fig.update_layout(width=WIDTH, height=height or 140 + 26 * len(y), title=title, margin=dict(l=260))
    return fig


# ------------------------------------------------------------------ results

RESULT_COLUMNS = [("model", "model"), ("t2v_r1", "R@1"), ("t2v_r5", "R@5"), ("t2v_r10", "R@10"),
                  ("t2v_mdr", "MdR"), ("sumr", "SumR")]

def ablation_bars(summary: dict, metric: str = "t2v_r1", models: list[str] | None = None,
                  title: str | None = None, reference: float | None = None) -> go.Figure:
    """Mean over seeds with the std over seeds as error bars, one bar per model."""
    models = [m for m in (models or list(summary)) if m in summary and summary[m].get(metric) is not None]
    y = [summary[m][metric] for m in models]
    err = [summary[m]["std"][metric] for m in models]
    seeds = {summary[m]["seeds"] for m in models}
    fig = go.Figure(go.Bar(x=models, y=y, error_y=dict(type="data", array=err, visible=True),
                           marker_color=[colour(m) for m in models], hovertemplate="%{x}: %{y:.3f}<extra></extra>"))
    fig.update_yaxes(range=[0, max(_labels_above(fig, models, y, err), reference or 0)])
    if reference is not None:
        fig.add_hline(y=reference, line_dash="dot", annotation_text="uniform weights", annotation_position="top left")
    n = f"{min(seeds)} seed" + ("s" if max(seeds) > 1 else "") if seeds else ""
    fig.update_layout(title=title or f"{LABELS.get(metric, metric)} (mean ± std over {n})",
                      yaxis_title=LABELS.get(metric, metric), width=WIDTH, height=420, showlegend=False)
    return fig


def learning_curves(histories: dict, models: list[str] | None = None, seed: int | None = None,
                    components=("nce", "coarse", "fine", "loss", "val_r1")) -> go.Figure:
    """Per-epoch history of every loss component and of validation R@1, one line per model."""
    keys = [k for k in histories if (models is None or k[0] in models) and (seed is None or k[1] == seed)]
    keys = sorted(keys, key=lambda k: (models.index(k[0]) if models else 0, k[1]))
    cols = min(3, len(components))
    rows = -(-len(components) // cols)
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=[LABELS.get(c, c) for c in components],
                        horizontal_spacing=0.08, vertical_spacing=0.16)
    shown = set()
    for key in keys:
        name = key[0]
        hist = histories[key]
        for j, comp in enumerate(components):
            pts = [(h["epoch"] + 1, h[comp]) for h in hist if h.get(comp) is not None]
            if not pts:
                continue
            x, y = zip(*pts)
            fig.add_trace(go.Scatter(x=x, y=y, mode="lines+markers", name=name, legendgroup=name,
                                     line=dict(color=colour(name)), showlegend=name not in shown,
                                     hovertemplate=f"{name} epoch %{{x}}: %{{y:.3f}}<extra></extra>"),
                          row=j // cols + 1, col=j % cols + 1)
            shown.add(name)
    fig.update_xaxes(title_text="epoch", nticks=7, tickformat="d")   # a label per epoch smears at 60 epochs
    fig.update_layout(width=WIDTH, height=300 * rows + 60, margin=dict(t=60),
                      title="Learning curves (training losses are epoch means; val R@1 after each epoch)")
    return fig


def grouped_bars(rows: list[dict], group: str, bar: str, metric: str, title: str | None = None) -> go.Figure:
    """Bars of `metric` for each `bar` value within each `group` value (e.g. the loss per teaching channel)."""
    fig = go.Figure()
    for i, b in enumerate(dict.fromkeys(r[bar] for r in rows)):
        rs = [r for r in rows if r[bar] == b]
        fig.add_trace(go.Bar(x=[r[group] for r in rs], y=[r[metric] for r in rs], name=str(b),
                             marker_color=colour(str(b), i), text=[f"{r[metric]:.1f}" for r in rs],
                             textposition="outside"))
    fig.update_layout(barmode="group", title=title, yaxis_title=LABELS.get(metric, metric), width=WIDTH, height=400)
    return fig


def paper_vs_ours(summary: dict, ours: dict[str, str] | None = None, metric: str = "t2v_r1") -> go.Figure:
    """The paper's MSR-VTT numbers beside the kit's toy-world numbers: compare the gaps, not the levels."""
    ours = ours or {"CLIP4Clip meanP": "meanP", "TeachCLIP": "teachclip"}
    fig = make_subplots(rows=1, cols=2, subplot_titles=("paper: MSR-VTT 1k-A, ViT-B/32", "this kit: toy world, toy CLIP"))
    names = list(PAPER_MSRVTT)
    fig.add_trace(go.Bar(x=names, y=[PAPER_MSRVTT[n][metric] for n in names], marker_color="#aaaaaa",
                         text=[f"{PAPER_MSRVTT[n][metric]:.1f}" for n in names], textposition="outside",
                         showlegend=False), row=1, col=1)
    mine = [m for m in ours.values() if m in summary and summary[m].get(metric) is not None]
    err = [summary[m]["std"][metric] for m in mine]
    fig.add_trace(go.Bar(x=mine, y=[summary[m][metric] for m in mine], error_y=dict(type="data", array=err),
                         marker_color=[colour(m) for m in mine], showlegend=False), row=1, col=2)
    top = _labels_above(fig, mine, [summary[m][metric] for m in mine], err, xref="x2", yref="y2")
    fig.update_yaxes(range=[0, top], row=1, col=2)
    fig.update_yaxes(title_text=LABELS.get(metric, metric), row=1, col=1)
    fig.update_layout(width=WIDTH, height=420, title=f"{LABELS.get(metric, metric)}: the paper and the toy world")
    return fig


def cost_figure(efficiency: dict, flops: dict, storage: dict, title: str | None = None) -> go.Figure:
    """Time per query against corpus size (measured; extrapolated points dashed), FLOPs per (query, video)
    pair, and bytes each model must keep per video."""
    fig = make_subplots(rows=1, cols=3, column_widths=[0.5, 0.25, 0.25],
                        subplot_titles=("ms per query vs corpus size", "FLOPs per (query, video)", "bytes per video"))
    sizes = sorted(int(n) for n in efficiency)
    lines = {"student": [efficiency[str(n)]["student_ms_per_query"] for n in sizes]}
    teachers = sorted({t for n in sizes for t in efficiency[str(n)].get("teacher_ms_per_query", {})})
    for t in teachers:
        lines[t] = [efficiency[str(n)]["teacher_ms_per_query"].get(t) for n in sizes]
    extra = [efficiency[str(n)].get("extrapolated", False) for n in sizes]
    for name, ys in lines.items():
        fig.add_trace(go.Scatter(x=sizes, y=ys, name=name, mode="lines+markers", line=dict(color=colour(name)),
                                 marker=dict(symbol=["circle-open" if e and name != "student" else "circle"
                                                     for e in extra], size=9),
                                 hovertemplate=f"{name}: N=%{{x}}, %{{y:.3f}} ms<extra></extra>"), row=1, col=1)
    names = list(flops)
    fig.add_trace(go.Bar(x=names, y=[flops[n] for n in names], marker_color=[colour(n) for n in names],
                         showlegend=False, hovertemplate="%{x}: %{y:.3s} FLOPs<extra></extra>"), row=1, col=2)
    snames = [n for n in storage if n != "student_float16"]
    fig.add_trace(go.Bar(x=snames, y=[storage[n] for n in snames], marker_color=[colour(n) for n in snames],
                         showlegend=False, hovertemplate="%{x}: %{y} bytes<extra></extra>"), row=1, col=3)
    decades = dict(type="log", dtick=1, exponentformat="power")   # one tick per power of ten
    fig.update_xaxes(title_text="videos in the corpus (open markers: extrapolated)", row=1, col=1, **decades)
    fig.update_yaxes(row=1, col=1, title_text="ms per query", **decades)
    fig.update_yaxes(row=1, col=2, **decades)
    fig.update_yaxes(row=1, col=3, **decades)
    fig.update_layout(width=WIDTH, height=430, title=title, legend=dict(orientation="h", y=-0.3))
    return fig


def latency_bars(timings: dict[str, float], title: str = "Time per query on this corpus") -> go.Figure:
    names = list(timings)
    fig = go.Figure(go.Bar(x=names, y=[timings[n] for n in names], marker_color=[colour(n) for n in names],
                           text=[f"{timings[n]:.2f} ms" for n in names], textposition="outside"))
    fig.update_layout(title=title, yaxis_title="ms per query", width=WIDTH * 2 // 3, height=380)
    return fig


def compare_bars(named: dict[str, dict], metrics=("t2v_r1", "t2v_r5", "t2v_r10"), title: str | None = None) -> go.Figure:
    """Bars per metric for a few models' metric dicts (e.g. the trained student vs zero-shot meanP)."""
    fig = go.Figure()
    for i, (name, m) in enumerate(named.items()):
        fig.add_trace(go.Bar(x=[LABELS.get(k, k) for k in metrics], y=[m[k] for k in metrics], name=name,
                             marker_color=colour(name, i), text=[f"{m[k]:.1f}" for k in metrics],
                             textposition="outside"))
    fig.update_layout(barmode="group", title=title, width=WIDTH * 3 // 4, height=400, yaxis_title="%")
    return fig


def markdown_table(rows: list[dict], columns: list[tuple[str, str]], digits: int = 1):
    """A Markdown table (rendered in JupyterLab and in HTML exports) of dict rows."""
    from IPython.display import Markdown

    def cell(v):
        if v is None:
            return "–"
        if isinstance(v, float):
            return f"{v:.{digits if abs(v) >= 1 or v == 0 else 3}f}"
        return str(v)

    return Markdown(tables.markdown_table([label for _, label in columns],
                                          [[cell(r.get(k)) for k, _ in columns] for r in rows]))


def key_values(values: dict, digits: int = 3):
    """A two-column Markdown table of a dict."""
    return markdown_table([{"k": k, "v": v} for k, v in values.items()], [("k", "what"), ("v", "value")], digits)


# ------------------------------------------------------------------ search results

def hits_html(hits: list[dict], root: str | os.PathLike, title: str = "", correct: str | None = None,
              width: int = 150, animated: bool = False) -> str:
    """A row of results: a contact sheet of each clip (or the clip playing, `animated`), rank and score;
    the expected video (if known) framed in green."""
    cards = []
    for h in hits:
        ok = correct is not None and h["video"] == correct
        border = f"3px solid {TRUTH}" if ok else "3px solid transparent"
        path = Path(root) / h["video"]
        img = gif_tag(path, width, title=h["video"]) if animated else sheet_tag(path, width, title=h["video"])
        cards.append(f'<div style="display:inline-block;margin:3px;text-align:center;border:{border};'
                     f'border-radius:4px;padding:2px;width:{width + 8}px;vertical-align:top">{img}'
                     f'<div style="font-size:11px">#{h["rank"]} · {h["score"]:.3f}{" ✓" if ok else ""}<br>'
                     f'{html.escape(Path(h["video"]).name)}</div></div>')
    head = f'<div style="font-weight:bold;font-size:13px;margin-top:6px">{html.escape(title)}</div>' if title else ""
    return head + '<div style="white-space:nowrap;overflow-x:auto">' + "".join(cards) + "</div>"


def side_by_side(result: dict, root: str | os.PathLike, correct: str | None = None) -> str:
    """A search result of `demo.SearchEngine.search`: the student's and the teacher's top-k, with their latency."""
    q = html.escape(result["query"])
    parts = [f'<div style="font-size:14px;margin:8px 0 2px">query: <b>“{q}”</b></div>']
    for side in ("student", "teacher"):
        label = f"{side}: {result[side + '_name']} — {result[side + '_ms']:.2f} ms " \
                f"({result[side + '_how']})"
        parts.append(hits_html(result[side], root, label, correct))
    return "".join(parts)


def search_app(engine, root: str | os.PathLike, queries: list[str], k: int = 5, truth: dict | None = None):
    """An ipywidgets search box (with suggestions), a top-k slider and, once a query is entered, the two
    result rows (`side_by_side`).

    `truth` maps a query text to its expected video, which is then framed in green.
    """
    import ipywidgets as widgets
    from IPython.display import HTML, display

    box = widgets.Combobox(value=queries[0] if queries else "", options=list(queries), ensure_option=False,
                           placeholder="describe a clip, e.g. a red circle moving left",
                           description="query", continuous_update=False, layout=widgets.Layout(width="60%"))
    slider = widgets.IntSlider(value=k, min=1, max=10, description="top-k", continuous_update=False)
    button = widgets.Button(description="search", button_style="primary")
    out = widgets.Output()

    def run(*_):
        if not box.value.strip():
            return
        with out:
            out.clear_output(wait=True)
            res = engine.search(box.value, slider.value)
            display(HTML(side_by_side(res, root, (truth or {}).get(box.value))))

    button.on_click(run)
    box.observe(run, names="value")   # on Enter or on leaving the box (continuous_update=False)
    slider.observe(run, names="value")
    # Nothing is searched until the reader asks: executed headless (papermill), an Output widget that
    # receives a large page of results stalls the notebook client, and no one is there to see it.
    with out:
        display(HTML('<i>press Enter in the box, or click "search"</i>'))
    return widgets.VBox([widgets.HBox([box, slider, button]), out])
