"""Convergence measurements: how far each cell is from a reference, and a verdict per series.

A *series* is the cells of a grid that share every setting except steps (one line per
sampler, schedule and other axis values, whichever axes are X, Y or Z). Each cell is
compared with its series' reference:

- by default the same series at its highest step count (finished cells only), so the
  question is "from how many steps on does this sampler stop changing?";
- or an accurate reference supplied by the caller: `reference_specs` lists the cells to
  render for it (a deterministic second-order sampler, DPM++ 2M Karras, at 200 steps,
  one per distinct model/prompt/seed/size/CFG), so the question becomes "how close to
  the probability-flow ODE's image does this sampler get?".

Distances: pixel RMSE and SSIM (report.ssim), and latent RMSE between the cells' final
latents. The verdict uses pixel RMSE where the series has images and latent RMSE
otherwise (`metric=` picks one): "converged by N steps" when the distance is below the
threshold at N and at every larger step count (the default reference's own step count
excepted), else "does not converge". Thresholds and their reasons: docs/METRICS.md.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

from PIL import Image
from torch import Tensor

import samplers
from core.cells import Cell, CellOutcome, CellSpec
from grids import axes
from report.ssim import fits_ssim, pixel_rmse, ssim

# 1% of the 0..1 range in RMS (PSNR 40 dB): differences nobody sees side by side, 6x the
# 8-bit rounding floor, and 2.7-7x below where Euler a / DPM2 a stay on the built-in model.
PIXEL_THRESHOLD = 0.01
# Latents spread about 1 (SD's scaled VAE latents; the test mixture's 0.85): 5% of that. On
# the built-in model pixel RMSE runs 0.12-0.17x latent RMSE, so this is as strict as ~0.007.
LATENT_THRESHOLD = 0.05
METRIC_NAMES = {"pixel_rmse": "pixel RMSE", "latent_rmse": "latent RMSE"}
REFERENCE_SAMPLER = "DPM++ 2M"
REFERENCE_SCHEDULE = "Karras"
REFERENCE_STEPS = 200
_KEY_FIELDS = ("sampler", "schedule", "sampler_options", "cfg", "seed", "prompt", "negative_prompt",
               "model", "size")


class MetricsError(ValueError):
    """Inputs that cannot be measured; the message says what to pass instead."""


def latent_rmse(a: Tensor, b: Tensor) -> float:
    """Root-mean-square difference of two final latents of the same shape."""
    if a.shape != b.shape:
        raise MetricsError(f"latents differ in shape: {tuple(a.shape)} vs {tuple(b.shape)} — "
                           "compare cells of the same model and size")
    return float((a.double() - b.double()).pow(2).mean().sqrt())


# ---------------------------------------------------------------- series and references


def series_key(spec: CellSpec) -> CellSpec:
    """What a cell's series shares: its spec with steps set to 0 (every setting but steps)."""
    return replace(spec, steps=0)


def reference_specs(cell_specs: Sequence[CellSpec], sampler: str = REFERENCE_SAMPLER,
                    schedule: str = REFERENCE_SCHEDULE, steps: int = REFERENCE_STEPS
                    ) -> dict[CellSpec, CellSpec]:
    """The accurate reference cell of each series: {series_key: reference CellSpec}.

    A reference keeps the series' model, prompts, size, seed and CFG and runs a
    deterministic sampler (default DPM++ 2M Karras, 200 steps); series that differ only
    in sampler, schedule or sampler options share one. Render
    `references_to_render(result)` and pass `references_from(result, rendered)` to measure().
    """
    info = samplers.info(sampler)
    if info.kind != "deterministic" or not info.uses_steps:
        raise MetricsError(f"the accurate reference needs a deterministic sampler with a step count, "
                           f"not {info.name!r} ({info.kind}) — try 'DPM++ 2M' or 'Heun'")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise MetricsError(f"reference steps must be a whole number >= 1, got {steps!r}")
    return {series_key(s): replace(s, sampler=info.name, schedule=schedule, steps=steps, sampler_options=())
            for s in cell_specs}


def references_to_render(ref_specs: Mapping[CellSpec, CellSpec]) -> list[CellSpec]:
    """The distinct reference cells, in first-seen order (render each once)."""
    return list(dict.fromkeys(ref_specs.values()))


