"""The operator console through Flask's test client, on the real app, Redis and RQ: who
may sign in and see what, the CSRF token on every form, the headers of every page, and
the task page's contents and actions. The browser tests are in tests/test_console_browser.py."""

from __future__ import annotations

import logging
import re

import pytest

from gateway.console import session as console_session
from gateway.testing.waiting import wait_until
from tests.test_tenancy import TOKEN_A, TOKEN_B, call

OPERATOR = "operator-token-0123456789abcdef"
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


@pytest.fixture
def tenant_app(make_app):
    return make_app(API_TOKENS={TOKEN_A: "alpha", TOKEN_B: "beta"}, CONSOLE_TOKENS=[OPERATOR])


def csrf_of(response) -> str:
    match = CSRF.search(response.get_data(as_text=True))
    assert match, response.get_data(as_text=True)[:500]
    return match.group(1)


def sign_in(client, token):
    form = client.get("/console/login")
    return client.post("/console/login", data={"token": token, "csrf_token": csrf_of(form), "next": ""})


def create(client, token, task_id, task_name="demo.echo", input_data=None, callback=None):
    body = {"task_name": task_name, "task_id": task_id, "input_data": input_data or {}}
    if callback:
        body["callback"] = callback
    response = call(client, "POST", "/v1/tasks", token, json=body)
    assert response.status_code in (200, 202), response.json
    return response


def page(client, path):
    response = client.get(path)
    return response, response.get_data(as_text=True)


# -- who ---------------------------------------------------------------------------


def test_without_tokens_the_console_is_open_like_the_api(client):
    response, html = page(client, "/console")
    assert response.status_code == 200
    assert "open console" in html
    assert client.get("/console/login").status_code == 303  # nobody signs in


def test_a_page_without_a_session_redirects_to_the_sign_in(tenant_app):
    client = tenant_app.test_client()
    for path in ("/console", "/console/tasks/t-1", "/console/tasks/t-1/delete"):
        response = client.get(path)
        assert response.status_code == 303
        assert response.headers["Location"].startswith("/console/login?next=")
    assert client.get("/console/login").status_code == 200


def test_a_tenant_token_signs_in_with_a_strict_httponly_cookie_that_holds_no_token(tenant_app):
    client = tenant_app.test_client()
    response = sign_in(client, TOKEN_A)
    assert response.status_code == 303
    assert response.headers["Location"] == "/console"
    cookie = response.headers["Set-Cookie"]
    assert cookie.startswith(f"{console_session.COOKIE}=")
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/console" in cookie
    assert "Secure" not in cookie  # plain http: a Secure cookie would never come back
    assert TOKEN_A not in cookie
    response, html = page(client, "/console")
    assert response.status_code == 200
    assert "tenant alpha" in html


def test_the_cookie_is_secure_over_https(tenant_app):
    client = tenant_app.test_client()
    form = client.get("/console/login", base_url="https://localhost")
    response = client.post(
        "/console/login", data={"token": TOKEN_A, "csrf_token": csrf_of(form)}, base_url="https://localhost"
    )
    assert response.status_code == 303
    assert "Secure" in response.headers["Set-Cookie"]


def test_a_wrong_token_is_refused_and_never_logged_or_put_in_a_url(tenant_app, caplog):
    client = tenant_app.test_client()
    wrong = "not-a-token-of-anyone-123456"
    with caplog.at_level(logging.DEBUG):
        refused = sign_in(client, wrong)
        accepted = sign_in(client, TOKEN_B)
    assert refused.status_code == 401
    assert "not valid" in refused.get_data(as_text=True)
    assert wrong not in refused.get_data(as_text=True)
    assert TOKEN_B not in accepted.headers["Location"]
    logged = caplog.text
    assert wrong not in logged and TOKEN_B not in logged


