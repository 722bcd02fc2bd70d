"""The headless browser harness (tests/browser_fixtures.py, gateway/testing/browser.py)
against a real gunicorn: what the console's browser tests stand on."""

from __future__ import annotations

import json

import pytest
from selenium.webdriver.common.by import By

from gateway.testing.browser import screenshot
from tests import browser_fixtures


def test_browser_opens_a_page_served_by_gunicorn(browser, stack):
    browser.get(stack.base + "/v1/tasks/health")
    # Chrome shows a JSON answer as text in a <pre>.
    body = json.loads(browser.find_element(By.TAG_NAME, "body").text)
    assert body["status"] == "ok", body
    assert browser.current_url == stack.base + "/v1/tasks/health"


def test_screenshot_saves_the_whole_page_as_png(browser, stack, tmp_path):
    browser.get(stack.base + "/openapi.json")  # longer than the window
    window = browser.get_window_size()
    path = screenshot(browser, tmp_path / "shots" / "openapi.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    height = int.from_bytes(path.read_bytes()[20:24], "big")  # the PNG's IHDR height
    assert height > window["height"]
    assert browser.get_window_size() == window


@pytest.fixture
def no_chromium(monkeypatch):
    monkeypatch.setattr(browser_fixtures, "find_chromium", lambda: None)
    monkeypatch.delenv(browser_fixtures.WITHOUT_BROWSER, raising=False)
    return monkeypatch


def test_a_missing_chromium_fails_a_browser_test(no_chromium, request):
    """CI installs chromium (scripts/setup.sh): a browser test that skipped there would hide a
    broken console."""
    with pytest.raises(pytest.fail.Exception, match="scripts/setup.sh installs them"):
        request.getfixturevalue("browser")


def test_a_missing_chromium_skips_when_told_to(no_chromium, request):
    no_chromium.setenv(browser_fixtures.WITHOUT_BROWSER, "1")
    with pytest.raises(pytest.skip.Exception, match="SKIP_BROWSER_TESTS=1"):
        request.getfixturevalue("browser")