def references_from(ref_specs: Mapping[CellSpec, CellSpec], rendered: Sequence[CellOutcome]
                    ) -> dict[CellSpec, CellOutcome]:
    """{series_key: rendered reference}, `rendered` being the results of references_to_render()."""
    distinct = references_to_render(ref_specs)
    if len(rendered) != len(distinct):
        raise MetricsError(f"got {len(rendered)} rendered references for {len(distinct)} reference cells — "
                           "render references_to_render(ref_specs), in its order")
    by_spec = dict(zip(distinct, rendered, strict=True))
    return {key: by_spec[spec] for key, spec in ref_specs.items()}


def group_series(specs: Sequence[CellSpec]) -> dict[CellSpec, list[int]]:
    """Cell indices of each series, series in first-seen order."""
    groups: dict[CellSpec, list[int]] = {}
    for i, spec in enumerate(specs):
        groups.setdefault(series_key(spec), []).append(i)
    return groups


def series_labels(cells: Sequence[Cell], groups: Mapping[CellSpec, list[int]]) -> dict[CellSpec, str]:
    """A unique label per series: its cells' non-steps axis labels ("Euler, CFG Scale: 7.0"), or
    else the settings that differ between series."""
    own = {key: _axis_label([cells[i] for i in members]) for key, members in groups.items()}
    if all(own.values()) and len(set(own.values())) == len(own):
        return own
    varying = [f for f in _KEY_FIELDS if len({_field(k, f) for k in groups}) > 1]
    shown = varying or ["sampler"]
    labels = {key: ", ".join(_field_label(key, f) for f in shown) for key in groups}
    if len(set(labels.values())) < len(labels):
        labels = {key: f"{text} #{n + 1}" for n, (key, text) in enumerate(labels.items())}
    return labels


def _axis_label(members: Sequence[Cell]) -> str | None:
    texts = {", ".join(t for t in c.labels if t is not None and t != axes.label("steps", c.spec.steps))
             for c in members}
    return texts.pop() if len(texts) == 1 and "" not in texts else None


def _field(spec: CellSpec, name: str) -> Any:
    return (spec.width, spec.height) if name == "size" else getattr(spec, name)


def _field_label(spec: CellSpec, name: str) -> str:
    value = _field(spec, name)
    if name in ("sampler", "model"):
        return str(value)
    if name == "size":
        return f"Size: {value[0] or '?'}x{value[1] or '?'}"
    if name == "prompt":
        return f"Prompt: {value}"
    if name == "sampler_options":
        return ", ".join(axes.label(k, v) if k in axes.AXES else f"{k}: {v}" for k, v in value) or \
            "default options"
    return axes.label(name, value)


# ---------------------------------------------------------------- results


@dataclass(frozen=True)
class CellDistance:
    """One cell's distances to its series' reference (None: not measurable, e.g. no image)."""

    series: str
    sampler: str
    schedule: str
    steps: int
    model_calls: int
    pixel_rmse: float | None
    ssim: float | None
    latent_rmse: float | None
    reference: str
    note: str = ""


@dataclass(frozen=True)
class Series:
    """One series' verdict and chart data: points are (steps, model_calls, distance) under `metric`."""

    label: str
    sampler: str
    schedule: str
    kind: str
    metric: str | None
    threshold: float | None
    converged_at: int | None
    verdict: str
    points: tuple[tuple[int, int, float], ...]


CSV_COLUMNS = ("series", "sampler", "schedule", "steps", "model_calls", "pixel_rmse", "ssim",
               "latent_rmse", "reference", "note")


@dataclass(frozen=True)
class Convergence:
    """What measure() found: a row per cell (grid order) and a verdict per series."""

    cells: tuple[CellDistance, ...]
    series: tuple[Series, ...]
    reference_mode: str
    thresholds: dict[str, float]

    @property
    def verdicts(self) -> dict[str, str]:
        return {s.label: s.verdict for s in self.series}

    @property
    def chart(self) -> dict[str, list[tuple[int, int, float]]]:
        """{series label: [(steps, model_calls, distance), ...]} in steps order."""
        return {s.label: list(s.points) for s in self.series}

    def to_csv(self) -> str:
        """A header and one row per cell; empty fields where a distance is not measurable."""
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(CSV_COLUMNS)
        for row in self.cells:
            writer.writerow(["" if v is None else repr(v) if isinstance(v, float) else v
                             for v in (getattr(row, c) for c in CSV_COLUMNS)])
        return out.getvalue()

    def to_json(self) -> dict[str, Any]:
        series = []
        for s in self.series:
            item = asdict(s)
            item["points"] = [{"steps": n, "model_calls": c, "distance": d} for n, c, d in s.points]
            series.append(item)
        return {"reference_mode": self.reference_mode, "thresholds": dict(self.thresholds),
                "series": series, "cells": [asdict(c) for c in self.cells]}


