"""The page in a real browser: Playwright driving Debian's Chromium (installed by `make test`).

One session does what a user does: change a slider, pick samplers, type step counts,
Generate, watch cells arrive, open a cell, download the grid and read its PNG metadata,
then open the share link and get the same settings and the same grid. Screenshots at
desktop and phone widths go to $SCREENSHOT_DIR (docs/ when refreshing the docs).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from grids import defaults
from scripts.served_app import serve_in_process
from ui.config import AppConfig

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
DONE = "#sg-progress :text('done')"

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(),
                                reason="Chromium is not installed: run `make test`, which installs it")


@pytest.fixture(scope="module")
def url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    config = AppConfig(public=False, out_root=tmp_path_factory.mktemp("browser-out"))
    app = serve_in_process(config, page_assets=True)
    try:
        yield app.url
    finally:
        app.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


def text_input(page, elem_id: str):
    return page.locator(f"#{elem_id} textarea, #{elem_id} input").first


def set_samplers(page, wanted: list[str]) -> None:
    boxes = page.locator(".sg-samplers input[type=checkbox]")
    for i in range(boxes.count()):
        box = boxes.nth(i)
        name = box.locator("xpath=..").inner_text().strip()
        if box.is_checked() != (name in wanted):
            box.locator("xpath=..").click()


def checked_samplers(page) -> list[str]:
    boxes = page.locator(".sg-samplers input[type=checkbox]")
    return [boxes.nth(i).locator("xpath=..").inner_text().strip() for i in range(boxes.count())
            if boxes.nth(i).is_checked()]


def shots(page, name: str) -> None:
    folder = Path(os.environ.get("SCREENSHOT_DIR", "")) if os.environ.get("SCREENSHOT_DIR") else None
    if folder is None:
        return
    folder.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(folder / f"{name}.png"), full_page=True)


def test_a_user_generates_inspects_downloads_and_shares(url: str, browser, tmp_path: Path) -> None:
    page = browser.new_page(viewport={"width": 1280, "height": 900}, accept_downloads=True)
    page.set_default_timeout(120_000)  # CI's two cores may be busy with the other test worker
    page.goto(url)
    page.wait_for_selector("#sg-generate", timeout=120_000)
    page.wait_for_selector("text=Model: ready", timeout=120_000)

    cfg = page.locator("#sg-cfg input[type=number]")
    cfg.fill("7")
    cfg.press("Enter")
    text_input(page, "sg-steps").fill("2, 4")
    text_input(page, "sg-prompt").fill("red apple")
    heun = page.locator(".sg-samplers label").filter(has_text="Heun").first
    assert "2 model calls per step" in (heun.get_attribute("title") or "")  # description on hover
    set_samplers(page, ["Euler", "DPM++ 2M SDE"])
    assert checked_samplers(page) == ["Euler", "DPM++ 2M SDE"]

    page.click("#sg-generate")
    page.wait_for_selector("#sg-progress :text('Cells')", timeout=120_000)
    page.wait_for_selector(DONE, timeout=120_000)
    assert "Cells 4/4" in page.locator("#sg-progress").inner_text()
    assert page.locator("#sg-seed input").input_value() == str(defaults.SEED)  # a fixed seed stays
    thumbs = page.locator("#sg-gallery img")
    thumbs.first.wait_for(timeout=120_000)
    assert thumbs.count() == 4
    shots(page, "app-desktop")

    thumbs.first.click()
    info = text_input(page, "sg-cell-info")
    page.wait_for_function("el => el.value.includes('Steps: 2')", arg=info.element_handle())
    params = info.input_value()
    assert params.startswith("red apple\n") and "Sampler: Euler" in params and "CFG scale: 7" in params

    page.get_by_role("tab", name="Downloads").click()
    link = page.locator("#sg-files a[download='grid.png']")
    with page.expect_download() as download:
        link.click()
    saved = tmp_path / "grid.png"
    download.value.save_as(saved)
    grid_info = Image.open(saved).info["parameters"]
    assert "Script: X/Y/Z plot" in grid_info and "red apple" in grid_info

    page.get_by_role("tab", name="Share").click()
    page.click("#sg-copy")
    link_box = text_input(page, "sg-link")
    page.wait_for_function("el => el.value.startsWith('http')", arg=link_box.element_handle())
    shared = link_box.input_value()
    assert "cfg=7" in shared and f"seed={defaults.SEED}" in shared

    other = browser.new_page(viewport={"width": 390, "height": 844})
    other.set_default_timeout(120_000)
    other.goto(shared)
    other.wait_for_selector(DONE, timeout=120_000)
    assert checked_samplers(other) == ["Euler", "DPM++ 2M SDE"]
    assert text_input(other, "sg-steps").input_value() == "2, 4"
    assert text_input(other, "sg-prompt").input_value() == "red apple"
    assert other.locator("#sg-cfg input[type=number]").input_value() == "7"
    other.get_by_role("tab", name="Cells").click()
    assert other.locator("#sg-gallery img").count() == 4
    shots(other, "app-phone")
    other.close()
    page.close()
