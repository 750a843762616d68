"""The page's details in a real browser (Playwright on Debian's Chromium, as tests/test_browser.py):
each test is one thing a user sees or does after a grid has rendered."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest

from grids import defaults
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


def test_the_trajectory_number_box_works_on_enter(rendered) -> None:
    page = rendered
    page.get_by_role("tab", name="Trajectory").click()
    image = page.locator("#sg-traj-image img")
    image.wait_for()
    before = image.get_attribute("src")
    box = page.locator("#sg-traj input[type=number]")
    box.fill("0.3")
    box.press("Enter")
    page.wait_for_function("src => { const i = document.querySelector('#sg-traj-image img'); "
                           "return i && i.getAttribute('src') !== src; }", arg=before)


def progress_text(page) -> str:
    return page.locator("#sg-progress").inner_text()


def generate_and_wait(page, text: str) -> str:
    page.click("#sg-generate")
    page.wait_for_function("t => document.querySelector('#sg-progress').innerText.includes(t)", arg=text)
    return progress_text(page)


def test_input_errors_show_in_the_progress_line_once_and_without_tracebacks(rendered, capfd, caplog) -> None:
    page = rendered
    capfd.readouterr()
    steps = text_input(page, "sg-steps")
    steps.fill("abc")
    line = generate_and_wait(page, "not a whole number")
    assert "Step counts: 'abc' is not a whole number" in line and "steps: steps" not in line.lower()
    assert "done" not in line  # the last run's "— done" is gone
    steps.fill("2, 4, 8")
    prompt = text_input(page, "sg-prompt")
    prompt.fill("grinning face " * 400)  # 5,600 characters: refused with the reason, not cut
    assert len(prompt.input_value()) == 5600
    line = generate_and_wait(page, "characters long")
    assert "5,600 characters" in line and "at most 2,000" in line
    prompt.fill("grinning face")
    err = capfd.readouterr().err
    assert "Traceback" not in err, err[-2000:]
    refused = [r.getMessage() for r in caplog.records if r.getMessage().startswith("refused:")]
    assert len(refused) == 2 and all("\n" not in m for m in refused), refused  # one log line each


def test_a_failed_model_load_then_a_good_grid_leaves_the_status_ready(rendered) -> None:
    page = rendered
    model = page.locator("input[aria-label='Model'], [data-testid='dropdown'] input").first
    model.fill("/etc/passwd")
    model.press("Enter")
    page.evaluate("""() => { window.__lines = [];
      new MutationObserver(() => window.__lines.push(document.querySelector('#sg-progress').innerText))
        .observe(document.querySelector('#sg-progress'), {subtree: true, childList: true,
                                                          characterData: true}); }""")
    line = generate_and_wait(page, "not a model")
    assert "/etc/passwd is not a model" in line  # the whole path, not "passwd"
    lines = page.evaluate("window.__lines")  # a sign of activity while the model loads
    assert any("Loading the model /etc/passwd" in t for t in lines), lines
    assert "load failed" in page.locator("#sg-status").inner_text()
    model.fill("builtin")
    model.press("Enter")
    generate_and_wait(page, "done")
    page.wait_for_function("() => document.querySelector('#sg-status').innerText.includes('ready')",
                           timeout=10_000)
    assert "failed" not in page.locator("#sg-status").inner_text()


def test_a_fresh_page_never_shows_not_loaded_once_the_model_is_ready(url: str, browser) -> None:  # noqa: F811
    page = new_page(browser)
    page.add_init_script("""window.__seen = [];
      new MutationObserver(() => { const s = document.querySelector('#sg-status');
        if (s) window.__seen.push(s.innerText); }).observe(document, {subtree: true, childList: true,
        characterData: true});""")
    page.goto(url)
    page.wait_for_selector("#sg-status :text('ready')", timeout=60_000)
    seen = page.evaluate("window.__seen")
    assert not any("not loaded" in s for s in seen), seen
    page.close()


def test_stop_says_what_it_kept_and_shows_how_far_each_cell_got(url: str, browser) -> None:  # noqa: F811
    page = new_page(browser)
    page.goto(url)
    page.wait_for_selector("text=Model: ready", timeout=120_000)
    set_samplers(page, ["Euler", "DPM++ 2M"])
    text_input(page, "sg-steps").fill("100, 120, 140")  # long enough to stop in the middle
    page.click("#sg-generate")
    page.wait_for_function("() => /model calls [1-9]/.test(document.querySelector('#sg-progress').innerText)")
    page.click("#sg-stop")
    page.wait_for_function("() => document.querySelector('#sg-progress').innerText.includes('stopped')")
    line = progress_text(page)
    kept = int(re.search(r"Cells (\d+)/6", line).group(1))
    assert "finished cells kept" not in line
    if kept == 0:
        assert "no cell had finished" in line and "how far it got" in line, line
    else:
        assert f"{kept} of 6 cells finished" in line, line
    page.close()


def test_the_cells_tab_mirrors_the_grid_and_shows_a_clicked_cell_large(rendered) -> None:
    page = rendered
    page.get_by_role("tab", name="Cells").click()
    gallery = page.locator("#sg-gallery")
    columns = page.evaluate("""() => getComputedStyle(document.querySelector('#sg-gallery .grid-container'))
        .gridTemplateColumns.split(' ').length""")
    assert columns == 3  # the grid's 3 step counts, not a fixed 6
    assert gallery.locator(".caption-label").count() == 0  # no captions over the thumbnails
    assert "Click a cell" not in gallery.inner_text()  # no label over the first thumbnail
    gallery.locator("img").last.click()
    image = page.locator("#sg-cell img")
    page.wait_for_function("() => { const i = document.querySelector('#sg-cell img'); "
                           "return i && i.naturalWidth >= 384; }")
    assert image.bounding_box()["width"] >= 256  # not 64x64 px
    page.wait_for_function("() => document.querySelector('#sg-cell').innerText.includes('DDIM')")
    title = page.locator("#sg-cell").inner_text()
    steps = re.search(r"Steps: (\d+)", title).group(1)  # the cell's labels, as the title
    info = text_input(page, "sg-cell-info").input_value()
    assert "Sampler: DDIM" in info and f"Steps: {steps}," in info
    assert page.locator("#sg-snippet").is_visible()  # the code beside the A1111 text, same tab


def test_sampler_names_read_plainly_on_one_line(rendered) -> None:
    page = rendered
    label = page.locator(".sg-samplers label").filter(has_text="DPM++ 2M SDE Heun").first
    assert "montserrat" not in label.evaluate("e => getComputedStyle(e).fontFamily").lower()
    line = label.evaluate("e => parseFloat(getComputedStyle(e).lineHeight) || 20")
    assert label.bounding_box()["height"] < 2 * line + 16  # one line, not wrapped


def test_a_wide_grid_fills_the_panel_and_generate_is_off_while_it_runs(url: str, browser) -> None:  # noqa: F811
    page = new_page(browser)
    page.goto(url)
    page.wait_for_selector("text=Model: ready", timeout=120_000)
    link = page.get_by_role("tab", name="Share")
    link.click()
    page.click("#sg-copy")
    box = text_input(page, "sg-link")
    page.wait_for_function("el => el.value.startsWith('http')", arg=box.element_handle())
    assert box.input_value().endswith(f"/?seed={defaults.SEED}")  # nothing changed: only the seed
    page.get_by_role("tab", name="Cells").click()
    set_samplers(page, ["Euler"])
    text_input(page, "sg-steps").fill("2, 3, 4, 5, 6, 7")  # six columns
    page.click("#sg-generate")
    page.wait_for_function("() => document.querySelector('#sg-generate').disabled")
    page.wait_for_selector(DONE, timeout=120_000)
    page.wait_for_function("() => !document.querySelector('#sg-generate').disabled")
    ratio = page.evaluate("""() => document.querySelector('#sg-grid img').getBoundingClientRect().width /
        document.querySelector('#sg-grid').getBoundingClientRect().width""")
    assert ratio > 0.9, ratio  # scaled to the panel, not shown at 1x with empty space beside it
    page.locator("input[aria-label='Preset comparison']").click()
    page.get_by_role("option", name="A1111 vs diffusers").click()
    page.locator(".sg-samplers label").filter(has_text="Euler (diffusers)").first.wait_for(state="visible")
    page.close()


def test_on_a_phone_the_grid_comes_right_after_the_prompt(url: str, browser) -> None:  # noqa: F811
    page = new_page(browser, 390, 844)
    page.goto(url)
    page.wait_for_selector("#sg-generate")
    y = {k: page.locator(sel).first.bounding_box()["y"] for k, sel in
         (("prompt", "#sg-prompt"), ("generate", "#sg-generate"), ("grid", "#sg-grid"),
          ("steps", "#sg-steps"))}
    assert y["prompt"] < y["grid"] and y["generate"] < y["grid"] < y["steps"], y
    set_samplers(page, ["Euler"])
    text_input(page, "sg-steps").fill("2, 3, 4, 5")
    page.click("#sg-generate")
    page.wait_for_selector(DONE, timeout=120_000)
    right = page.evaluate("() => document.querySelector('#sg-grid img').getBoundingClientRect().right")
    assert right <= 390, right  # the grid fits the phone's width, not cut off at the right
    page.close()