def chart_rows(convergence: Convergence, by: str = "steps") -> list[dict[str, Any]]:
    """Tidy chart rows {series, x, distance, metric}: x is steps or model calls (by=)."""
    if by not in ("steps", "model_calls"):
        raise MetricsError(f"chart by must be 'steps' or 'model_calls', got {by!r}")
    column = 0 if by == "steps" else 1
    return [{"series": s.label, "x": point[column], "distance": point[2], "metric": METRIC_NAMES[s.metric]}
            for s in convergence.series if s.metric is not None for point in s.points]


def chart_frame(convergence: Convergence, by: str = "steps"):
    """chart_rows as a pandas DataFrame (for gr.LinePlot; pandas comes with gradio)."""
    import pandas  # here, not at the top: only the app's chart needs it

    return pandas.DataFrame(chart_rows(convergence, by), columns=["series", "x", "distance", "metric"])


# ---------------------------------------------------------------- measuring


@dataclass(frozen=True)
class _Reference:
    image: Image.Image | None
    latents: Tensor | None
    description: str
    cell: int | None = None  # the grid cell that is the reference (default mode)
    failure: str | None = None


def measure(cells: Sequence[Cell], results: Sequence[CellOutcome],
            references: Mapping[CellSpec, CellOutcome | Image.Image] | None = None, *, metric: str = "auto",
            pixel_threshold: float = PIXEL_THRESHOLD, latent_threshold: float = LATENT_THRESHOLD
            ) -> Convergence:
    """Distances of every cell to its series' reference, and a verdict per series.

    results: one per cell, in the cells' order, each with .spec, .image (PIL or None),
    .latents (Tensor or None), .denoiser_calls, .ok (and .error when failed), e.g.
    pipeline's CellResult. references: None (each series' highest step count) or
    {series_key: rendered result or PIL image}, e.g. from references_from(). metric:
    "auto" (pixel RMSE where a series has images, else latent RMSE), "pixel_rmse" or
    "latent_rmse"; the matching threshold decides "converged".
    """
    thresholds = _check(cells, results, metric, pixel_threshold, latent_threshold)
    groups = group_series([c.spec for c in cells])
    labels = series_labels(cells, groups)
    rows: list[CellDistance | None] = [None] * len(cells)
    found = []
    for key, members in groups.items():
        ref = _highest_steps(members, cells, results) if references is None else \
            _given(key, labels[key], references)
        for i in members:
            rows[i] = _row(labels[key], cells[i].spec, results[i], ref, i)
        found.append(_judge(labels[key], key, [rows[i] for i in members], ref, metric, thresholds,
                            highest_steps=references is None))
    mode = "highest steps" if references is None else "accurate"
    return Convergence(tuple(rows), tuple(found), mode, thresholds)


