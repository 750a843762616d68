"""The sampler protocol: a sampler is a generator that asks for denoiser calls.

A sampler function has the signature::

    def euler(x, sigmas, *, option=default, ...):
        for s, s_next in pairwise(sigmas.tolist()):
            denoised = yield x, s          # "please denoise x at sigma s"
            x = x + (x - denoised) / s * (s_next - s)
        return x

and takes, after x and sigmas, only the inputs it uses, by name: `noise` (the cell's noise,
if it draws any) and `param` (the model parametrisation, `samplers.parametrisation`, if its
flow form differs from its VE one); `samplers.run` passes them by the registry's record of
the signature (`SamplerInfo.inputs`).

`x` has shape (B, ...) and lives in the model's parametrisation: the variance-exploding
("k-diffusion") x = data + sigma * eps of the SD family, or rectified flow's
x = (1 - sigma) data + sigma * eps. `sigmas` is a descending 1-D float
tensor ending (usually) in 0 (in [0, 1] on flow models). `noise` is the cell's own seeded
noise source (`samplers.noise.CellNoise`). Each `yield` hands out ``(x, sigma)`` where sigma
is a float or a 0-d tensor and receives the denoised estimate D(x; sigma) of the
same shape as x. The generator's return value is the final sample.

A CFG++ sampler (`SamplerInfo.cfg_pp`) receives, for every request, the pair
``(guided, unconditional)`` of denoised estimates instead of one tensor: CFG++
(Chung et al. 2024, "CFG++: Manifold-constrained Classifier Free Guidance")
steps along the unconditional noise direction from the guided estimate.

A request may carry a third element, the model timestep to use for this call
(the diffusers adapter does: diffusers rounds some timesteps, and a faithful
run calls the model exactly there). A plain denoiser ignores it.

This module owns driving one such generator with a plain function; the grid
engine drives many at once with the same contract.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import Any

import torch
from torch import Tensor

Request = tuple[Tensor, Any] | tuple[Tensor, Any, Any]
SamplerGenerator = Generator[Request, Tensor, Tensor]
Denoiser = Callable[[Tensor, Tensor], Any]  # a Tensor, or (guided, uncond) for a CFG++ sampler


class NonFiniteError(FloatingPointError):
    """The denoiser (or the sampler's own arithmetic) produced NaN or inf."""


def sigma_batch(sigma: Any, x: Tensor) -> Tensor:
    """A request's sigma as a (B,) tensor on x's device, in x's dtype."""
    s = torch.as_tensor(sigma, dtype=x.dtype, device=x.device)
    return s.reshape(-1).expand(x.shape[0]) if s.numel() == 1 else s


def step_of(sigma: float, sigmas: Tensor) -> int:
    """1-based step index a request at `sigma` belongs to (for error messages)."""
    above = (sigmas >= sigma - 1e-12 * max(1.0, abs(sigma))).nonzero()
    return int(above[-1]) + 1 if len(above) else 1


def _check_finite(t: Tensor, what: str, sigma: float, sigmas: Tensor, call: int) -> None:
    if not torch.isfinite(t).all():
        n = len(sigmas) - 1
        raise NonFiniteError(
            f"{what} is NaN or inf at step {step_of(sigma, sigmas)} of {n} "
            f"(model call {call}, sigma={sigma:.4g})"
        )


class PairExpectedError(TypeError):
    """A CFG++ sampler's denoiser returned one tensor instead of (guided, unconditional)."""


def _answer(denoiser: Denoiser, x: Tensor, s: Tensor, pairs: bool, sigmas: Tensor, calls: int) -> Any:
    """The denoiser's answer to one request, checked: a finite tensor, or a pair of them."""
    out = denoiser(x, s)
    if not pairs:
        _check_finite(out, "the denoised estimate", float(s[0]), sigmas, calls)
        return out
    if not (isinstance(out, (tuple, list)) and len(out) == 2
            and all(isinstance(t, Tensor) and t.shape == x.shape for t in out)):
        raise PairExpectedError(
            "a CFG++ sampler needs the denoiser to return a pair (guided_x0, unconditional_x0) "
            f"of tensors shaped like x {tuple(x.shape)}, got {type(out).__name__}")
    for t, what in zip(out, ("the guided denoised estimate", "the unconditional denoised estimate"),
                       strict=True):
        _check_finite(t, what, float(s[0]), sigmas, calls)
    return tuple(out)


def drive(gen: SamplerGenerator, denoiser: Denoiser, sigmas: Tensor, *,
          pairs: bool = False) -> tuple[Tensor, int]:
    """Run a sampler generator to the end with a plain denoiser.

    With `pairs` (a CFG++ sampler) the denoiser returns (guided, unconditional) and the
    sampler receives both. Returns the final sample and the number of denoiser calls made.
    Raises NonFiniteError naming the step if the denoiser returns NaN/inf.
    """
    calls = 0
    try:
        request = next(gen)
        while True:
            x, sigma = request[0], request[1]
            s = sigma_batch(sigma, x)
            calls += 1
            request = gen.send(_answer(denoiser, x, s, pairs, sigmas, calls))
    except StopIteration as stop:
        result = stop.value
    finally:
        gen.close()
    last = float(sigmas[-1])
    _check_finite(result, "the sampler's result", last, sigmas, calls)
    return result, calls
