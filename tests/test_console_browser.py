"""The operator console in a real browser: Debian's headless chromium (driven by
selenium, tests/browser_fixtures.py) against real gunicorn, Redis and RQ workers, with
callbacks to a real receiver on loopback that answers 500.

``CONSOLE_SCREENSHOTS=docs/images`` also saves the README's screenshots there (else only
in the test's temporary folder)."""

from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path

import pytest
import redis
import requests
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from gateway.testing.browser import screenshot
from gateway.testing.receiver import Receiver
from tests.conftest import Stack

TOKEN_A = "browser-token-alpha-0123456789"
TOKEN_B = "browser-token-beta-9876543210"
OPERATOR = "browser-operator-token-abcdef012345"
WAIT_SECONDS = 20
CONSOLE_DB = 11  # apart from the other stacks' databases: their workers must not take our jobs
SCREENSHOTS = os.environ.get("CONSOLE_SCREENSHOTS")


@pytest.fixture(scope="module")
def console_stack(redis_server, tmp_path_factory):
    """gunicorn and two workers with two tenants and an operator token, on a database of
    their own (flushed first)."""
    env = {
        "GATEWAY_API_TOKENS": json.dumps({TOKEN_A: "alpha", TOKEN_B: "beta"}),
        "GATEWAY_CONSOLE_TOKENS": OPERATOR,
    }
    with redis.Redis.from_url(redis_server.url_for(CONSOLE_DB)) as client:
        client.flushdb()
    running = Stack(redis_server, tmp_path_factory.mktemp("console-stack"), db=CONSOLE_DB, env=env)
    running.wait_ready(timeout=30, workers=4)  # each flask worker registers two RQ workers
    yield running
    running.stop()


@pytest.fixture(scope="module")
def failing_receiver():
    """A receiver that answers every callback with 500."""
    server = Receiver()
    server.responses = [500] * 1000
    yield server
    server.stop()


def api(stack, token, method, path, **kwargs):
    return requests.request(
        method, stack.base + path, headers={"Authorization": f"Bearer {token}"}, timeout=10, **kwargs
    )


def create(stack, token, task_id, task_name, input_data, callback=None):
    body = {"task_id": task_id, "task_name": task_name, "input_data": input_data}
    if callback:
        body["callback"] = callback
    response = api(stack, token, "POST", "/v1/tasks", json=body)
    assert response.status_code in (200, 202), response.text
    return response.json()


def sign_in(browser, stack, token):
    browser.delete_all_cookies()
    browser.get(stack.base + "/console/login")
    browser.find_element(By.ID, "token").send_keys(token)
    browser.find_element(By.CSS_SELECTOR, "form button[type=submit]").click()
    WebDriverWait(browser, WAIT_SECONDS).until(lambda b: "/console/login" not in b.current_url)


def wait_for(browser, condition, message: str):
    return WebDriverWait(browser, WAIT_SECONDS, ignored_exceptions=(Exception,)).until(condition, message)


def tries_of(browser, delivery_id: str) -> list[str]:
    rows = browser.find_elements(By.CSS_SELECTOR, f"#delivery-{delivery_id} tr.try")
    return [row.text for row in rows]


def save(browser, name: str, tmp_path: Path) -> Path:
    path = screenshot(browser, tmp_path / name)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    if SCREENSHOTS:
        Path(SCREENSHOTS).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(SCREENSHOTS) / name)
    return path


def stage_ended(stack, token, task_id, task_name, tries: int | None = None):
    def ended(_browser) -> bool:
        document = api(stack, token, "GET", f"/v1/tasks/{task_id}/status").json()
        stage = document["stages"].get(task_name)
        if stage is None or stage["status"] not in ("SUCCESS", "FAILED"):
            return False
        return tries is None or all(c["status"] == "failed" and len(c["tries"]) >= tries for c in stage["callbacks"])

    return ended


