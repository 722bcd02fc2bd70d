"""A headless Chrome for the console's browser tests: Debian's ``chromium`` driven by its
``chromedriver`` through Selenium, with no download of any kind.

Selenium 4 finds a browser and a driver with Selenium Manager, a binary that downloads
them when it finds none; there is no internet here, so both paths are given explicitly:
with ``Service(executable_path=...)`` set, Selenium skips Selenium Manager altogether, and
``SE_OFFLINE=true`` keeps it offline should a later Selenium call it anyway.

``find_chromium()`` says where the browser and its driver are (None when either is
missing: scripts/setup.sh installs both with apt-get when run as root);
``start_chrome()`` starts a driver; ``screenshot()`` saves a PNG of the whole page.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from selenium.webdriver.chrome.webdriver import WebDriver

#: Where Debian's ``chromium`` and ``chromium-driver`` packages put them.
DEBIAN_PATHS = "/usr/bin:/usr/lib/chromium"
#: The window of every test, and of the README's screenshots (a laptop's screen).
WINDOW_SIZE = (1280, 900)


@dataclass(frozen=True)
class Chromium:
    binary: str
    driver: str


def find_chromium() -> Chromium | None:
    """The system chromium and its chromedriver (PATH first, then Debian's places)."""
    binary = next(filter(None, (shutil.which(name) or shutil.which(name, path=DEBIAN_PATHS)
                                for name in ("chromium", "chromium-browser"))), None)  # fmt: skip
    driver = shutil.which("chromedriver") or shutil.which("chromedriver", path=DEBIAN_PATHS)
    return Chromium(binary, driver) if binary and driver else None


def start_chrome(
    chromium: Chromium | None = None, *, window_size: tuple[int, int] = WINDOW_SIZE, log_path: str | Path | None = None
) -> WebDriver:
    """A headless Chrome driver of the system chromium; the caller ``quit()``s it.

    RuntimeError if chromium or chromedriver is missing. ``log_path`` takes chromedriver's
    log (the place to look when the browser does not start)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chromium = chromium or find_chromium()
    if chromium is None:
        raise RuntimeError("chromium and chromedriver are not installed (apt-get install chromium chromium-driver)")
    os.environ.setdefault("SE_OFFLINE", "true")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium.binary
    for argument in (
        "--headless=new",
        # Chrome refuses to start its sandbox as root (CI runs as root), and a container's
        # /dev/shm is often too small for its shared memory.
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        # Nothing to fetch: no first-run page, no component updates, no sync.
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--window-size={window_size[0]},{window_size[1]}",
    ):
        options.add_argument(argument)
    service = Service(executable_path=chromium.driver, log_output=str(log_path) if log_path else os.devnull)
    driver = webdriver.Chrome(service=service, options=options)
    driver.set_window_size(*window_size)
    return driver


def screenshot(driver: WebDriver, path: str | Path, *, full_page: bool = True) -> Path:
    """A PNG of the page at ``path`` (folders made as needed): the whole page, not only
    the window, unless ``full_page`` is False. The window size is restored afterwards."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    size = driver.get_window_size()
    try:
        if full_page:
            height = driver.execute_script(
                "return Math.max(document.body.scrollHeight, document.documentElement.scrollHeight)"
            )
            # The window's height includes no browser chrome when headless.
            driver.set_window_size(size["width"], max(int(height), size["height"]))
        if not driver.save_screenshot(str(path)):
            raise RuntimeError(f"the browser could not save a screenshot to {path}")
    finally:
        if full_page:
            driver.set_window_size(size["width"], size["height"])
    return path