def test_a_sign_in_goes_back_to_the_page_asked_for_but_never_to_another_site(tenant_app):
    client = tenant_app.test_client()
    form = client.get("/console/login?next=/console/tasks/t-1")
    assert 'value="/console/tasks/t-1"' in form.get_data(as_text=True)
    for target, landing in (("/console/tasks/t-1", "/console/tasks/t-1"), ("//evil.example/x", "/console"),
                            ("https://evil.example/", "/console"), ("/console\\@evil", "/console")):  # fmt: skip
        client = tenant_app.test_client()
        form = client.get("/console/login")
        response = client.post("/console/login", data={"token": TOKEN_A, "csrf_token": csrf_of(form), "next": target})
        assert response.headers["Location"] == landing


def test_signing_out_ends_the_session(tenant_app):
    client = tenant_app.test_client()
    sign_in(client, TOKEN_A)
    overview = client.get("/console")
    response = client.post("/console/logout", data={"csrf_token": csrf_of(overview)})
    assert response.status_code == 303
    assert client.get("/console").status_code == 303


def test_a_session_is_good_in_every_process_and_ends_when_its_token_is_removed(make_app):
    """Two apps stand for two gunicorn processes: the cookie key is kept in Redis, so a
    cookie made by one is good in the other; a process whose tokens no longer hold the
    session's token sends it to the sign-in."""
    first = make_app(API_TOKENS={TOKEN_A: "alpha"})
    second = make_app(API_TOKENS={TOKEN_A: "alpha"})
    revoked = make_app(API_TOKENS={TOKEN_B: "beta"})
    client = first.test_client()
    sign_in(client, TOKEN_A)
    cookie = client.get_cookie(console_session.COOKIE, path="/console")
    for app, status in ((second, 200), (revoked, 303)):
        other = app.test_client()
        other.set_cookie(console_session.COOKIE, cookie.value, path="/console")
        assert other.get("/console").status_code == status


def test_a_configured_console_secret_signs_the_cookie(make_app):
    secret = "s" * 40
    first = make_app(API_TOKENS={TOKEN_A: "alpha"}, CONSOLE_SECRET=secret)
    other_key = make_app(API_TOKENS={TOKEN_A: "alpha"}, CONSOLE_SECRET="t" * 40)
    client = first.test_client()
    sign_in(client, TOKEN_A)
    cookie = client.get_cookie(console_session.COOKIE, path="/console")
    stranger = other_key.test_client()
    stranger.set_cookie(console_session.COOKIE, cookie.value, path="/console")
    assert stranger.get("/console").status_code == 303


# -- CSRF and headers ----------------------------------------------------------------


def test_every_form_post_needs_the_sessions_csrf_token(tenant_app, task_id):
    client = tenant_app.test_client()
    create(client, TOKEN_A, task_id)
    sign_in(client, TOKEN_A)
    posts = [
        f"/console/tasks/{task_id}/delete",
        f"/console/tasks/{task_id}/cancel",
        f"/console/tasks/{task_id}/retry",
        f"/console/tasks/{task_id}/deliveries/abc/resend",
        "/console/logout",
    ]
    for path in posts:
        for data in ({}, {"csrf_token": "forged"}):
            response = client.post(path, data={**data, "force": "1"})
            assert response.status_code == 400, path
            assert "expired" in response.get_data(as_text=True)
    assert call(client, "GET", f"/v1/tasks/{task_id}/status", TOKEN_A).status_code == 200  # not deleted
    assert client.get("/console").status_code == 200  # still signed in
    # The sign-in form too: a login from another site cannot sign the browser in.
    assert tenant_app.test_client().post("/console/login", data={"token": TOKEN_A}).status_code == 400


def test_every_console_response_sends_a_strict_content_security_policy(client, task_id):
    create(client, None, task_id)
    for path in ("/console", f"/console/tasks/{task_id}", "/console/tasks/unknown", "/console/static/console.css",
                 "/console/static/live.js", f"/console/tasks/{task_id}/delete"):  # fmt: skip
        response = client.get(path)
        policy = response.headers["Content-Security-Policy"]
        assert "default-src 'self'" in policy and "frame-ancestors 'none'" in policy, path
        assert "unsafe-inline" not in policy and "unsafe-eval" not in policy
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert response.headers["Referrer-Policy"] == "no-referrer"
    html = client.get(f"/console/tasks/{task_id}").get_data(as_text=True)
    assert "<style" not in html and " style=" not in html  # nothing the policy would block
    assert re.search(r"<script(?![^>]*\bsrc=)", html) is None