def test_the_task_page_shows_the_timeline_and_tries_and_resend_adds_a_try(
    browser, console_stack, failing_receiver, tmp_path
):
    stack = console_stack
    task_id = f"order-{uuid.uuid4().hex[:8]}"
    create(stack, TOKEN_A, task_id, "demo.echo", {"order": 42, "items": ["tea", "milk"]},
           callback=failing_receiver.url("/orders"))  # fmt: skip
    create(stack, TOKEN_A, task_id, "demo.fail", {"message": "the printer is on fire"})
    wait_for(browser, stage_ended(stack, TOKEN_A, task_id, "demo.echo"), "demo.echo did not end")
    # A reuse of the completed stage that asks for a callback too: its record keeps the verdict.
    reused = create(stack, TOKEN_A, task_id, "demo.echo", {"order": 42, "items": ["tea", "milk"]},
                    callback=failing_receiver.url("/orders"))  # fmt: skip
    assert reused["reuse_info"]["state"] == "completed"
    # 1 try + 3 retries a second apart (tests/conftest.py STACK_ENV), all answered 500.
    wait_for(browser, stage_ended(stack, TOKEN_A, task_id, "demo.echo", tries=4), "the deliveries did not fail 4 times")
    wait_for(browser, stage_ended(stack, TOKEN_A, task_id, "demo.fail"), "demo.fail did not end")

    sign_in(browser, stack, TOKEN_A)
    browser.get(f"{stack.base}/console/tasks/{task_id}")
    assert browser.find_element(By.ID, "task-id").text == task_id
    rows = browser.find_elements(By.CSS_SELECTOR, "svg#timeline g.stage-row")
    assert sorted(row.get_attribute("data-stage") for row in rows) == ["demo.echo", "demo.fail"]
    for row in rows:  # each stage's attempt: its time in the queue and its run, drawn
        assert row.find_elements(By.CSS_SELECTOR, "rect.bar.running")
        assert row.find_elements(By.CSS_SELECTOR, "rect.mark.ended")
    assert "the printer is on fire" in browser.find_element(By.ID, "stage-demo.fail").text

    reuses = browser.find_element(By.CSS_SELECTOR, "#stage-demo\\.echo table.reuses").text
    assert "completed" in reuses and "True" in reuses  # verdict and input_matches
    first, second = browser.find_elements(By.CSS_SELECTOR, "#stage-demo\\.echo .delivery")
    assert "asked by a reuse" in second.text
    delivery = first
    delivery_id = delivery.get_attribute("id").removeprefix("delivery-")
    tries = tries_of(browser, delivery_id)
    assert len(tries) == 4
    assert all(" 500 " in f" {t} " for t in tries), tries
    save(browser, "console-task.png", tmp_path)

    delivery.find_element(By.CSS_SELECTOR, "button.resend").click()
    wait_for(browser, lambda b: "?done=resent" in b.current_url, "resend did not come back to the page")
    assert "queued again" in browser.find_element(By.ID, "done").text
    # The page refreshes itself while the delivery is queued: the fifth try appears.
    wait_for(browser, lambda b: len(tries_of(b, delivery_id)) >= 5, "no new try appeared")
    assert " 500 " in f" {tries_of(browser, delivery_id)[4]} "
    assert len(failing_receiver.requests) >= 5


def test_a_running_stage_page_updates_itself_until_the_stage_ends(browser, console_stack):
    stack = console_stack
    task_id = f"sleep-{uuid.uuid4().hex[:8]}"
    sign_in(browser, stack, TOKEN_A)
    create(stack, TOKEN_A, task_id, "demo.sleep", {"seconds": 4})
    browser.get(f"{stack.base}/console/tasks/{task_id}")
    assert browser.find_element(By.TAG_NAME, "body").get_attribute("data-live") == "1"
    url = browser.current_url
    wait_for(browser, lambda b: b.find_element(By.ID, "task-status").text == "completed", "the page did not update")
    assert browser.current_url == url  # updated in place, not reloaded by hand
    assert browser.find_element(By.TAG_NAME, "body").get_attribute("data-live") == "0"
    assert "slept 4 s" in browser.find_element(By.ID, "stage-demo.sleep").text


def test_a_tenant_cannot_open_another_tenants_task(browser, console_stack):
    stack = console_stack
    task_id = f"private-{uuid.uuid4().hex[:8]}"
    create(stack, TOKEN_A, task_id, "demo.echo", {"secret": "alpha's"})

    sign_in(browser, stack, TOKEN_B)
    for path in (f"/console/tasks/{task_id}", f"/console/tasks/{task_id}?tenant=alpha"):
        browser.get(stack.base + path)
        assert "No such page, or no such task for your token." in browser.find_element(By.TAG_NAME, "h1").text
        assert "alpha's" not in browser.page_source
    # The same id is another task for beta (the API's namespaces): none here.
    response = api(stack, TOKEN_B, "GET", f"/v1/tasks/{task_id}/status")
    assert response.status_code == 404

    sign_in(browser, stack, OPERATOR)
    browser.get(f"{stack.base}/console/tasks/{task_id}?tenant=alpha")
    assert "alpha's" in browser.find_element(By.ID, "stage-demo.echo").text


def test_the_overview_lists_queues_workers_and_finds_a_task(browser, console_stack, failing_receiver, tmp_path):
    stack = console_stack
    task_id = f"find-me-{uuid.uuid4().hex[:6]}"
    create(stack, TOKEN_B, task_id, "demo.fail", {"message": "bad input"}, callback=failing_receiver.url("/b"))
    wait_for(browser, stage_ended(stack, TOKEN_B, task_id, "demo.fail"), "demo.fail did not end")

    sign_in(browser, stack, OPERATOR)
    browser.get(stack.base + "/console")
    queues = {
        row.get_attribute("data-queue") for row in browser.find_elements(By.CSS_SELECTOR, "#queues tr[data-queue]")
    }
    assert {"demo", "callbacks"} <= queues
    assert len(browser.find_elements(By.CSS_SELECTOR, "#workers tbody tr")) >= 2
    save(browser, "console-overview.png", tmp_path)

    browser.find_element(By.ID, "find-task-id").send_keys(task_id)
    browser.find_element(By.ID, "find-tenant").send_keys("beta")
    browser.find_element(By.CSS_SELECTOR, "form.find button").click()
    wait_for(browser, lambda b: b.find_elements(By.ID, "task-id"), "the task page did not open")
    assert browser.find_element(By.ID, "task-id").text == task_id
