"""LMS: the linear multistep (Adams-Bashforth) sampler on sigmas, order 4 by default.

The probability-flow ODE dx/dsigma = d(x, sigma) = (x - D(x; sigma)) / sigma
(Karras, Aittala, Aila, Laine 2022, "Elucidating the Design Space of
Diffusion-Based Generative Models", eq. 3 with sigma(t) = t) is integrated over
each step [sigma_i, sigma_{i+1}] by replacing d with the polynomial through the
last `order` slopes d_i, d_{i-1}, ... at their sigmas: the variable-step
Adams-Bashforth method (Hairer, Norsett, Wanner, "Solving Ordinary
Differential Equations I", section III.5, variable step size Adams methods):

    x_{i+1} = x_i + sum_j c_j d_{i-j},   c_j = integral over [sigma_i, sigma_{i+1}] of L_j,

with L_j the Lagrange basis polynomial of node sigma_{i-j}. The first steps use
the slopes there are (order 1, 2, ...). k-diffusion computes c_j by numerical
quadrature; here the integral of the polynomial is taken exactly, which gives
the same numbers to rounding and costs a few float operations per step.

On flow models LMS integrates the same ODE, with one difference taken from ComfyUI (whose
code Forge runs for these models): the last step to sigma = 0 returns the denoised estimate
(the first-order step there) instead of the polynomial step.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from itertools import pairwise

from torch import Tensor

from samplers._math import int_option
from samplers.parametrisation import Parametrisation
from samplers.protocol import SamplerGenerator
from samplers.registry import register

MAX_ORDER = 4


def lms_coefficients(nodes: Sequence[float], sigma_to: float) -> list[float]:
    """Integrals of the Lagrange basis polynomials of `nodes` from nodes[0] to sigma_to.

    nodes[0] is the current sigma, nodes[1:] the earlier ones. In the scaled
    variable u = (tau - nodes[0]) / h, h = sigma_to - nodes[0], the integral is
    h times the integral of a polynomial in u over [0, 1]; that scaling keeps
    the arithmetic well conditioned for any step size.
    """
    t0 = nodes[0]
    h = sigma_to - t0
    u = [(t - t0) / h for t in nodes]
    coeffs = []
    for j, u_j in enumerate(u):
        poly = [1.0]  # ascending powers of u
        denom = 1.0
        for k, u_k in enumerate(u):
            if k != j:
                # multiply by (u - u_k)
                poly = [a - u_k * b for a, b in zip([0.0, *poly], [*poly, 0.0], strict=True)]
                denom *= u_j - u_k
        coeffs.append(h * sum(c / (m + 1) for m, c in enumerate(poly)) / denom)
    return coeffs


@register(
    "LMS", kind="deterministic", calls_per_step=1, default_schedule="Uniform",
    description="Linear multistep: reuses the last four model outputs to take a higher-order step "
                "for the price of one call. Can be unstable at very low step counts.",
)
def lms(x: Tensor, sigmas: Tensor, param: Parametrisation, *, order: int = 4) -> SamplerGenerator:
    """Linear multistep of the given order (1..4) on the sigma axis; 1 call per step."""
    order_v = int_option("order", order, minimum=1, maximum=MAX_ORDER)
    return _lms(x, sigmas.tolist(), order_v, denoise_last=param.is_flow)


def _lms(x: Tensor, sig: list[float], order: int, denoise_last: bool) -> SamplerGenerator:
    slopes: deque[Tensor] = deque(maxlen=order)  # newest first
    for i, (s, s_next) in enumerate(pairwise(sig)):
        denoised = yield x, s
        if s_next == 0 and denoise_last:
            x = denoised
            continue
        slopes.appendleft((x - denoised) / s)
        nodes = sig[i + 1 - len(slopes): i + 1][::-1]
        for c, d in zip(lms_coefficients(nodes, s_next), slopes, strict=True):
            x = x + c * d
    return x
