"""Image distances for convergence measurements: pixel RMSE and SSIM.

This module owns how two cell images are compared pixel by pixel: both become RGB
arrays in [0, 1] (`rgb`), then

    pixel_rmse(a, b) = sqrt(mean over pixels and R, G, B of (a - b)^2)      in [0, 1]

and the structural similarity index of Wang, Bovik, Sheikh & Simoncelli, "Image
Quality Assessment: From Error Visibility to Structural Similarity", IEEE TIP 13(4),
2004, eqs. 13 and 17, with the paper's settings: an 11x11 circular-symmetric Gaussian window
of standard deviation 1.5 (normalised to sum 1), K1 = 0.01, K2 = 0.03, dynamic range
L = 1. Per window

    SSIM = (2 mu_a mu_b + C1)(2 sigma_ab + C2) / ((mu_a^2 + mu_b^2 + C1)(sigma_a^2 + sigma_b^2 + C2)),
    C1 = (K1 L)^2, C2 = (K2 L)^2,

with Gaussian-weighted means, variances and covariance; the index is the mean of the
map over every window that fits inside the image (no padding, as the authors'
reference code's "valid" filtering). Colour images: SSIM is computed on each of R, G,
B separately and averaged over the three channels (not on luminance), so a change in
colour alone lowers it too; a grey image gives its grey-level SSIM.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

WINDOW = 11
SIGMA = 1.5
K1 = 0.01
K2 = 0.03


class ImageCompareError(ValueError):
    """Two images that cannot be compared (size, shape, value range); the message says how to fix it."""


def rgb(image: Image.Image | np.ndarray | Tensor) -> Tensor:
    """An image as a float64 (3, H, W) tensor in [0, 1].

    Takes a PIL image (any mode; alpha is dropped, grey is repeated over R, G, B) or an
    array (H, W) / (H, W, 3): uint8 in 0..255, or floats in [0, 1].
    """
    if isinstance(image, Image.Image):
        array = np.asarray(image.convert("RGB"))
    elif isinstance(image, (np.ndarray, Tensor)):
        array = image.detach().cpu().numpy() if isinstance(image, Tensor) else image
    else:
        raise ImageCompareError(f"expected a PIL image or an array, got {type(image).__name__}")
    if array.ndim == 2:
        array = np.repeat(array[:, :, None], 3, axis=2)
    if array.ndim != 3 or array.shape[2] != 3:
        raise ImageCompareError(f"an image array must be (H, W) or (H, W, 3), got shape {array.shape}")
    if array.dtype == np.uint8:
        return torch.from_numpy(array.astype(np.float64) / 255.0).permute(2, 0, 1)
    values = torch.from_numpy(np.asarray(array, dtype=np.float64)).permute(2, 0, 1)
    if not torch.isfinite(values).all() or values.min() < 0 or values.max() > 1:
        raise ImageCompareError("float image values must be finite and in [0, 1] "
                                "(divide 0-255 values by 255, or pass uint8)")
    return values


def _pair(a, b) -> tuple[Tensor, Tensor]:
    x, y = rgb(a), rgb(b)
    if x.shape != y.shape:
        raise ImageCompareError(f"images differ in size: {x.shape[2]}x{x.shape[1]} vs "
                                f"{y.shape[2]}x{y.shape[1]} — compare cells rendered at the same size")
    return x, y


def pixel_rmse(a, b) -> float:
    """Root-mean-square difference of two images in [0, 1] over every pixel and R, G, B."""
    x, y = _pair(a, b)
    return float((x - y).pow(2).mean().sqrt())


def gaussian_window(size: int = WINDOW, sigma: float = SIGMA) -> Tensor:
    """The 1-D Gaussian weights (sum 1) whose outer product is SSIM's 2-D window."""
    offsets = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    weights = torch.exp(-offsets.pow(2) / (2 * sigma**2))
    return weights / weights.sum()


def _blur(x: Tensor, weights: Tensor) -> Tensor:
    """Gaussian-weighted local means of each channel of (C, H, W), valid windows only."""
    c = x.shape[0]
    rows = weights.view(1, 1, -1, 1).expand(c, 1, -1, 1)
    cols = weights.view(1, 1, 1, -1).expand(c, 1, 1, -1)
    return F.conv2d(F.conv2d(x.unsqueeze(0), rows, groups=c), cols, groups=c).squeeze(0)


def ssim_map(a, b) -> Tensor:
    """SSIM of every 11x11 window inside both images: a (3, H - 10, W - 10) tensor."""
    x, y = _pair(a, b)
    if min(x.shape[1:]) < WINDOW:
        raise ImageCompareError(f"SSIM needs images of at least {WINDOW}x{WINDOW} pixels, "
                                f"got {x.shape[2]}x{x.shape[1]}")
    w = gaussian_window()
    mu_x, mu_y = _blur(x, w), _blur(y, w)
    var_x = _blur(x * x, w) - mu_x**2
    var_y = _blur(y * y, w) - mu_y**2
    cov = _blur(x * y, w) - mu_x * mu_y
    c1, c2 = K1**2, K2**2
    return ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))


def ssim(a, b) -> float:
    """Mean SSIM of two images (1 = identical), averaged over windows and R, G, B."""
    return float(ssim_map(a, b).mean())


def fits_ssim(image: Image.Image | np.ndarray | Tensor) -> bool:
    """Whether an image is at least SSIM's window (11 pixels) wide and high."""
    width, height = image.size if isinstance(image, Image.Image) else (image.shape[1], image.shape[0])
    return min(width, height) >= WINDOW
