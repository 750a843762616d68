"""CFG++ samplers in the engine: both halves from the one batch the engine runs anyway, at any cfg,
the pair reaching the sampler, and the row counts the grid estimates."""

from __future__ import annotations

import pytest
import torch

from pipeline.models import load_model
from pipeline.render import render
from samplers.plan import model_rows
from tests.test_engine import cell
from tests.test_engine_batching import _batch_spy


@pytest.mark.parametrize("cfg", [1.0, 1.5, 5.0])
def test_cfg_pp_runs_both_halves_in_one_call_at_any_cfg(sd_path, monkeypatch, cfg):
    model = load_model(str(sd_path))
    rows = _batch_spy(monkeypatch, model.unet, "forward")
    spec = cell(sd_path, sampler="Euler CFG++", steps=4, cfg=cfg)
    result = render([spec])[0]
    assert result.ok and result.denoiser_calls == 4
    assert rows == [2] * 4  # no extra rows: the unconditional half is the usual CFG batch half
    assert model_rows(spec) == 8


def test_cfg_pp_shares_a_batch_with_a_plain_cell(sd_path, monkeypatch):
    model = load_model(str(sd_path))
    rows = _batch_spy(monkeypatch, model.unet, "forward")
    render([cell(sd_path, sampler="DPM++ 2M CFG++", steps=3, cfg=1.0), cell(sd_path, steps=3, cfg=1.0)])
    assert rows == [3, 3, 3]  # 2 rows for the CFG++ cell + 1 for the plain one, one call per tick


def test_cfg_pp_with_equal_prompts_is_its_base_sampler(sd_path):
    # negative == prompt makes D_u = D_c = D_g: CFG++ then is the plain sampler (samplers tests)
    same = dict(prompt="a cat", negative="a cat", steps=4, cfg=1.0)
    pp = render([cell(sd_path, sampler="Euler CFG++", **same)])[0]
    plain = render([cell(sd_path, sampler="Euler", schedule="Karras", **same)])[0]
    assert torch.allclose(pp.latents, plain.latents, rtol=1e-4, atol=1e-5)
    other = render([cell(sd_path, sampler="Euler CFG++", prompt="a cat", negative="a dog", steps=4,
                          cfg=1.0)])[0]
    assert (other.latents - pp.latents).abs().max() > 1e-3  # the unconditional half matters


def test_cfg_pp_sampler_at_cfg_0_is_refused_clearly():
    from core.limits import SpecError
    from grids.spec import Axis, GridSpec, expand

    spec = GridSpec(prompt="a cat", seed=1, cfg=0.0, steps=4, x=Axis("sampler", "Euler, Euler CFG++"))
    match = r"Euler CFG\+\+ is a CFG\+\+ sampler: at cfg 0 .* use cfg about 1 to 2"
    with pytest.raises(SpecError, match=match):
        expand(spec)
