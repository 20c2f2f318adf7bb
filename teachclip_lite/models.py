"""The named models: one place that says what `teachclip`, `afa_nce02`, each teacher... is, in the
open_clip way (a registry of named configs, `list_models()`). experiments, bench, poc, viz and the lessons
read it; nothing else spells out which model is taught or how.

| name | role | what it is |
|---|---|---|
| meanP | baseline | CLIP4Clip mean pooling, InfoNCE only |
| seqTransf | baseline | CLIP4Clip's temporal transformer, then mean pooling, InfoNCE only |
| afa | baseline | AFA aggregation with no temporal module, InfoNCE only |
| afa_nce02 | baseline | the TeachCLIP student with InfoNCE at teachclip's weight (0.2) and no teacher |
| seqTransf_afa | baseline | the TeachCLIP student (seqTransf + AFA), InfoNCE only: teachclip's untaught twin |
| teacher_xpool, teacher_xclip, teacher_ts2net | teacher | the fine-grained teachers, InfoNCE |
| teacher_ensemble | ensemble | the teaching teachers' logits averaged (no extra training) |
| teachclip_coarse | student | seqTransf_afa + coarse-grained teaching |
| teachclip_fine | student | seqTransf_afa + fine-grained teaching |
| teachclip | student | seqTransf_afa + coarse + fine (the method) |
"""
from __future__ import annotations

from dataclasses import dataclass

ROLES = ("baseline", "teacher", "ensemble", "student")   # untaught one-vector students, teachers, taught students


@dataclass(frozen=True)
class ModelSpec:
    name: str
    role: str
    architecture: str            # StudentConfig.kind of a student; teachers.TEACHERS name of a teacher
    nce: float | None = 1.0      # InfoNCE weight; None: the teaching recipe's (losses.recipe_weights: 0.2 for pearson)
    coarse: bool = False         # taught by the teachers' similarity matrices
    fine: bool = False           # taught by the teachers' frame relevance
    about: str = ""
    colour: str = "#7f7f7f"      # in every figure (viz.py)

    @property
    def is_student(self) -> bool:
        """One vector per video (what the index serves), taught or not."""
        return self.role in ("baseline", "student")

    @property
    def taught(self) -> bool:
        return self.coarse or self.fine


_SPECS = (
    ModelSpec("meanP", "baseline", "meanP", about="CLIP4Clip mean pooling, InfoNCE only", colour="#7f7f7f"),
    ModelSpec("seqTransf", "baseline", "seqTransf",
              about="CLIP4Clip's temporal transformer, then mean pooling", colour="#c7c7c7"),
    ModelSpec("afa", "baseline", "afa",
              about="AFA aggregation with no temporal module, InfoNCE only", colour="#17becf"),
    ModelSpec("afa_nce02", "baseline", "seqTransf_afa", None,
              about="the TeachCLIP student at teachclip's InfoNCE weight (0.2), no teacher", colour="#9edae5"),
    ModelSpec("seqTransf_afa", "baseline", "seqTransf_afa",
              about="the TeachCLIP student (seqTransf + AFA), InfoNCE only: teachclip's untaught twin",
              colour="#aec7e8"),
    ModelSpec("teacher_xpool", "teacher", "xpool",
              about="X-Pool: text-conditioned pooling over frames", colour="#9467bd"),
    ModelSpec("teacher_xclip", "teacher", "xclip",
              about="X-CLIP: video/frame x sentence/word similarities", colour="#8c564b"),
    ModelSpec("teacher_ts2net", "teacher", "ts2net",
              about="TS2-Net: token shift and selection, frame scores", colour="#e377c2"),
    ModelSpec("teacher_ensemble", "ensemble", "ensemble",
              about="the teaching teachers' logits averaged", colour="#1f77b4"),
    ModelSpec("teachclip_coarse", "student", "seqTransf_afa", None, coarse=True,
              about="seqTransf_afa + coarse-grained teaching", colour="#ff7f0e"),
    ModelSpec("teachclip_fine", "student", "seqTransf_afa", None, fine=True,
              about="seqTransf_afa + fine-grained teaching", colour="#2ca02c"),
    ModelSpec("teachclip", "student", "seqTransf_afa", None, coarse=True, fine=True,
              about="seqTransf_afa + coarse + fine: the method", colour="#d62728"),
)
REGISTRY: dict[str, ModelSpec] = {s.name: s for s in _SPECS}


def list_models(*roles: str) -> tuple[str, ...]:
    """Model names (of the given roles), in the registry's order: baselines, teachers, taught students."""
    bad = [r for r in roles if r not in ROLES]
    if bad:
        raise ValueError(f"unknown role(s) {bad}; choose from {ROLES}")
    return tuple(s.name for s in _SPECS if not roles or s.role in roles)


def get_model(name: str) -> ModelSpec:
    try:
        return REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; choose from {', '.join(REGISTRY)}") from None
