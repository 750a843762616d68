"""GITS and Optimal Steps, the schedule types read from ComfyUI's published tables, and
SA-Solver's noise window on flow models.

The expected values below are copied from ComfyUI's tables (comfy_extras/nodes_gits.py and
nodes_optimalsteps.py) and its rule for other step counts (loglinear_interp: log sigma linear
between the table's levels at linspace(0, 1, len), read at linspace(0, 1, steps + 1), the last
level then set to 0), worked out by hand or restated with numpy here.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import samplers
from grids import GridSpec, expand
from grids.axes import AxisError, parse_values
from grids.spec import Axis
from samplers import schedules as S
from samplers import schedules_tables as tables
from samplers.flow_schedule import FlowShift
from samplers.plan import ModelFacts, plan_cell
from samplers.sa_solver import noise_window, percent_to_sigma
from tests.analytic import FlowGaussian, start
from tests.test_engine import cell

TRAIN64 = S.train_sigmas().double()
FLOW3 = samplers.flow_train_sigmas(3.0).double()

# ComfyUI's GITS table, coeff 1.20, 10 steps (its default coeff), and its 20-step row
GITS_120_10 = [14.61464119, 5.85520077, 2.84484982, 1.67050016, 1.08895338, 0.74807048, 0.50118381,
               0.32104823, 0.19894916, 0.09824532, 0.02916753]
GITS_120_20 = [14.61464119, 7.49001646, 4.65472794, 3.07277966, 2.19988537, 1.61558151, 1.24153244,
               0.95350921, 0.74807048, 0.59516323, 0.50118381, 0.41087446, 0.34370604, 0.29807833,
               0.25053367, 0.22545385, 0.19894916, 0.17026083, 0.13792117, 0.09824532, 0.02916753]
GITS_080_2 = [14.61464119, 7.49001646, 0.02916753]
GITS_150_6 = [14.61464119, 1.56271636, 0.72133851, 0.36617002, 0.19894916, 0.09824532, 0.02916753]
OSS_FLUX = [0.9968, 0.9886, 0.9819, 0.975, 0.966, 0.9471, 0.9158, 0.8287, 0.5512, 0.2808, 0.001]


def _zeroed(levels: list[float]) -> list[float]:
    return [*levels[:-1], 0.0]


def _comfy_resample(levels: list[float], count: int) -> np.ndarray:
    """ComfyUI's loglinear_interp restated: reverse, np.interp in log, reverse back."""
    xs, ys = np.linspace(0, 1, len(levels)), np.log(levels[::-1])
    return np.exp(np.interp(np.linspace(0, 1, count), xs, ys))[::-1]


# ---------------------------------------------------------------- the tables as entered


def test_gits_tables_have_a_row_per_step_count_from_the_top_level_to_the_bottom():
    assert tables.GITS_COEFFS == tuple(round(0.80 + 0.05 * i, 2) for i in range(15))
    assert set(tables.GITS_ROWS) == set(tables.GITS_COEFFS)
    levels = tables.GITS_LEVELS
    assert len(levels) == 98 and all(a > b for a, b in zip(levels, levels[1:], strict=False))
    for coeff, rows in tables.GITS_ROWS.items():
        assert len(rows) == 19, coeff
        for steps, row in enumerate(rows, start=2):
            assert len(row) == steps + 1 and row[0] == 0 and row[-1] == len(levels) - 1, (coeff, steps)
            # indices ascending: sigma strictly descending
            assert all(a < b for a, b in zip(row, row[1:], strict=False)), (coeff, steps)


def test_oss_tables_base_step_counts():
    assert {k: len(v) - 1 for k, v in tables.OSS_SIGMAS.items()} == {"FLUX": 10, "Wan": 20, "Chroma": 40}
    for levels in tables.OSS_SIGMAS.values():
        assert levels[-1] == 0.001 and all(a > b for a, b in zip(levels, levels[1:], strict=False))


# ---------------------------------------------------------------- exact values at table step counts


@pytest.mark.parametrize("coeff, steps, row", [(1.20, 10, GITS_120_10), (1.20, 20, GITS_120_20),
                                               (0.80, 2, GITS_080_2), (1.50, 6, GITS_150_6)])
def test_gits_at_a_table_step_count_is_the_published_row_ending_in_zero(coeff, steps, row):
    assert S.compute("GITS", steps, TRAIN64, coeff=coeff).tolist() == _zeroed(row)