def test_the_api_carries_no_console_work(client, app):
    """No app-wide hook of the console: an API request (a reuse hit above all) runs
    nothing of it and gets no cookie."""
    app_wide = [*app.before_request_funcs.get(None, []), *app.after_request_funcs.get(None, [])]
    assert not [hook for hook in app_wide if hook.__module__.startswith("gateway.console")]
    response = client.get("/v1/tasks/health")
    assert "Set-Cookie" not in response.headers
    assert "Content-Security-Policy" not in response.headers


# -- tenants ---------------------------------------------------------------------------


def test_a_tenant_sees_only_its_own_tasks_and_an_operator_sees_every_tenant(tenant_app):
    client = tenant_app.test_client()
    create(client, TOKEN_A, "shared", input_data={"owner": "alpha-input"})
    create(client, TOKEN_B, "shared", input_data={"owner": "beta-input"})
    create(client, TOKEN_B, "only-b")

    sign_in(client, TOKEN_A)
    response, html = page(client, "/console/tasks/shared")
    assert response.status_code == 200
    assert "alpha-input" in html and "beta-input" not in html
    assert client.get("/console/tasks/only-b").status_code == 404
    assert client.get("/console/tasks/only-b?tenant=beta").status_code == 404
    assert client.get("/console/tasks/shared?tenant=beta").status_code == 404
    form = client.get("/console/tasks/shared")
    delete = client.post("/console/tasks/only-b/delete?tenant=beta", data={"csrf_token": csrf_of(form), "force": "1"})
    assert delete.status_code == 404
    assert call(client, "GET", "/v1/tasks/only-b/status", TOKEN_B).status_code == 200

    operator = tenant_app.test_client()
    sign_in(operator, OPERATOR)
    response, html = page(operator, "/console/tasks/shared?tenant=beta")
    assert response.status_code == 200
    assert "beta-input" in html and "tenant beta" in html
    assert operator.get("/console/tasks/only-b?tenant=beta").status_code == 200
    found = operator.get("/console/find?task_id=only-b&tenant=beta")
    assert found.headers["Location"] == "/console/tasks/only-b?tenant=beta"


# -- the task page ------------------------------------------------------------------------


def test_the_task_page_shows_each_stage_its_attempts_reuses_and_callback_tries(client, work, task_id, receiver):
    receiver.plan("/hook?token=s3cret", [500, 500, 500, 500])
    receiver.plan("/hook", [500, 500, 500, 500])
    create(client, None, task_id, "demo.echo", {"n": 1}, callback=receiver.url("/hook?token=s3cret"))
    create(client, None, task_id, "demo.fail", {"message": "boom"})
    work()
    create(client, None, task_id, "demo.echo", {"n": 1}, callback=receiver.url("/hook"))  # a reuse hit
    work()
    receiver.wait_for(8)

    response, html = page(client, f"/console/tasks/{task_id}")
    assert response.status_code == 200
    assert html.count('class="stage-row"') == 2  # one timeline row per stage
    assert 'data-stage="demo.echo"' in html and 'data-stage="demo.fail"' in html
    assert "RuntimeError: boom" in html
    assert html.count('class="try"') == 8  # 1 try + 3 retries, for each of the two deliveries
    assert ">500<" in html
    assert "s3cret" not in html  # a query value of a callback URL may be a secret
    reuses = html.split('class="reuses"')[1].split("</table>")[0]
    assert "<td>completed</td>" in reuses and "<td>True</td>" in reuses
    echo_row = html.split('data-stage="demo.echo"')[1].split("</g>")[0]
    assert echo_row.count('class="mark reuse"') == 1  # the reuse, on the stage's row of the timeline
    assert 'data-live="0"' in html


