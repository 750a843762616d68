"""ComfyUI's sampler and scheduler names: every one resolves, ComfyUI's lowercase names give
ComfyUI's behaviour and A1111's names A1111's, and unknown names suggest both conventions."""

from __future__ import annotations

import pytest
import torch

import samplers
from samplers import comfyui
from samplers import schedules as S
from tests.analytic import Gaussian, karras_sigmas, start

# ComfyUI's KSampler.SAMPLERS (comfy/samplers.py SAMPLER_NAMES), in its order.
COMFYUI_SAMPLER_NAMES = [
    "euler", "euler_cfg_pp", "euler_ancestral", "euler_ancestral_cfg_pp", "heun", "heunpp2",
    "exp_heun_2_x0", "exp_heun_2_x0_sde", "dpm_2", "dpm_2_ancestral", "lms", "dpm_fast", "dpm_adaptive",
    "dpmpp_2s_ancestral", "dpmpp_2s_ancestral_cfg_pp", "dpmpp_sde", "dpmpp_sde_gpu", "dpmpp_2m",
    "dpmpp_2m_cfg_pp", "dpmpp_2m_sde", "dpmpp_2m_sde_gpu", "dpmpp_2m_sde_heun", "dpmpp_2m_sde_heun_gpu",
    "dpmpp_3m_sde", "dpmpp_3m_sde_gpu", "ddpm", "lcm", "ipndm", "ipndm_v", "deis", "res_multistep",
    "res_multistep_cfg_pp", "res_multistep_ancestral", "res_multistep_ancestral_cfg_pp",
    "gradient_estimation", "gradient_estimation_cfg_pp", "er_sde", "seeds_2", "seeds_3", "sa_solver",
    "sa_solver_pece", "ddim", "uni_pc", "uni_pc_bh2",
]
# Those whose sampler is not written yet resolve once it is registered (see docs/SAMPLERS.md).
PENDING = {n for n, ours in comfyui.COMFYUI_SAMPLERS.items() if ours not in samplers.names()}


def test_table_lists_every_comfyui_sampler_in_order():
    assert list(comfyui.COMFYUI_SAMPLERS) == COMFYUI_SAMPLER_NAMES


@pytest.mark.parametrize("name", [n for n in COMFYUI_SAMPLER_NAMES if n not in PENDING])
def test_every_comfyui_sampler_name_resolves(name):
    info = samplers.info(name)
    assert info.name == comfyui.COMFYUI_SAMPLERS[name]


@pytest.mark.parametrize("comfy,ours", [
    ("dpmpp_2m", "DPM++ 2M"), ("euler_ancestral", "Euler a"), ("dpmpp_sde_gpu", "DPM++ SDE"),
    ("dpmpp_2m_sde_gpu", "DPM++ 2M SDE"), ("dpmpp_2m_sde_heun_gpu", "DPM++ 2M SDE Heun"),
    ("dpmpp_3m_sde_gpu", "dpmpp_3m_sde"), ("ddim", "DDIM"), ("uni_pc", "UniPC"), ("er_sde", "ER-SDE"),
    ("dpm_2_ancestral", "DPM2 a"), ("ipndm", "iPNDM"),
])
def test_comfyui_names_run_the_same_algorithm(comfy, ours):
    assert samplers.info(comfy).name == ours
    # the _gpu variants are the same sampler object as the plain name
    assert samplers.info(comfy).fn is samplers.info(comfy.removesuffix("_gpu")).fn


def test_lms_comfyui_lands_on_the_denoised_estimate_and_lms_a1111_integrates():
    g, sig = Gaussian(), karras_sigmas(6)
    x = start((3, 5), float(sig[0]))
    seen = []

    def spy(xx, s):
        seen.append((xx.clone(), float(s[0])))
        return g.denoiser(xx, s)

    comfy = samplers.sample("lms", spy, x, sig)
    last_x, last_sigma = seen[-1]
    assert last_sigma == pytest.approx(float(sig[-2]))
    assert torch.equal(comfy, g.denoiser(last_x, torch.tensor([last_sigma], dtype=torch.float64)))
    a1111 = samplers.sample("LMS", g.denoiser, x, sig)
    assert not torch.allclose(a1111, comfy)  # A1111's multistep step to 0 is a different update
    # same steps before the last: same calls
    assert len(seen) == len(sig) - 1


def test_dpmpp_3m_sde_keeps_the_penultimate_sigma_in_comfyui():
    train = S.train_sigmas()
    a1111 = samplers.sigmas("Karras", 10, train, sampler="DPM++ 3M SDE")
    comfy = samplers.sigmas("karras", 10, train, sampler="dpmpp_3m_sde")
    assert torch.equal(comfy, S.compute("Karras", 10, train))
    assert torch.equal(a1111, S.compute("Karras", 10, train, discard_penultimate=True))
    assert samplers.info("uni_pc").discard_penultimate and samplers.info("uni_pc_bh2").discard_penultimate


def test_uni_pc_bh2_is_unipc_with_the_bh2_variant():
    g, sig = Gaussian(), karras_sigmas(8)
    x = start((2, 4), float(sig[0]))
    bh2 = samplers.sample("uni_pc_bh2", g.denoiser, x, sig)
    assert torch.equal(bh2, samplers.sample("UniPC", g.denoiser, x, sig, variant="bh2"))
    assert not torch.equal(bh2, samplers.sample("uni_pc", g.denoiser, x, sig))
    assert "variant" not in samplers.info("uni_pc_bh2").options
    with pytest.raises(samplers.SamplerOptionError, match="does not take"):
        samplers.sample("uni_pc_bh2", g.denoiser, x, sig, variant="bh1")


def test_exact_lowercase_match_and_loose_spellings():
    assert samplers.info("lms").name == "lms" and samplers.info("LMS").name == "LMS"
    assert samplers.info("Lms").name == "LMS"  # not ComfyUI's exact name: A1111's
    assert samplers.info("DPM++ 3M SDE").discard_penultimate
    assert not samplers.info("dpmpp_3m_sde").discard_penultimate


@pytest.mark.parametrize("typed,suggested,runs_as", [
    ("dpmpp_2n", "'dpmpp_2m'", "'DPM++ 2M'"),
    ("euler_ancestal", "'euler_ancestral'", "'Euler a'"),
])
def test_unknown_comfyui_style_name_suggests_both_conventions(typed, suggested, runs_as):
    with pytest.raises(samplers.UnknownSamplerError) as err:
        samplers.info(typed)
    assert suggested in str(err.value) and runs_as in str(err.value)


def test_comfyui_name_of_a_registered_sampler():
    assert comfyui.comfyui_name("DPM++ 2M") == "dpmpp_2m"
    assert comfyui.comfyui_name("DPM++ SDE") == "dpmpp_sde"  # not the _gpu spelling
    assert comfyui.comfyui_name("DDIM") == "ddim"
    assert comfyui.comfyui_name("Restart") is None  # ComfyUI's KSampler has no Restart