def test_gits_default_coeff_is_comfyuis_1_20_and_coeff_is_rounded_as_comfyui_looks_it_up():
    assert S.compute("GITS", 10, TRAIN64).tolist() == _zeroed(GITS_120_10)
    assert torch.equal(S.compute("GITS", 10, TRAIN64, coeff=1.2000001), S.compute("GITS", 10, TRAIN64))
    assert samplers.sigmas("GITS", 2, TRAIN64, coeff=0.8).tolist() == _zeroed(GITS_080_2)
    # the float32 training table gives the same levels in float32
    assert torch.equal(S.compute("GITS", 10, S.train_sigmas()), torch.tensor(_zeroed(GITS_120_10)))


@pytest.mark.parametrize("family, table", list(tables.OSS_SIGMAS.items()))
def test_optimal_steps_at_the_base_count_is_the_table_ending_in_zero(family, table):
    sig = S.compute("Optimal Steps", len(table) - 1, FLOW3, family=family)
    assert sig.tolist() == _zeroed(list(table))


# ---------------------------------------------------------------- other step counts


def test_gits_beyond_20_steps_resamples_the_20_step_row_by_hand():
    # 40 steps: 41 points over the 21-level row, positions i / 2: every other one a table level,
    # the ones between the geometric mean of their neighbours (log-linear halfway)
    sig = S.compute("GITS", 40, TRAIN64).tolist()
    assert sig[0::2][:-1] == GITS_120_20[:-1] and sig[-1] == 0.0
    assert sig[1] == pytest.approx(math.sqrt(14.61464119 * 7.49001646), rel=1e-14)
    assert sig[39] == pytest.approx(math.sqrt(0.09824532 * 0.02916753), rel=1e-14)


def test_optimal_steps_off_the_base_count_by_hand():
    # 5 steps on the 10-step FLUX table: positions 2 i, the even levels exactly
    assert S.compute("Optimal Steps", 5, FLOW3, family="FLUX").tolist() == [
        0.9968, 0.9819, 0.966, 0.9158, 0.5512, 0.0]
    # 20 steps: positions i / 2, geometric means between
    sig = S.compute("Optimal Steps", 20, FLOW3, family="FLUX").tolist()
    assert sig[0::2][:-1] == OSS_FLUX[:-1]
    assert sig[17] == pytest.approx(math.sqrt(0.5512 * 0.2808), rel=1e-14)
    assert sig[19] == pytest.approx(math.sqrt(0.2808 * 0.001), rel=1e-14) and sig[20] == 0.0


@pytest.mark.parametrize("coeff", tables.GITS_COEFFS)
def test_gits_matches_comfyuis_rule_and_decreases_to_zero_at_every_count(coeff):
    row = [tables.GITS_LEVELS[i] for i in tables.GITS_ROWS[coeff][-1]]
    for steps in (21, 25, 32, 50, 77, 150, 1000):
        sig = S.compute("GITS", steps, TRAIN64, coeff=coeff)
        assert len(sig) == steps + 1 and sig[-1] == 0 and bool((sig[1:] < sig[:-1]).all()), steps
        np.testing.assert_allclose(sig[:-1].numpy(), _comfy_resample(row, steps + 1)[:-1], rtol=1e-13)


@pytest.mark.parametrize("family", list(tables.OSS_SIGMAS))
def test_optimal_steps_matches_comfyuis_rule_and_decreases_to_zero_at_every_count(family):
    table = list(tables.OSS_SIGMAS[family])
    for steps in (1, 2, 3, 7, 13, 28, 50, 100):
        sig = S.compute("Optimal Steps", steps, FLOW3, family=family)
        assert len(sig) == steps + 1 and sig[-1] == 0 and bool((sig[1:] < sig[:-1]).all()), steps
        np.testing.assert_allclose(sig[:-1].numpy(), _comfy_resample(table, steps + 1)[:-1], rtol=1e-13)
    # the levels are the table's whatever the model's shift, as in ComfyUI
    shift1 = samplers.flow_train_sigmas(1.0).double()
    assert torch.equal(S.compute("Optimal Steps", 13, shift1, family=family),
                       S.compute("Optimal Steps", 13, FLOW3, family=family))


def test_discard_penultimate_on_the_tables():
    gits = S.compute("GITS", 9, TRAIN64, discard_penultimate=True)
    full = S.compute("GITS", 10, TRAIN64)
    assert torch.equal(gits, torch.cat([full[:-2], full[-1:]]))


# ---------------------------------------------------------------- names


