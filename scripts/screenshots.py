"""Screenshots of the app for docs/: the default grid at desktop and phone widths, the
convergence chart, and the default grid on the built-in flow model (shift slider shown).
Serves the app in-process on the built-in models and drives Debian's Chromium with Playwright
(as tests/test_browser.py does).

    .venv/bin/python scripts/screenshots.py --out docs
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from grids import defaults  # noqa: E402
from scripts.served_app import serve_in_process  # noqa: E402
from tests.test_browser import CHROMIUM, CHROMIUM_ARGS, DONE  # noqa: E402
from ui.config import AppConfig  # noqa: E402


def load_lazy_images(page) -> None:
    """Scroll down the page and back: the gallery's thumbnails load lazily, only once they have
    been in view, so a full-page screenshot would show them blank."""
    height = page.evaluate("document.body.scrollHeight")
    for y in range(0, height, 300):
        page.evaluate(f"window.scrollTo(0, {y})")
        page.wait_for_timeout(60)
    page.evaluate("window.scrollTo(0, 0)")
    page.wait_for_timeout(1500)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs"))
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    served = serve_in_process(AppConfig(out_root=Path(tempfile.mkdtemp(prefix="shots-"))), 600,
                              page_assets=True)
    url = f"{served.url}?seed={defaults.SEED}"  # the default grid (grids.defaults), rendered on load
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            shots = (("app-desktop", (1400, 1000), url), ("app-phone", (390, 844), url),
                     ("app-builtin-flow", (1400, 1000), f"{url}&model=builtin-flow"))
            for name, size, address in shots:
                page = browser.new_page(viewport={"width": size[0], "height": size[1]})
                page.set_default_timeout(1_200_000)  # a busy 2-core machine: minutes
                page.goto(address)
                page.wait_for_selector(DONE)
                load_lazy_images(page)
                page.screenshot(path=str(args.out / f"{name}.png"), full_page=True)
                if name == "app-desktop":
                    page.get_by_role("tab", name="Convergence").click()
                    page.wait_for_timeout(2500)
                    page.locator("#sg-grid").scroll_into_view_if_needed()
                    page.screenshot(path=str(args.out / "app-convergence.png"), full_page=True)
                page.close()
            browser.close()
    finally:
        served.close()
    print(f"wrote {args.out}/app-desktop.png, app-phone.png, app-convergence.png, "
          "app-builtin-flow.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