def _check(cells, results, metric, pixel_threshold, latent_threshold) -> dict[str, float]:
    if len(cells) != len(results):
        raise MetricsError(f"got {len(results)} results for {len(cells)} cells — pass one result per cell")
    if metric not in ("auto", *METRIC_NAMES):
        raise MetricsError(f"metric must be 'auto', 'pixel_rmse' or 'latent_rmse', got {metric!r}")
    for name, value in (("pixel_threshold", pixel_threshold), ("latent_threshold", latent_threshold)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < float("inf"):
            raise MetricsError(f"{name} must be a positive number, got {value!r}")
    for i, (cell, result) in enumerate(zip(cells, results, strict=True)):
        spec = getattr(result, "spec", None)
        if spec is not None and (spec.sampler, spec.steps, spec.seed) != (
                cell.spec.sampler, cell.spec.steps, cell.spec.seed):
            raise MetricsError(f"result {i} is {spec.sampler} at {spec.steps} steps but cell {i} is "
                               f"{cell.spec.sampler} at {cell.spec.steps} — pass results in the cells' order")
    return {"pixel_rmse": float(pixel_threshold), "latent_rmse": float(latent_threshold)}


def _highest_steps(members: list[int], cells: Sequence[Cell], results: Sequence[CellOutcome]) -> _Reference:
    done = [i for i in members if results[i].ok]
    if not done:
        return _Reference(None, None, "none: every cell failed", failure="no finished cells")
    top = max(done, key=lambda i: (cells[i].spec.steps, i))
    text = f"same series at {cells[top].spec.steps} steps"
    return _Reference(results[top].image, results[top].latents, text, cell=top)


def _given(key: CellSpec, label: str, references: Mapping[CellSpec, CellOutcome | Image.Image]) -> _Reference:
    if key not in references:
        raise MetricsError(f"no reference for series {label!r} — pass one per series_key "
                           "(references_from(reference_specs(...), rendered) makes them)")
    ref = references[key]
    if isinstance(ref, Image.Image):
        return _Reference(ref, None, "image supplied by the caller")
    spec = getattr(ref, "spec", None)
    text = "reference" if spec is None else f"{spec.sampler} {spec.schedule}, {spec.steps} steps"
    if not ref.ok:
        reason = getattr(ref, "error", None) or "no result"
        return _Reference(None, None, text, failure=f"cannot judge: the reference failed ({reason})")
    return _Reference(ref.image, ref.latents, text)


def _row(label: str, spec: CellSpec, result: CellOutcome, ref: _Reference, index: int) -> CellDistance:
    pix = sim = lat = None
    note = "reference" if index == ref.cell else ""
    if not result.ok:
        note = f"failed: {getattr(result, 'error', None) or 'no result'}"
    elif ref.failure is None:
        if result.image is not None and ref.image is not None:
            pix = pixel_rmse(result.image, ref.image)
            if fits_ssim(result.image):
                sim = ssim(result.image, ref.image)
        if result.latents is not None and ref.latents is not None:
            lat = latent_rmse(result.latents, ref.latents)
    return CellDistance(label, spec.sampler, spec.schedule, spec.steps, result.denoiser_calls, pix, sim, lat,
                        ref.description, note)


def _judge(label: str, key: CellSpec, rows: list[CellDistance], ref: _Reference, metric: str,
           thresholds: dict[str, float], highest_steps: bool) -> Series:
    kind = samplers.info(key.sampler).kind
    failed = sorted({r.steps for r in rows if r.note.startswith("failed")})
    measured = [r for r in rows if not r.note]  # finished, and not the reference cell itself
    if ref.cell is not None:  # the default reference's own step count says nothing
        ref_steps = next(r.steps for r in rows if r.note == "reference")
        measured = [r for r in measured if r.steps != ref_steps]
    chosen, threshold, converged_at, points = None, None, None, ()
    if ref.failure is not None:
        verdict = ref.failure
    elif not measured:
        verdict = "needs at least two step counts" if highest_steps else "no finished cells"
    else:
        chosen = _pick(metric, measured)
        if chosen is None:
            wanted = "pixel RMSE or latent RMSE" if metric == "auto" else METRIC_NAMES[metric]
            verdict = f"cannot judge: no {wanted} for every cell (images or latents missing)"
        else:
            threshold = thresholds[chosen]
            points = tuple(sorted((r.steps, r.model_calls, getattr(r, chosen)) for r in measured))
            converged_at, verdict = _verdict(points, threshold, chosen)
            verdict += _kind_note(kind, converged_at is not None, highest_steps)
    if failed:
        verdict += f"; skipped failed cells at {', '.join(map(str, failed))} steps"
    return Series(label, key.sampler, key.schedule, kind, chosen, threshold, converged_at, verdict, points)


def _pick(metric: str, rows: list[CellDistance]) -> str | None:
    for name in (METRIC_NAMES if metric == "auto" else (metric,)):
        if all(getattr(r, name) is not None for r in rows):
            return name
    return None


def _verdict(points: Sequence[tuple[int, int, float]], threshold: float,
             metric: str) -> tuple[int | None, str]:
    """Converged by N: below the threshold at N and at every larger measured step count."""
    worst: dict[int, float] = {}
    for steps, _calls, distance in points:
        worst[steps] = max(worst.get(steps, 0.0), distance)
    converged_at = None
    for steps in sorted(worst, reverse=True):
        if worst[steps] >= threshold:
            break
        converged_at = steps
    name = METRIC_NAMES[metric]
    if converged_at is not None:
        return converged_at, f"converged by {converged_at} steps ({name} < {threshold:g})"
    last = max(worst)
    return None, f"does not converge ({name} {worst[last]:.3f} at {last} steps)"


def _kind_note(kind: str, converged: bool, highest_steps_reference: bool) -> str:
    if kind == "deterministic":
        return ""
    what = "ancestral sampler" if kind == "ancestral" else "SDE sampler"
    if not converged:
        return f"; {what}: fresh noise every step" if kind == "ancestral" else \
            f"; {what}: noise along the seed's Brownian path"
    if highest_steps_reference:
        return f"; {what}: settled on its own noise path (an accurate reference tells if it is the ODE's)"
    return ""