def test_resend_from_the_page_queues_a_new_try(client, work, task_id, receiver):
    receiver.plan("/hook", [500, 500, 500, 500, 200])
    create(client, None, task_id, callback=receiver.url("/hook"))
    work()
    receiver.wait_for(4)
    response, html = page(client, f"/console/tasks/{task_id}")
    (delivery_id,) = re.findall(r'id="delivery-([0-9a-f]+)" data-status="failed"', html)
    resent = client.post(
        f"/console/tasks/{task_id}/deliveries/{delivery_id}/resend", data={"csrf_token": csrf_of(response)}
    )
    assert resent.status_code == 303
    assert resent.headers["Location"] == f"/console/tasks/{task_id}?done=resent"
    work()
    receiver.wait_for(5)
    html = client.get(resent.headers["Location"]).get_data(as_text=True)
    assert "The delivery was queued again." in html
    assert f'id="delivery-{delivery_id}" data-status="sent" data-tries="5"' in html


def test_retry_cancel_and_delete_from_the_page(client, work, task_id):
    create(client, None, task_id, "demo.fail")
    work()
    response, html = page(client, f"/console/tasks/{task_id}")
    token = csrf_of(response)
    retried = client.post(f"/console/tasks/{task_id}/retry", data={"csrf_token": token, "task_name": "demo.fail"})
    assert retried.status_code == 303
    html = client.get(f"/console/tasks/{task_id}").get_data(as_text=True)
    assert 'data-live="1"' in html  # PENDING again: the page refreshes itself
    assert f"/console/tasks/{task_id}/cancel?task_name=demo.fail" in html

    confirm = client.get(f"/console/tasks/{task_id}/cancel?task_name=demo.fail")
    assert confirm.status_code == 200 and "Cancel the run" in confirm.get_data(as_text=True)
    cancelled = client.post(f"/console/tasks/{task_id}/cancel", data={"csrf_token": token, "task_name": "demo.fail"})
    assert cancelled.status_code == 303
    assert client.get(f"/v1/tasks/{task_id}/status").json["stages"]["demo.fail"]["error"] == "cancelled"
    again = client.post(f"/console/tasks/{task_id}/cancel", data={"csrf_token": token})
    assert again.status_code == 409  # nothing live: the page says why
    assert "problem" in again.get_data(as_text=True)

    confirm = client.get(f"/console/tasks/{task_id}/delete")
    assert "Delete task" in confirm.get_data(as_text=True)
    deleted = client.post(f"/console/tasks/{task_id}/delete", data={"csrf_token": token})
    assert deleted.status_code == 303 and deleted.headers["Location"] == "/console?done=deleted"
    assert client.get(f"/v1/tasks/{task_id}/status").status_code == 404
    assert client.get(f"/console/tasks/{task_id}").status_code == 404


def test_a_stage_run_again_keeps_its_earlier_attempts_for_the_timeline(client, work, task_id):
    create(client, None, task_id, "demo.fail")
    work()
    client.post(f"/v1/tasks/{task_id}/retry")
    work()
    html = client.get(f"/console/tasks/{task_id}").get_data(as_text=True)
    attempts = html.split('class="attempts"')[1].split("</table>")[0]
    assert attempts.count("status-FAILED") == 2
    row = html.split('data-stage="demo.fail"')[1].split("</g>")[0]
    assert row.count('class="bar running') == 2  # each attempt's run drawn to scale
    # The API's document is unchanged by what the console keeps.
    assert "runs" not in client.get(f"/v1/tasks/{task_id}/status").json["stages"]["demo.fail"]


def test_a_running_stage_shows_its_progress_and_the_page_stays_live_until_it_ends(client, app, task_id):
    from gateway.worker import build_worker

    create(client, None, task_id, "demo.sleep", {"seconds": 1})
    html = client.get(f"/console/tasks/{task_id}").get_data(as_text=True)
    assert 'data-live="1"' in html and "live.js" in html
    with app.app_context():
        build_worker().work(burst=True, logging_level="WARNING")
    wait_until(lambda: 'data-live="0"' in client.get(f"/console/tasks/{task_id}").get_data(as_text=True), 10)
    html = client.get(f"/console/tasks/{task_id}").get_data(as_text=True)
    assert '<progress max="100" value="100">' in html and "slept 1 s" in html


