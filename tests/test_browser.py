"""The headless browser harness (tests/browser_fixtures.py, gateway/testing/browser.py)
against a real gunicorn: what the console's browser tests stand on."""

from __future__ import annotations

import json

from selenium.webdriver.common.by import By

from gateway.testing.browser import screenshot


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
