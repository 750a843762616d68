"""Convergence measurements (report.metrics): series, references, verdicts, exports, chart data.

The convergence claims are checked twice: on the Gaussian-mixture analytic model (latents
only, no images) and on the built-in model through the grid engine (images and latents).
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, replace

import pytest
import torch
from PIL import Image

import samplers
from core.cells import Cell, CellSpec
from grids.spec import Axis, GridSpec, expand
from report import metrics
from report.metrics import MetricsError, measure, reference_specs, references_from, references_to_render
from samplers.plan import denoiser_calls
from tests.analytic import Mixture, karras_sigmas, start

DETERMINISTIC = ("Euler", "Heun", "DPM++ 2M", "LMS", "UniPC", "DDIM")
NOISY = ("Euler a", "DPM2 a", "DPM++ 2M SDE", "DPM++ SDE")


@dataclass
class Result:
    """What measure() reads from a rendered cell (core.cells.CellOutcome)."""

    spec: CellSpec
    image: Image.Image | None = None
    latents: torch.Tensor | None = None
    denoiser_calls: int = 0
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def spec(sampler="Euler", steps=10, cfg=7.0, seed=1, schedule="Karras", sampler_options=()) -> CellSpec:
    return CellSpec(model="test", prompt="a cat", negative_prompt="", width=None, height=None, seed=seed,
                    sampler=sampler, sampler_options=sampler_options, schedule=schedule, steps=steps, cfg=cfg)


def grid(samplers_: tuple[str, ...], steps: tuple[int, ...], **fields) -> list[Cell]:
    """Cells of a steps (X) x sampler (Y) grid, labelled as grids.expand labels them."""
    return [Cell(ix, iy, 0, spec(s, n, **fields), (f"Steps: {n}", s, None))
            for iy, s in enumerate(samplers_) for ix, n in enumerate(steps)]


def latent(value: float) -> torch.Tensor:
    """A latent whose RMSE to latent(0) is |value|."""
    return torch.full((1, 4, 2, 2), float(value))


def results_from(cells: list[Cell], values: dict, failed: tuple = ()) -> list[Result]:
    """Latent-only results: cell (sampler, steps) gets latent(values[...]), or fails."""
    out = []
    for c in cells:
        key = (c.spec.sampler, c.spec.steps)
        if key in failed:
            out.append(Result(c.spec, error="the model returned NaN or inf at step 3 of 10"))
        else:
            out.append(Result(c.spec, latents=latent(values[key]), denoiser_calls=denoiser_calls(c.spec)))
    return out


# ---------------------------------------------------------------- distances


def test_latent_rmse_is_exact_and_refuses_other_shapes():
    a = torch.tensor([[0.0, 1.0], [2.0, 3.0]])
    b = torch.tensor([[1.0, 1.0], [2.0, 0.0]])  # differences 1, 0, 0, 3
    assert metrics.latent_rmse(a, b) == pytest.approx((10 / 4) ** 0.5, abs=1e-15)
    with pytest.raises(MetricsError, match="same model and size"):
        metrics.latent_rmse(a, torch.zeros(4))


# ---------------------------------------------------------------- series and verdicts


def test_verdict_needs_every_larger_step_count_below_the_threshold():
    cells = grid(("Euler", "Heun", "DPM++ 2M", "LMS"), (5, 10, 20, 40))
    values = {("Euler", 5): 0.3, ("Euler", 10): 0.01, ("Euler", 20): 0.02, ("Euler", 40): 9.0,
              ("Heun", 5): 0.3, ("Heun", 10): 0.04, ("Heun", 20): 0.06, ("Heun", 40): 0.0,
              ("DPM++ 2M", 5): 0.01, ("DPM++ 2M", 10): 0.2, ("DPM++ 2M", 20): 0.01, ("DPM++ 2M", 40): 5.0,
              ("LMS", 5): 0.0, ("LMS", 10): 0.0, ("LMS", 20): 0.05, ("LMS", 40): 0.0}
    conv = measure(cells, results_from(cells, values))
    # Distances are to the 40-step cell: |value - value at 40|.
    assert conv.verdicts == {
        "Euler": "does not converge (latent RMSE 8.980 at 20 steps)",
        "Heun": "does not converge (latent RMSE 0.060 at 20 steps)",
        "DPM++ 2M": "does not converge (latent RMSE 4.990 at 20 steps)",
        "LMS": "does not converge (latent RMSE 0.050 at 20 steps)",  # at the threshold is not below
    }
    values.update({("Euler", 40): 0.0, ("DPM++ 2M", 40): 0.0, ("LMS", 20): 0.049})
    conv = measure(cells, results_from(cells, values))
    assert conv.verdicts["Euler"] == "converged by 10 steps (latent RMSE < 0.05)"
    assert conv.verdicts["DPM++ 2M"] == "converged by 20 steps (latent RMSE < 0.05)"  # 10 is far again
    assert conv.verdicts["LMS"] == "converged by 5 steps (latent RMSE < 0.05)"
    assert [s.converged_at for s in conv.series] == [10, None, 20, 5]


def test_kind_does_not_decide_the_verdict_the_numbers_do():
    cells = grid(("Euler a", "Euler"), (10, 20, 40))
    values = {("Euler a", 10): 0.0, ("Euler a", 20): 0.0, ("Euler a", 40): 0.0,
              ("Euler", 10): 0.5, ("Euler", 20): 0.5, ("Euler", 40): 0.0}
    conv = measure(cells, results_from(cells, values))
    assert conv.verdicts["Euler a"].startswith(
        "converged by 10 steps (latent RMSE < 0.05); ancestral sampler")
    assert "accurate reference" in conv.verdicts["Euler a"]
    assert conv.verdicts["Euler"] == "does not converge (latent RMSE 0.500 at 20 steps)"
    assert [s.kind for s in conv.series] == ["ancestral", "deterministic"]


def test_series_group_cells_that_differ_only_in_steps_whatever_axis_holds_steps():
    gspec = GridSpec(prompt="a cat", seed=1, x=Axis("sampler", "Euler, DPM++ 2M"), y=Axis("cfg", "3, 7"),
                     z=Axis("steps", "10, 20, 40"))
    cells = expand(gspec)
    values = {(c.spec.sampler, c.spec.steps): 0.0 for c in cells}
    conv = measure(cells, results_from(cells, values))
    assert list(conv.verdicts) == ["Euler, CFG Scale: 3.0", "DPM++ 2M, CFG Scale: 3.0",
                                   "Euler, CFG Scale: 7.0", "DPM++ 2M, CFG Scale: 7.0"]
    assert all(v == "converged by 10 steps (latent RMSE < 0.05)" for v in conv.verdicts.values())
    assert [row.series for row in conv.cells[:3]] == ["Euler, CFG Scale: 3.0", "DPM++ 2M, CFG Scale: 3.0",
                                                      "Euler, CFG Scale: 7.0"]
    assert [p[0] for p in conv.chart["Euler, CFG Scale: 7.0"]] == [10, 20]  # 40 is the reference


def test_unlabelled_cells_get_labels_from_the_settings_that_differ():
    cells = [Cell(0, 0, 0, spec("Euler", n, cfg=c, schedule=s), (None, None, None))
             for s in ("Karras", "Exponential") for c in (3.0, 7.0) for n in (10, 20)]
    conv = measure(cells, results_from(cells, {(c.spec.sampler, c.spec.steps): 0.0 for c in cells}))
    assert list(conv.verdicts) == ["Schedule type: Karras, CFG Scale: 3.0",
                                   "Schedule type: Karras, CFG Scale: 7.0",
                                   "Schedule type: Exponential, CFG Scale: 3.0",
                                   "Schedule type: Exponential, CFG Scale: 7.0"]


def test_unlabelled_series_that_differ_in_sampler_options_or_nothing_visible():
    cells = [Cell(0, 0, 0, spec("Euler a", n, sampler_options=o), (None, None, None))
             for o in ((), (("eta", 0.5),)) for n in (10, 20)]
    conv = measure(cells, results_from(cells, {("Euler a", 10): 0.0, ("Euler a", 20): 0.0}))
    assert list(conv.verdicts) == ["default options", "Eta: 0.5"]
    alone = measure(cells[:2], results_from(cells[:2], {("Euler a", 10): 0.0, ("Euler a", 20): 0.0}))
    assert list(alone.verdicts) == ["Euler a"]


def test_varied_seeds_leave_no_series_to_judge():
    cells = expand(GridSpec(prompt="a cat", seed=1, vary_seeds=True, x=Axis("steps", "10, 20")))
    assert [c.spec.seed for c in cells] == [1, 2]
    conv = measure(cells, results_from(cells, {("DPM++ 2M", 10): 0.0, ("DPM++ 2M", 20): 0.0}))
    assert conv.verdicts == {"Seed: 1": "needs at least two step counts",
                             "Seed: 2": "needs at least two step counts"}


def test_failed_cells_are_skipped_with_a_note_and_the_reference_moves_down():
    cells = grid(("Euler", "Heun", "LMS"), (5, 10, 20, 40))
    values = {(s, n): v for s in ("Euler", "Heun", "LMS") for n, v in ((5, 0.3), (10, 0.02), (20, 0.0),
                                                                       (40, 0.0))}
    failed = (("Euler", 10), ("Heun", 40), ("LMS", 5), ("LMS", 10), ("LMS", 20), ("LMS", 40))
    conv = measure(cells, results_from(cells, values, failed=failed))
    assert conv.verdicts == {
        "Euler": "converged by 20 steps (latent RMSE < 0.05); skipped failed cells at 10 steps",
        "Heun": "converged by 10 steps (latent RMSE < 0.05); skipped failed cells at 40 steps",
        "LMS": "no finished cells; skipped failed cells at 5, 10, 20, 40 steps",
    }
    heun = [r for r in conv.cells if r.series == "Heun"]
    assert [r.reference for r in heun] == ["same series at 20 steps"] * 4
    assert [r.note for r in heun] == ["", "", "reference",
                                      "failed: the model returned NaN or inf at step 3 of 10"]
    assert heun[3].latent_rmse is None and heun[0].latent_rmse == pytest.approx(0.3)
    three_failed = (("Euler", 5), ("Euler", 10), ("Euler", 20))
    one_left = measure(cells[:4], results_from(cells[:4], values, failed=three_failed))
    assert one_left.verdicts["Euler"] == \
        "needs at least two step counts; skipped failed cells at 5, 10, 20 steps"


def test_images_are_judged_by_pixel_rmse_and_latents_are_the_fallback():
    cells = grid(("Euler",), (10, 20, 40))
    shades = {10: 100, 20: 126, 40: 128}  # 28 and 2 levels from the 40-step image
    res = [Result(c.spec, image=Image.new("RGB", (16, 16), (shades[c.spec.steps],) * 3), latents=latent(0.3),
                  denoiser_calls=c.spec.steps) for c in cells]
    conv = measure(cells, res)
    assert conv.verdicts["Euler"] == "converged by 20 steps (pixel RMSE < 0.01)"
    assert conv.series[0].points == ((10, 10, pytest.approx(28 / 255)), (20, 20, pytest.approx(2 / 255)))
    assert conv.cells[0].ssim < conv.cells[1].ssim < conv.cells[2].ssim == pytest.approx(1.0)
    assert measure(cells, res, metric="latent_rmse").verdicts["Euler"] == \
        "converged by 10 steps (latent RMSE < 0.05)"
    assert measure(cells, res, pixel_threshold=0.2).verdicts["Euler"] == \
        "converged by 10 steps (pixel RMSE < 0.2)"
    no_images = [replace(r, image=None) for r in res]
    assert measure(cells, no_images).series[0].metric == "latent_rmse"
    assert measure(cells, no_images, metric="pixel_rmse").verdicts["Euler"] == \
        "cannot judge: no pixel RMSE for every cell (images or latents missing)"


@pytest.mark.parametrize("kwargs, message", [
    ({"metric": "ssim"}, "metric must be"),
    ({"pixel_threshold": 0}, "pixel_threshold must be a positive number"),
    ({"latent_threshold": float("nan")}, "latent_threshold must be a positive number"),
])
def test_bad_options_are_refused(kwargs, message):
    cells = grid(("Euler",), (10, 20))
    with pytest.raises(MetricsError, match=message):
        measure(cells, results_from(cells, {("Euler", 10): 0, ("Euler", 20): 0}), **kwargs)


def test_results_must_match_the_cells():
    cells = grid(("Euler",), (10, 20))
    res = results_from(cells, {("Euler", 10): 0, ("Euler", 20): 0})
    with pytest.raises(MetricsError, match="one result per cell"):
        measure(cells, res[:1])
    with pytest.raises(MetricsError, match="in the cells' order"):
        measure(cells, res[::-1])


# ---------------------------------------------------------------- accurate references


def test_reference_specs_give_one_deterministic_200_step_cell_per_prompt_seed_cfg():
    specs = [spec(s, n, cfg=c, sampler_options=o) for s, o in (("Euler a", (("eta", 0.5),)), ("DDIM", ()))
             for c in (3.0, 7.0) for n in (10, 20)]
    refs = reference_specs(specs)
    assert len(refs) == 4  # series: 2 samplers x 2 CFG
    todo = references_to_render(refs)
    assert todo == [spec("DPM++ 2M", 200, cfg=3.0), spec("DPM++ 2M", 200, cfg=7.0)]
    assert refs[metrics.series_key(specs[0])] == todo[0]
    assert reference_specs(specs[:1], sampler="Heun", schedule="Exponential", steps=300)[
        metrics.series_key(specs[0])] == spec("Heun", 300, cfg=3.0, schedule="Exponential")


@pytest.mark.parametrize("kwargs, message", [
    ({"sampler": "Euler a"}, "deterministic sampler"),
    ({"sampler": "DPM adaptive"}, "deterministic sampler with a step count"),
    ({"steps": 0}, "whole number >= 1"),
    ({"sampler": "Eulr"}, "did you mean"),
])
def test_reference_specs_refuse_what_cannot_be_a_reference(kwargs, message):
    with pytest.raises(ValueError, match=message):
        reference_specs([spec()], **kwargs)


def test_accurate_references_measure_every_cell_including_the_highest():
    cells = grid(("Euler", "DDIM"), (10, 20), cfg=7.0) + grid(("Euler",), (10, 20), cfg=3.0)
    values = {("Euler", 10): 0.04, ("Euler", 20): 0.01, ("DDIM", 10): 0.2, ("DDIM", 20): 0.1}
    refs = reference_specs([c.spec for c in cells])
    rendered = [Result(s, latents=latent(0.0), denoiser_calls=199) for s in references_to_render(refs)]
    assert len(rendered) == 2
    conv = measure(cells, results_from(cells, values), references_from(refs, rendered))
    assert conv.reference_mode == "accurate"
    # Axis labels alone ("Euler" twice) are ambiguous here, so labels name what differs.
    assert conv.verdicts == {"Euler, CFG Scale: 7.0": "converged by 10 steps (latent RMSE < 0.05)",
                             "DDIM, CFG Scale: 7.0": "does not converge (latent RMSE 0.100 at 20 steps)",
                             "Euler, CFG Scale: 3.0": "converged by 10 steps (latent RMSE < 0.05)"}
    assert {r.reference for r in conv.cells} == {"DPM++ 2M Karras, 200 steps"}
    assert [r.latent_rmse for r in conv.cells[:2]] == [pytest.approx(0.04), pytest.approx(0.01)]


def test_a_failed_or_missing_reference_is_reported():
    cells = grid(("Euler",), (10, 20))
    res = results_from(cells, {("Euler", 10): 0.0, ("Euler", 20): 0.0})
    refs = reference_specs([c.spec for c in cells])
    bad = Result(references_to_render(refs)[0], error="stopped by the user")
    conv = measure(cells, res, references_from(refs, [bad]))
    assert conv.verdicts["Euler"] == "cannot judge: the reference failed (stopped by the user)"
    assert conv.cells[0].latent_rmse is None
    with pytest.raises(MetricsError, match="no reference for series 'Euler'"):
        measure(cells, res, {})
    with pytest.raises(MetricsError, match="got 2 rendered references for 1"):
        references_from(refs, [bad, bad])


def test_a_reference_image_supplied_by_the_caller():
    cells = grid(("Euler",), (10, 20))
    res = [Result(c.spec, image=Image.new("RGB", (16, 16), (120 + c.spec.steps // 10,) * 3)) for c in cells]
    target = Image.new("RGB", (16, 16), (123, 123, 123))  # 2 and 1 levels away
    conv = measure(cells, res, {metrics.series_key(cells[0].spec): target})
    assert conv.verdicts["Euler"] == "converged by 10 steps (pixel RMSE < 0.01)"
    assert [r.pixel_rmse for r in conv.cells] == [pytest.approx(2 / 255), pytest.approx(1 / 255)]
    assert conv.cells[0].reference == "image supplied by the caller"


# ---------------------------------------------------------------- exports and chart data


def test_csv_json_and_chart_rows():
    cells = grid(("Euler", "Heun"), (10, 20, 40))
    values = {(s, n): v for s in ("Euler", "Heun") for n, v in ((10, 0.25), (20, 0.125), (40, 0.0))}
    conv = measure(cells, results_from(cells, values, failed=(("Heun", 10),)))
    text = conv.to_csv()
    rows = list(csv.DictReader(io.StringIO(text)))
    assert text.splitlines()[0] == ("series,sampler,schedule,steps,model_calls,pixel_rmse,ssim,latent_rmse,"
                                    "reference,note")
    assert len(rows) == 6
    assert rows[0] == {"series": "Euler", "sampler": "Euler", "schedule": "Karras", "steps": "10",
                       "model_calls": "10", "pixel_rmse": "", "ssim": "", "latent_rmse": "0.25",
                       "reference": "same series at 40 steps", "note": ""}
    assert rows[3]["note"].startswith("failed:") and rows[3]["latent_rmse"] == ""
    data = json.loads(json.dumps(conv.to_json()))
    assert data["thresholds"] == {"pixel_rmse": 0.01, "latent_rmse": 0.05}
    assert data["series"][1]["points"] == [{"steps": 20, "model_calls": 39, "distance": 0.125}]
    assert data["series"][1]["verdict"].endswith("skipped failed cells at 10 steps")
    assert metrics.chart_rows(conv, by="model_calls") == [
        {"series": "Euler", "x": 10, "distance": 0.25, "metric": "latent RMSE"},
        {"series": "Euler", "x": 20, "distance": 0.125, "metric": "latent RMSE"},
        {"series": "Heun", "x": 39, "distance": 0.125, "metric": "latent RMSE"},
    ]
    assert [r["x"] for r in metrics.chart_rows(conv)] == [10, 20, 20]
    frame = metrics.chart_frame(conv)
    assert list(frame.columns) == ["series", "x", "distance", "metric"] and len(frame) == 3
    with pytest.raises(MetricsError, match="'steps' or 'model_calls'"):
        metrics.chart_rows(conv, by="seconds")


# ---------------------------------------------------------------- the convergence claims

MIXTURE_STEPS = (5, 10, 20, 40, 80)


def mixture_render(cell_spec: CellSpec) -> Result:
    """A cell on the analytic Gaussian mixture: 256 two-dimensional samples, Karras sigmas."""
    mix, calls = Mixture(), []

    def denoiser(x, sigma):
        calls.append(1)
        return mix.denoiser(x, sigma)

    x0 = start((256, 2), 14.6, seed=4)
    sigmas = karras_sigmas(cell_spec.steps)
    out = samplers.sample(cell_spec.sampler, denoiser, x0, sigmas, seed=cell_spec.seed)
    return Result(cell_spec, latents=out, denoiser_calls=len(calls))


@pytest.fixture(scope="module")
def mixture_grid():
    cells = grid(DETERMINISTIC + NOISY, MIXTURE_STEPS)
    return cells, [mixture_render(c.spec) for c in cells]


def test_on_the_mixture_deterministic_samplers_converge_and_noisy_ones_do_not(mixture_grid):
    cells, res = mixture_grid
    conv = measure(cells, res)
    at = {s.label: s.converged_at for s in conv.series}
    # measured: Euler, UniPC, DDIM by 20 steps; Heun, DPM++ 2M, LMS by 10 (latent RMSE < 0.05)
    assert all(at[name] is not None and at[name] <= 20 for name in DETERMINISTIC), conv.verdicts
    # measured at 40 vs 80 steps: Euler a 0.94, DPM2 a 0.96, DPM++ 2M SDE 0.088, DPM++ SDE 0.16
    assert all(at[name] is None for name in NOISY), conv.verdicts
    assert all(conv.verdicts[name].startswith("does not converge (latent RMSE") for name in NOISY)
    assert {s.metric for s in conv.series} == {"latent_rmse"}
    heun = dict((n, c) for n, c, _ in conv.chart["Heun"])
    assert heun == {5: 9, 10: 19, 20: 39, 40: 79}  # two calls a step, one on the last


def test_on_the_mixture_only_deterministic_samplers_reach_the_accurate_reference(mixture_grid):
    cells, res = mixture_grid
    refs = reference_specs([c.spec for c in cells])
    conv = measure(cells, res, references_from(refs, [mixture_render(s) for s in references_to_render(refs)]))
    at = {s.label: s.converged_at for s in conv.series}
    # measured: Euler and DDIM by 40 steps (0.026 at 40), the others by 10 or 20
    assert all(at[name] is not None and at[name] <= 40 for name in DETERMINISTIC), conv.verdicts
    # measured at 80 steps: 1.13 to 1.17, as far as two unrelated samples
    assert all(at[name] is None for name in NOISY), conv.verdicts


BUILTIN_SAMPLERS = ("Euler", "DPM++ 2M", "Euler a", "DPM2 a", "DPM++ 2M SDE", "DPM++ SDE")


@pytest.fixture(scope="module")
def builtin_grid():
    """Six samplers x 5, 10, 20, 40 steps on the built-in model, plus the accurate reference,
    rendered in one batched run (~5 s on 2 free cores). CFG 1 runs one UNet row per call, half
    the work of CFG > 1; the convergence story does not depend on it."""
    from pipeline.render import render

    cells = [Cell(ix, iy, 0, CellSpec("builtin", "grinning face", "", None, None, 1, s, (), "Karras", n, 1.0),
                  (f"Steps: {n}", s, None))
             for iy, s in enumerate(BUILTIN_SAMPLERS) for ix, n in enumerate((5, 10, 20, 40))]
    refs = reference_specs([c.spec for c in cells])
    todo = references_to_render(refs)
    out = render([c.spec for c in cells] + todo)
    assert all(r.ok for r in out), [r.error for r in out]
    return cells, out[:len(cells)], references_from(refs, out[len(cells):])


def test_on_the_builtin_model_ancestral_samplers_never_settle(builtin_grid):
    cells, res, _refs = builtin_grid
    conv = measure(cells, res)
    series = {s.label: s for s in conv.series}
    assert {s.metric for s in conv.series} == {"pixel_rmse"}
    # measured pixel RMSE at 20 vs 40 steps: Euler 0.0023, DPM++ 2M 0.0011 (both converged by 10);
    # Euler a 0.047, DPM2 a 0.050
    for name in ("Euler", "DPM++ 2M"):
        assert series[name].converged_at is not None, series[name].verdict
    for name in ("Euler a", "DPM2 a"):
        assert series[name].verdict.startswith("does not converge (pixel RMSE "), series[name].verdict
    # An SDE sampler follows one Brownian path per seed, so against its own highest step count it
    # settles as steps grow (measured 0.043, 0.0099, 0.0034 for DPM++ 2M SDE; 0.023, 0.014, 0.0062
    # for DPM++ SDE: both "converged" on this seed, not on every seed). Only the numbers decide.
    for name in ("DPM++ 2M SDE", "DPM++ SDE"):
        distances = [d for _, _, d in series[name].points]
        assert distances == sorted(distances, reverse=True), distances
        assert "SDE sampler" in series[name].verdict
    rows = {(r.sampler, r.steps): r for r in conv.cells}
    assert rows[("Euler", 20)].ssim > 0.99 > rows[("Euler a", 20)].ssim
    assert rows[("DPM2 a", 20)].model_calls == 39


def test_on_the_builtin_model_only_deterministic_samplers_reach_the_ode_image(builtin_grid):
    cells, res, refs = builtin_grid
    conv = measure(cells, res, refs)
    series = {s.label: s for s in conv.series}
    # measured pixel RMSE to DPM++ 2M Karras at 200 steps, at 40 steps: Euler 0.0023, DPM++ 2M 0.0007
    # (both converged by 10); Euler a 0.068, DPM2 a 0.072, DPM++ 2M SDE 0.068, DPM++ SDE 0.067
    for name in ("Euler", "DPM++ 2M"):
        assert series[name].converged_at is not None, series[name].verdict
    for name in NOISY:
        assert series[name].verdict.startswith("does not converge (pixel RMSE "), series[name].verdict
        assert series[name].points[-1][2] > 3 * metrics.PIXEL_THRESHOLD


def test_the_convergence_table_script_prints_both_references_side_by_side():
    from bench.convergence_table import format_table

    cells = grid(("Euler",), (10, 20))
    res = results_from(cells, {("Euler", 10): 0.25, ("Euler", 20): 0.0})
    refs = reference_specs([c.spec for c in cells])
    accurate = measure(cells, res, references_from(refs, [Result(refs[metrics.series_key(cells[0].spec)],
                                                                 latents=latent(0.5))]))
    lines = format_table(measure(cells, res), accurate).splitlines()
    assert lines[3].split() == ["Euler", "10", "10", "|", "-", "-", "0.2500", "|", "-", "-", "0.2500"]
    assert lines[4].split()[:11] == ["Euler", "20", "20", "|", "-", "-", "0.0000", "|", "-", "-", "0.5000"]
    assert "  Euler: does not converge (latent RMSE 0.250 at 10 steps)" in lines
    assert "  Euler: does not converge (latent RMSE 0.500 at 20 steps)" in lines
