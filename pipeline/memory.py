"""Device memory: how many model rows fit in one UNet call, and giving cached blocks back.

The engine sizes its batches here and both the engine and the VAE decode free the cache here
before retrying after an out-of-memory error (one place decides; tests spy on it).
"""

from __future__ import annotations

import torch

CPU_MAX_ROWS = 16
# Activations an SD-family UNet keeps live per batch row at inference, in bytes per latent pixel,
# at float16 (2-byte) precision; see auto_max_batch for where the figure comes from.
ACTIVATION_BYTES_PER_LATENT_PIXEL = 48 << 10
FREE_SHARE = 0.7  # of free memory the UNet's activations may use (the rest: VAE decode, fragmentation)
MAX_AUTO_ROWS = 256


def auto_max_batch(device: torch.device, latent_pixels: int, dtype: torch.dtype = torch.float16) -> int:
    """Rows per model call: a fixed number on the CPU, from free memory on CUDA.

    The per-row figure, reasoned for SD 1.5's UNet at 64x64 latents (512x512 px) in float16 with
    PyTorch SDPA at inference (no autograd graph, so each block's activations are freed as the next
    runs); the peak is in the 64x64 level, 4096 tokens of 320 channels (2.6 MB a tensor):
      - the 12 skip tensors the down path keeps for the up path: ~14 MB
        (3 x 2.6 MB at 64x64, 3 x 1.3 MB at 32x32, 3 x 0.66 MB at 16x16, 3 x 0.16 MB at 8x8);
      - a transformer block's GEGLU feed-forward: its projection to 2 x 1280 channels is
        4096 x 2560 x 2 B = 21 MB, live with its GELU output and the gated product (10.5 MB each):
        ~42 MB; SDPA's flash / memory-efficient kernels never form the 8 x 4096 x 4096 attention
        matrix (that would be 268 MB a row, the reason the engine sets AttnProcessor2_0);
      - the up path's resnets on the concatenated 960-channel input: GroupNorm, SiLU and conv
        temporaries of ~8 MB each, a few live at once;
    so ~70-80 MB of tensors are live at the peak. PyTorch's caching allocator rounds and fragments
    blocks as batch sizes change, GroupNorm works in float32 on half inputs and cuDNN picks
    workspaces that grow with the batch: budgeting 2.5x that gives ~190 MiB a row, 48 KiB per latent
    pixel. It agrees with what users see: batch 8 with CFG (16 rows) at 512x512 fits an 8 GB card.
    SDXL has no attention at its highest resolution and 640 channels at the next, so its cost per
    latent pixel is below SD 1.5's; the SD 1.5 figure is the conservative one. float32 doubles it.
    Free memory counts what PyTorch's cache holds unused (mem_get_info calls it used). An OOM halves
    the batch anyway, so the estimate needs to be near, not exact.
    """
    if device.type != "cuda" or not torch.cuda.is_available():
        return CPU_MAX_ROWS
    free, _total = torch.cuda.mem_get_info(device)
    free += max(0, torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device))
    itemsize = torch.empty((), dtype=dtype).element_size()
    per_row = latent_pixels * ACTIVATION_BYTES_PER_LATENT_PIXEL * itemsize / 2
    return max(1, min(MAX_AUTO_ROWS, int(FREE_SHARE * free / per_row)))


def free_cached_memory() -> None:
    """Give the blocks PyTorch's CUDA cache holds back before a retry after an OOM, so the smaller
    batch is not refused for fragmentation."""
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
