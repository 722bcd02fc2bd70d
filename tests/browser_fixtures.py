"""The ``browser`` fixture: a headless Chrome (gateway/testing/browser.py) per test.

A missing chromium FAILS the test, as a missing nginx does (tests/test_deploy.py): CI
runs as root on a fresh Debian machine where scripts/setup.sh installs chromium and
chromium-driver, so a browser test that skipped there would hide a broken console. A
developer without root who cannot install them sets SKIP_BROWSER_TESTS=1 to skip them,
and the skip says why. Loaded by tests/conftest.py (``pytest_plugins``).
"""

from __future__ import annotations

import os

import pytest

from gateway.testing.browser import find_chromium, start_chrome

WITHOUT_BROWSER = "SKIP_BROWSER_TESTS"  # not GATEWAY_*: that prefix is the config's


@pytest.fixture
def browser(tmp_path):
    """A headless Chrome WebDriver (window 1280x900), quit after the test; chromedriver's
    log is in the test's ``tmp_path``."""
    chromium = find_chromium()
    if chromium is None:
        if os.environ.get(WITHOUT_BROWSER) == "1":
            pytest.skip(f"chromium is not installed and {WITHOUT_BROWSER}=1")
        pytest.fail(
            "chromium or chromedriver is not installed: scripts/setup.sh installs them with apt-get when run "
            f"as root (apt-get install chromium chromium-driver); or set {WITHOUT_BROWSER}=1 to skip the "
            "browser tests",
            pytrace=False,
        )
    driver = start_chrome(chromium, log_path=tmp_path / "chromedriver.log")
    try:
        yield driver
    finally:
        driver.quit()