@pytest.mark.parametrize("typed", ["GITS", "gits", "Gits", "GITSScheduler", "GITS[coeff=1.2]"])
def test_gits_names(typed):
    assert S.canonical(typed) == "GITS"


@pytest.mark.parametrize("typed", ["Optimal Steps", "optimal_steps", "optimal-steps", "OptimalSteps",
                                   "OptimalStepsScheduler", "OSS", "OSS FLUX"])
def test_optimal_steps_names(typed):
    assert S.canonical(typed) == "Optimal Steps"


def test_names_in_menus_axes_specs_and_combined_sampler_names():
    assert samplers.schedule_names()[-2:] == ["GITS", "Optimal Steps"]
    assert parse_values("schedule", "gits, optimal_steps, Karras") == ["GITS", "Optimal Steps", "Karras"]
    assert samplers.resolve("DPM++ 2M GITS")[1] == "GITS"
    assert samplers.resolve("Euler Optimal Steps")[1] == "Optimal Steps"
    cells = expand(GridSpec(model="m", seed=1, x=Axis("Schedule type", "gits, OSS")))
    assert [c.spec.schedule for c in cells] == ["GITS", "Optimal Steps"]
    with pytest.raises(AxisError, match="did you mean 'GITS'"):
        parse_values("schedule", "gitz")


# ---------------------------------------------------------------- refusals


