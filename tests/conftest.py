"""Test-wide settings: one torch thread per pytest worker (xdist runs two on two cores)."""

import torch

torch.set_num_threads(1)
