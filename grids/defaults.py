"""The default grid: one set of defaults for the app's page, the CLI without --spec, and the
docs. Torch-free (the page is built before torch loads).

Chosen to show the point of the tool at a glance on the built-in model (checked by
tests/test_builtin.py::test_the_default_grid_shows_convergence_against_non_convergence): four
deterministic samplers settle on one image as steps grow, while the two ancestral ones still
change between 20 and 40 steps (for "crying face", seed 5, Euler a's 20- and 40-step images
differ by pixel RMSE 0.09, the tear moves). The SDE samplers are left out of the default: with a
Brownian tree they converge too, to their own noise path, which is a finer point than the first
grid should make. Samplers are listed in the page's menu order (deterministic first), which is
also the grid's row order.
"""

from __future__ import annotations

PROMPT = "crying face"
NEGATIVE_PROMPT = ""
SEED = 5
CFG = 5.0
SAMPLERS = ("DPM++ 2M", "Euler", "Heun", "UniPC", "DPM++ 2S a", "Euler a")
STEPS = "5, 10, 20, 40"