@pytest.mark.parametrize("call, match", [
    (lambda: S.compute("GITS", 1, TRAIN64), "GITS takes at least 2 steps"),
    (lambda: S.compute("GITS", 10, FLOW3), "GITS has published noise levels for SD 1.5-like models only"),
    (lambda: S.compute("GITS", 10, TRAIN64, coeff=1.22), r"coeff \(GITS\) must be one of .*0\.80.*1\.50"),
    (lambda: S.compute("GITS", 10, TRAIN64, coeff=0.75), r"coeff \(GITS\)"),
    (lambda: S.compute("GITS", 10, TRAIN64, coeff=float("nan")), "coeff must be a finite number"),
    (lambda: S.compute("Optimal Steps", 10, TRAIN64), "FLUX, Wan, Chroma models only.*none for SD1.5"),
    (lambda: S.compute("Optimal Steps", 10, FLOW3), "tables for FLUX, Wan, Chroma"),
    (lambda: S.compute("Optimal Steps", 10, FLOW3, family="SD3"), "none for SD3"),
    (lambda: S.compute("Optimal Steps", 10, TRAIN64, family="FLUX"), "flow model's noise levels"),
    (lambda: S.compute("Align Your Steps", 10, TRAIN64, family="flux"), "SD 1.5 and SDXL only, not for FLUX"),
    (lambda: S.compute("Karras", 10, TRAIN64, family="Kandinsky"), "unknown model family.*FLUX, Wan, Chroma"),
    (lambda: samplers.sigmas("GITS", 10, TRAIN64, cofe=1.0), "unknown schedule option.*coeff"),
])
def test_refusals_say_what_works(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_diffusers_samplers_cannot_follow_the_tables():
    for schedule in ("GITS", "Optimal Steps"):
        with pytest.raises(ValueError, match=f"cannot follow the '{schedule}' schedule"):
            samplers.sigmas(schedule, 8, TRAIN64, sampler="DPM++ 2M (diffusers)")


# ---------------------------------------------------------------- the plan: the model picks the table


def _facts(family: str) -> ModelFacts:
    if family in ("sd3", "flux"):
        return ModelFacts(family=family, prediction_type="flow", train_sigmas=FLOW3.float(),
                          flow=FlowShift(shift=3.0))
    return ModelFacts(family=family, prediction_type="epsilon", train_sigmas=TRAIN64.float())


def test_the_plan_runs_gits_on_the_sd_family_and_optimal_steps_on_flux():
    for family in ("sd1", "sd2", "sdxl"):
        plan = plan_cell(cell("m", schedule="GITS", steps=10), _facts(family))
        assert plan.sigmas.tolist() == pytest.approx(_zeroed(GITS_120_10), rel=1e-7)
        assert plan.schedule == "GITS"
    plan = plan_cell(cell("m", schedule="optimal_steps", steps=10, cfg=1.0), _facts("flux"))
    assert plan.sigmas.tolist() == pytest.approx(_zeroed(OSS_FLUX), rel=1e-7)
    assert plan.schedule == "Optimal Steps"


@pytest.mark.parametrize("family, schedule, match", [
    ("sd1", "Optimal Steps", "FLUX, Wan, Chroma models only.*none for SD1.5"),
    ("sdxl", "Optimal Steps", "none for SDXL"), ("sd3", "Optimal Steps", "none for SD3"),
    ("sd3", "GITS", "not for flow models"), ("flux", "GITS", "not for flow models"),
])
def test_the_plan_refuses_a_table_the_model_family_has_none_of(family, schedule, match):
    with pytest.raises(ValueError, match=match):
        plan_cell(cell("m", schedule=schedule, steps=8, cfg=1.0), _facts(family))


# ---------------------------------------------------------------- grid cells on the tiny models


def test_gits_cell_renders_on_a_tiny_sd_model_and_optimal_steps_is_refused_there(sd_path):
    from pipeline.render import render

    gits, oss = render([cell(sd_path, schedule="GITS", steps=4), cell(sd_path, schedule="Optimal Steps")])
    assert gits.ok, gits.error
    assert gits.denoiser_calls == 4 and torch.isfinite(gits.latents).all()
    assert not oss.ok and "FLUX, Wan, Chroma" in oss.error


def test_optimal_steps_cell_renders_on_a_tiny_flux_model(flux_path):
    from pipeline.render import render

    oss, gits = render([cell(flux_path, schedule="Optimal Steps", steps=5, cfg=1.0),
                        cell(flux_path, schedule="GITS", steps=4, cfg=1.0)])
    assert oss.ok, oss.error
    assert oss.denoiser_calls == 5 and torch.isfinite(oss.latents).all()
    assert not gits.ok and "not for flow models" in gits.error


# ---------------------------------------------------------------- SA-Solver's noise window


@pytest.mark.parametrize("shift", [1.0, 3.0, math.exp(1.15)])
def test_sa_solver_window_on_flow_is_comfyuis_shifted_percent_to_sigma(shift):
    hi, lo = noise_window(samplers.FLOW.with_shift(shift))
    assert hi == pytest.approx(shift * 0.8 / (1 + (shift - 1) * 0.8), rel=1e-15)
    assert lo == pytest.approx(shift * 0.2 / (1 + (shift - 1) * 0.2), rel=1e-15)
    if shift == 3.0:
        assert (hi, lo) == pytest.approx((2.4 / 2.6, 0.6 / 1.4), rel=1e-15)  # 0.923, 0.429


def test_percent_to_sigma_ends_and_the_sd_window():
    flow = samplers.FLOW.with_shift(3.0)
    assert (percent_to_sigma(flow, 0.0), percent_to_sigma(flow, 1.0)) == (1.0, 0.0)
    assert (percent_to_sigma(samplers.VE, 0.0), percent_to_sigma(samplers.VE, 1.0)) == (math.inf, 0.0)
    hi, lo = noise_window(samplers.VE)
    assert hi == pytest.approx(float(S.t_to_sigma(799.2, TRAIN64)), rel=1e-15)
    assert lo == pytest.approx(float(S.t_to_sigma(199.8, TRAIN64)), rel=1e-15)


def _flow_run(sig: list[float], **options) -> torch.Tensor:
    x = start((256, 2), 1.0, seed=4)
    return samplers.sample("SA-Solver", FlowGaussian().denoiser, x, torch.tensor(sig, dtype=torch.float64),
                           seed=7, flow=True, shift=3.0, **options)


def test_sa_solver_adds_noise_on_flow_exactly_inside_the_flow_window():
    # shift 3: the window is sigma 0.923 .. 0.429. The SD window read in VE-equivalent sigma
    # (the rule before) is 0.836 .. 0.363 in flow sigma: these schedules tell the two apart.
    outside = [1.0, 0.95, 0.40, 0.38, 0.0]  # 0.40, 0.38: inside the old window, not in the flow one
    assert torch.equal(_flow_run(outside), _flow_run(outside, eta=0.0))
    inside = [1.0, 0.9, 0.2, 0.0]  # 0.9: in the flow window only
    assert float((_flow_run(inside) - _flow_run(inside, eta=0.0)).abs().mean()) > 0.05


def test_sa_solver_cell_renders_on_a_tiny_sd3_model(sd3_path):
    from pipeline.render import render

    result = render([cell(sd3_path, sampler="SA-Solver", schedule="Simple", steps=5, cfg=1.0)])[0]
    assert result.ok, result.error
    assert result.denoiser_calls == 5 and torch.isfinite(result.latents).all()
