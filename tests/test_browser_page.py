"""The page's details in a real browser (Playwright on Debian's Chromium, as tests/test_browser.py):
each test is one thing a user sees or does after a grid has rendered."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest

from tests.test_browser import CHROMIUM, DONE, browser, set_samplers, text_input, url  # noqa: F401

pytestmark = pytest.mark.skipif(not CHROMIUM or not __import__("pathlib").Path(CHROMIUM).exists(),
                                reason="Chromium is not installed: run `make test`, which installs it")


def new_page(browser, width: int = 1280, height: int = 900):  # noqa: F811
    page = browser.new_page(viewport={"width": width, "height": height})
    page.set_default_timeout(120_000)  # CI's two cores may be busy with the other test worker
    return page


@pytest.fixture(scope="module")
def rendered(url: str, browser) -> Iterator[object]:  # noqa: F811
    """One page with a rendered 2-sampler x 3-step grid (Heun: 2 model calls a step, DDIM: 1)."""
    page = new_page(browser)
    page.goto(url)
    page.wait_for_selector("text=Model: ready", timeout=120_000)
    set_samplers(page, ["Heun", "DDIM"])
    text_input(page, "sg-steps").fill("2, 4, 8")
    page.click("#sg-generate")
    page.wait_for_selector(DONE, timeout=120_000)
    yield page
    page.close()


def x_axis(page) -> str:
    """The chart's x axis as Vega describes it (title and value range)."""
    return page.evaluate("""() => Array.from(document.querySelectorAll('#sg-chart [aria-label]'))
        .map(e => e.getAttribute('aria-label')).filter(t => t.startsWith('X-axis')).join(' | ')""")


def test_the_chart_plots_what_its_axis_title_says(rendered) -> None:
    page = rendered
    page.get_by_role("tab", name="Convergence").click()
    page.wait_for_function("() => document.querySelector('#sg-chart svg')")
    steps = x_axis(page)
    assert "steps" in steps and re.search(r"from 2(\.0)? to 4(\.0)?\b", steps), steps
    for by, last in (("model calls", "7"), ("steps", "4"), ("model calls", "7")):  # Heun at 4 steps: 7 calls
        page.locator("#sg-chart-by label").filter(has_text=by).click()
        page.wait_for_function(f"""() => Array.from(document.querySelectorAll('#sg-chart [aria-label]'))
            .some(e => (e.getAttribute('aria-label') || '').startsWith("X-axis titled '{by}'"))""")
        page.wait_for_timeout(1500)  # the data update follows the title's
        axis = x_axis(page)
        assert re.search(rf"to {last}(\.0)?\b", axis), (by, axis)


def test_ddim_and_heun_cells_carry_no_default_noise_settings(rendered) -> None:
    """The page's Eta 1 (ancestral) and Sigma noise 1 are defaults: DDIM stays deterministic
    (no "Eta DDIM: 1") and Heun's text has no "Sigma noise: 1" — the CLI's text for the same cell."""
    page = rendered
    page.get_by_role("tab", name="Cells").click()
    thumbs = page.locator("#sg-gallery img")
    info = text_input(page, "sg-cell-info")
    for index, sampler in ((0, "Heun"), (3, "DDIM")):
        thumbs.nth(index).click()
        page.wait_for_function(f"el => el.value.includes('Sampler: {sampler}')", arg=info.element_handle())
        text = info.input_value()
        assert "Eta" not in text and "Sigma noise" not in text, text
