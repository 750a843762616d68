"""The sampling plan (samplers.plan): one rule for "Automatic" and a combined name's schedule,
the sigmas and options a cell runs, and the call counts the limits and progress use — the same
answer the engine, the A1111 text and the diffusers scripts get."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

import samplers
from core.cells import CellSpec
from samplers.plan import (
    ADAPTIVE_CALLS_ESTIMATE,
    ModelFacts,
    cell_schedule,
    denoiser_calls,
    model_rows,
    plan_cell,
)

TRAIN = samplers.train_sigmas()
SD = ModelFacts(family="sd1", prediction_type="epsilon", train_sigmas=TRAIN)


def cell(sampler="Euler", schedule="Automatic", steps=10, cfg=5.0, **options) -> CellSpec:
    return CellSpec(model="m", prompt="p", negative_prompt="", width=64, height=64, seed=1, sampler=sampler,
                    sampler_options=tuple(sorted(options.items())), schedule=schedule, steps=steps, cfg=cfg)


@pytest.mark.parametrize("sampler, schedule, ran", [
    ("Euler", "Automatic", "Uniform"),            # the sampler's default
    ("DPM++ 2M", "Automatic", "Karras"),
    ("DPM++ 2M Karras", "Automatic", "Karras"),   # a combined name's schedule
    ("Euler Exponential", "Automatic", "Exponential"),
    ("Euler Exponential", "Beta", "Beta"),        # a schedule chosen outright wins
    ("DPM fast", "Automatic", None),              # picks its own sigmas
    ("Euler (diffusers)", "Automatic", None),     # the scheduler's own
    ("Euler (diffusers)", "Karras", "Karras"),
])
def test_the_schedule_that_runs_is_the_one_the_text_names(sampler, schedule, ran):
    plan = plan_cell(cell(sampler, schedule), SD)
    assert plan.schedule == ran == cell_schedule(cell(sampler, schedule))


@pytest.mark.parametrize("sampler, schedule", [("Euler", "Automatic"), ("DPM++ 2M Karras", "Automatic"),
                                               ("DPM2", "Exponential"), ("UniPC", "Automatic"),
                                               ("DPM++ 2M (diffusers)", "Automatic"),
                                               ("Euler (diffusers)", "SGM Uniform")])
def test_plan_sigmas_equal_samplers_sigmas(sampler, schedule):
    plan = plan_cell(cell(sampler, schedule, steps=7), SD)
    options = {k: v for k, v in plan.options.items() if k != "scheduler_config"}
    expected = samplers.sigmas(schedule, 7, TRAIN, sampler=sampler,
                               **({} if plan.sampler.family == "diffusers" else {"family": "SD1.5"}),
                               **({"sampler_options": options} if plan.sampler.family == "diffusers" else {}))
    assert plan.sigmas.dtype == torch.float64
    assert torch.equal(plan.sigmas, expected.double())


def test_the_model_family_picks_the_align_your_steps_list():
    sdxl = ModelFacts(family="sdxl", prediction_type="epsilon", train_sigmas=TRAIN)
    a = plan_cell(cell(schedule="Align Your Steps", steps=10), SD).sigmas
    b = plan_cell(cell(schedule="Align Your Steps", steps=10), sdxl).sigmas
    assert not torch.allclose(a, b)
    assert torch.allclose(b, samplers.sigmas("Align Your Steps", 10, TRAIN, family="SDXL").double())


def test_diffusers_options_carry_the_schedule_flags_and_the_models_config():
    facts = ModelFacts(family="sd1", prediction_type="epsilon", train_sigmas=TRAIN,
                       scheduler_config={"num_train_timesteps": 1000})
    plan = plan_cell(cell("Euler (diffusers)", "Karras", steps=6), facts)
    assert plan.options["use_karras_sigmas"] is True
    assert plan.options["scheduler_config"] == {"num_train_timesteps": 1000}
    assert plan_cell(cell("Euler", eta=0.5), SD).options == {"eta": 0.5}


@pytest.mark.parametrize("sampler, steps, cfg, calls, rows", [
    ("Euler", 20, 7.0, 20, 40),
    ("Euler", 20, 1.0, 20, 20),                 # CFG <= 1 runs only the conditional half
    ("Heun", 20, 7.0, 39, 78),                  # the last step is one Euler call
    ("DPM adaptive", 5, 7.0, ADAPTIVE_CALLS_ESTIMATE, 2 * ADAPTIVE_CALLS_ESTIMATE),
])
def test_call_counts(sampler, steps, cfg, calls, rows):
    spec = cell(sampler, steps=steps, cfg=cfg)
    plan = plan_cell(spec, SD)
    assert (plan.denoiser_calls, plan.model_rows) == (denoiser_calls(spec), model_rows(spec)) == (calls, rows)


def test_flow_is_an_input_of_the_plan():
    """On a flow model the plan runs the model's pipeline sigmas on Automatic at the cell's shift
    (its own, else the model's), other types on the shifted flow table, with samplers.FLOW."""
    from samplers import FLOW, VE
    from samplers.flow_schedule import FlowShift, pipeline_sigmas

    flow = ModelFacts(family="sd3", prediction_type="flow", train_sigmas=TRAIN, flow=FlowShift(shift=3.0))
    sized = replace(cell("Euler", "Automatic"), width=64, height=64)
    plan = plan_cell(sized, flow)
    assert plan.flow and plan.shift == 3.0 and plan.param == FLOW.with_shift(3.0)
    torch.testing.assert_close(plan.sigmas, pipeline_sigmas("sd3", sized.steps, 3.0))
    own = plan_cell(replace(sized, shift=1.5), flow)
    assert own.shift == 1.5 and own.sigmas[1] < plan.sigmas[1]  # a smaller shift: less time at high noise
    karras = plan_cell(replace(sized, schedule="Karras"), flow)
    assert float(karras.sigmas[0]) <= 1.0 and karras.schedule == "Karras"
    sd = plan_cell(cell(), SD)
    assert not sd.flow and sd.param == VE and sd.shift is None


def test_a_cell_that_cannot_start_raises_a_clear_error():
    with pytest.raises(ValueError, match="cannot follow the 'Beta' schedule"):
        plan_cell(cell("DDIM (diffusers)", "Beta"), SD)
