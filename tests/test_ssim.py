"""Image distances for convergence measurements (report.ssim): pixel RMSE and SSIM.

SSIM is checked against an independent scipy computation, a flat-image value worked by
hand, and its known properties (1 for identical images, symmetric, lower with more noise).
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from scipy.ndimage import gaussian_filter

from report.ssim import ImageCompareError, pixel_rmse, ssim


def noise_image(seed: int, size=(24, 20)) -> np.ndarray:
    return np.random.default_rng(seed).random((size[1], size[0], 3))


def test_pixel_rmse_is_exact_on_uint8_images():
    a = Image.new("RGB", (4, 3), (0, 0, 0))
    b = Image.new("RGB", (4, 3), (51, 102, 153))  # differences 0.2, 0.4, 0.6 in every pixel
    assert pixel_rmse(a, b) == pytest.approx(((0.04 + 0.16 + 0.36) / 3) ** 0.5, abs=1e-15)
    assert pixel_rmse(a, Image.new("RGB", (4, 3), (255, 0, 0))) == pytest.approx(3 ** -0.5, abs=1e-15)
    assert pixel_rmse(b, b) == 0.0


def test_ssim_of_identical_images_is_one_and_it_is_symmetric():
    a, b = noise_image(1), noise_image(2)
    assert ssim(a, a) == pytest.approx(1.0, abs=1e-12)
    assert ssim(a, b) == pytest.approx(ssim(b, a), abs=1e-15)
    assert ssim(a, b) < 0.1  # independent noise has no structure in common


def test_ssim_of_two_flat_images_is_the_luminance_term_by_hand():
    # Flat images: variances and covariance are 0, so the contrast-structure term is C2 / C2 = 1
    # and SSIM = (2 * 0.5 * 0.25 + C1) / (0.5^2 + 0.25^2 + C1), C1 = 0.01^2.
    a, b = np.full((16, 16), 0.5), np.full((16, 16), 0.25)
    assert ssim(a, b) == pytest.approx((0.25 + 1e-4) / (0.3125 + 1e-4), abs=1e-12)  # 0.80006...


def scipy_ssim(a: np.ndarray, b: np.ndarray) -> float:
    """SSIM written independently: scipy's Gaussian filter (radius int(3.34 * 1.5 + 0.5) = 5, an
    11-tap window), keeping only pixels whose window lies inside the image, channels averaged."""
    blur = lambda x: gaussian_filter(x, 1.5, truncate=3.34)[5:-5, 5:-5]  # noqa: E731
    c1, c2 = 0.01**2, 0.03**2
    values = []
    for ch in range(3):
        x, y = a[..., ch], b[..., ch]
        mx, my = blur(x), blur(y)
        vx, vy, cov = blur(x * x) - mx**2, blur(y * y) - my**2, blur(x * y) - mx * my
        values.append(((2 * mx * my + c1) * (2 * cov + c2) / ((mx**2 + my**2 + c1) * (vx + vy + c2))).mean())
    return float(np.mean(values))


def test_ssim_matches_an_independent_scipy_computation():
    a = noise_image(3, (40, 32))
    b = np.clip(a + 0.15 * np.random.default_rng(4).standard_normal(a.shape), 0, 1)
    b[:, :, 1] = b[:, :, 1] * 0.5  # a colour change too
    assert ssim(a, b) == pytest.approx(scipy_ssim(a, b), abs=1e-10)


def test_more_noise_means_lower_ssim_and_higher_rmse():
    rng = np.random.default_rng(5)
    clean = gaussian_filter(rng.random((32, 32, 3)), (2, 2, 0))  # smooth, image-like
    noise = rng.standard_normal(clean.shape)
    noisy = [np.clip(clean + s * noise, 0, 1) for s in (0.01, 0.03, 0.1, 0.3)]
    sims = [ssim(clean, n) for n in noisy]
    errs = [pixel_rmse(clean, n) for n in noisy]
    assert sims == sorted(sims, reverse=True) and len(set(sims)) == 4
    assert errs == sorted(errs) and len(set(errs)) == 4
    assert sims[0] > 0.9 and sims[-1] < 0.5


def test_grey_pil_images_compare_as_their_rgb_copies():
    a = Image.fromarray((noise_image(6)[..., 0] * 255).astype(np.uint8), "L")
    b = Image.fromarray((noise_image(7)[..., 0] * 255).astype(np.uint8), "L")
    assert ssim(a, b) == pytest.approx(ssim(a.convert("RGB"), b.convert("RGB")), abs=1e-15)


@pytest.mark.parametrize("a, b, message", [
    (np.zeros((16, 16, 3)), np.zeros((16, 12, 3)), "differ in size"),
    (np.zeros((8, 8, 3)), np.zeros((8, 8, 3)), "at least 11x11"),
    (np.full((16, 16, 3), 2.0), np.zeros((16, 16, 3)), r"in \[0, 1\]"),
    (np.zeros((16, 16, 4)), np.zeros((16, 16, 4)), r"\(H, W, 3\)"),
    ("image.png", np.zeros((16, 16, 3)), "PIL image or an array"),
])
def test_images_that_cannot_be_compared_are_refused_clearly(a, b, message):
    with pytest.raises(ImageCompareError, match=message):
        ssim(a, b)