def test_the_overview_shows_queues_and_workers_and_finds_a_task(client, task_id):
    create(client, None, task_id)
    response, html = page(client, "/console")
    assert response.status_code == 200
    assert 'data-queue="demo"' in html and 'data-queue="callbacks"' in html
    found = client.get(f"/console/find?task_id={task_id}")
    assert found.headers["Location"] == f"/console/tasks/{task_id}"
    assert client.get("/console/find?task_id=../x").status_code == 404


def test_the_overview_charts_the_last_hour_and_links_each_recent_failure_to_its_task(tenant_app, receiver):
    from gateway.worker import build_worker

    receiver.plan("/hook", [500, 500, 500, 500])
    client = tenant_app.test_client()
    create(client, TOKEN_A, "fails-a", "demo.fail", {"message": "alpha broke"}, callback=receiver.url("/hook"))
    create(client, TOKEN_B, "fails-b", "demo.fail", {"message": "beta broke"})
    with tenant_app.app_context():
        build_worker().work(burst=True, logging_level="WARNING")
    receiver.wait_for(4)

    sign_in(client, TOKEN_A)
    html = client.get("/console").get_data(as_text=True)
    assert html.count('<figure class="chart">') == 5
    assert 'href="/console/tasks/fails-a"' in html and "alpha broke" in html
    assert "fails-b" not in html and "beta broke" not in html  # another tenant's failures
    failed_deliveries = html.split('id="failed-deliveries"')[1].split("</table>")[0]
    assert failed_deliveries.count('href="/console/tasks/fails-a"') == 4  # each failed try, newest first

    operator = tenant_app.test_client()
    sign_in(operator, OPERATOR)
    html = operator.get("/console").get_data(as_text=True)
    assert 'href="/console/tasks/fails-b?tenant=beta"' in html and 'href="/console/tasks/fails-a?tenant=alpha"' in html


def test_operator_tokens_are_checked_like_api_tokens(make_app):
    from gateway.exceptions import ConfigError

    with pytest.raises(ConfigError, match="GATEWAY_CONSOLE_TOKENS: has a token shorter than 16"):
        make_app(CONSOLE_TOKENS="short")
    with pytest.raises(ConfigError, match="GATEWAY_CONSOLE_SECRET: must be at least 32 characters"):
        make_app(CONSOLE_SECRET="short")
    app = make_app(CONSOLE_TOKENS=f"{OPERATOR}, {OPERATOR[::-1]}")
    assert app.config["CONSOLE_TOKENS"] == [OPERATOR, OPERATOR[::-1]]


def test_a_run_replaced_while_live_shows_as_lost_beside_the_new_attempt(make_app, task_id):
    app = make_app(QUEUE_LEASE_SECONDS=0.2)
    client = app.test_client()
    create(client, None, task_id)  # queued, and no worker takes it
    wait_until(lambda: create(client, None, task_id).json["reuse_info"]["state"] == "stale", 5)
    html = client.get(f"/console/tasks/{task_id}").get_data(as_text=True)
    attempts = html.split('class="attempts"')[1].split("</table>")[0]
    assert '<td class="status-LOST">LOST</td>' in attempts and '<td class="status-PENDING">PENDING</td>' in attempts
    assert "(1 lost in a row)" in html


def test_a_long_input_is_cut_with_a_way_to_see_all_of_it(client, task_id):
    create(client, None, task_id, input_data={"text": "x" * 5000})
    html = client.get(f"/console/tasks/{task_id}").get_data(as_text=True)
    block = html.split('<details class="json-more" id="input-demo.echo">')[1].split("</details>")[0]
    assert "show all" in block
    preview, full = block.split("</summary>")
    assert preview.count("x") < 2000 and full.count("x") >= 5000
