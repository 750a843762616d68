"""The page's explanatory text: what the grid shows and the words samplers are named with."""

INTRO = """\
**Which sampler should you use, and how many steps?** Pick samplers and step counts, press
**Generate**, and every cell of the grid is drawn from the *same* starting noise (the seed). Read a
row left to right: a sampler that *converges* settles on one picture as steps grow; an
*ancestral* (**a**) or **SDE** sampler keeps changing it, because it adds fresh noise every step.
The numbers under the grid measure this: each cell's distance to its row's last cell.
"""

ABOUT_SAMPLERS = """\
### What the names mean

**A sampler solves an equation.** A diffusion model predicts, from a noisy picture, what the clean
picture looks like. Sampling walks from pure noise to a picture in a number of *steps*, each step
asking the model once or twice and moving a little. Deterministic samplers follow one exact path
(the "probability-flow ODE"), so with more steps they approach one definite image — that is
*convergence*, and the grid shows it as a row that stops changing.

**Ancestral ("a") samplers** — *Euler a*, *DPM2 a*, *DPM++ 2S a* — remove a little too much noise
at each step and add fresh random noise back. The result is still a good sample, but a *different*
one at every step count: the row never settles. That is expected, not a bug. The **eta** slider
sets how much noise they add (0 turns them back into their deterministic twin).

**SDE samplers** — *DPM++ SDE*, *DPM++ 2M SDE*, *DPM++ 3M SDE* — also inject noise, but take it from
one continuous random path per seed (a Brownian motion), so neighbouring step counts see related
noise. They wander less than ancestral samplers, yet still do not converge to the deterministic
image. **s_noise** scales that noise.

**CFG++ samplers** — *Euler CFG++*, *DPM++ 2M CFG++*, ... (Chung et al. 2024) — step from the
guided estimate but re-noise with the *unconditional* one, which keeps strong guidance from
overshooting. They want a CFG of about 1 to 2, not 7, and always run the unconditional half
(2 model rows per call, even at CFG 1). ComfyUI's names work too: type `dpmpp_2m`, `karras`,
`beta`; where a name means something else in A1111 ("beta" vs "Beta"), each runs as its tool does.

**Karras, Exponential, and other schedule types** decide *where* the steps go along the noise
levels. *Karras* (from Karras et al. 2022) packs more steps at low noise, where fine detail forms;
*Exponential* spaces them evenly in log-noise; *Uniform/Normal* space them evenly in model time.
"Automatic" uses each sampler's usual choice, as A1111 does.

**2M, 2S, 3M.** The digit is the solver's order — how fast its error shrinks as steps grow (halve
the step size: first order halves the error, second order quarters it). **M** (multistep) reuses
the model outputs of earlier steps, so it costs one model call per step; **S** (single-step) makes
two calls inside each step. *Heun* and *DPM2* are also two calls per step.

**Compare at equal cost.** A two-call sampler at 10 steps does as much work as a one-call sampler at
20. The convergence chart can put *model calls* instead of steps on its horizontal axis, which is
the fair comparison when you care about time.
"""
