"""The console in headless Chromium: the scripted flow a person follows, and two refusals."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
import requests
from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.select import Select
from selenium.webdriver.support.wait import WebDriverWait

from tests.browser.conftest import SCREENSHOTS
from tests.browser.deployment import Deployment, Flow, Person, deliveries, wait_until
from tests.callback_receiver import Answer

pytestmark = pytest.mark.browser
WAIT = 20


def sign_in(browser: webdriver.Chrome, deployment: Deployment, person: Person) -> None:
    browser.get(f"{deployment.url}/console")
    WebDriverWait(browser, WAIT).until(expected_conditions.title_contains("Sign in"))
    browser.find_element(By.ID, "token").send_keys(person.token)
    browser.find_element(By.ID, "sign-in").click()
    WebDriverWait(browser, WAIT).until(expected_conditions.title_contains("Meetings"))


def heading(browser: webdriver.Chrome) -> str:
    return browser.find_element(By.TAG_NAME, "h1").text


def screenshot(browser: webdriver.Chrome, name: str) -> None:
    """Save the whole page as docs/screenshots/<name>.png when `make screenshots` asks."""
    if not SCREENSHOTS:
        return
    size = browser.execute_cdp_cmd("Page.getLayoutMetrics", {})["cssContentSize"]
    clip = {"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1}
    shot = browser.execute_cdp_cmd(
        "Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True, "clip": clip}
    )
    Path(SCREENSHOTS).mkdir(parents=True, exist_ok=True)
    (Path(SCREENSHOTS) / f"{name}.png").write_bytes(base64.b64decode(shot["data"]))


def test_a_person_signs_in_follows_a_meeting_redelivers_alerts_reads_a_chart_and_signs_out(
    browser: webdriver.Chrome, deployment: Deployment, flow: Flow
) -> None:
    # 1. Sign in with the access token `users create` printed.
    sign_in(browser, deployment, flow.alice)
    assert flow.alice.email in browser.find_element(By.CLASS_NAME, "who").text

    # 2. Find the meeting the flow made, among the person's meetings (and no one else's).
    rows = browser.find_elements(By.CSS_SELECTOR, "#meetings tbody tr")
    names = {row.find_elements(By.TAG_NAME, "td")[1].text: row for row in rows}
    assert set(names) == {"Weekly sync", "Incident review", "Standup"}
    review = names["Incident review"]
    assert review.find_elements(By.TAG_NAME, "td")[2].text == "ended"

    # 3. Open its timeline: start then end, by event time, each with its failed callback.
    review.find_element(By.TAG_NAME, "a").click()
    WebDriverWait(browser, WAIT).until(expected_conditions.title_contains("Meeting"))
    events = browser.find_elements(By.CSS_SELECTOR, "#timeline > li.event")
    assert [e.find_element(By.CLASS_NAME, "event-type").text for e in events] == [
        "meeting.start",
        "meeting.end",
    ]
    assert "source presenter" in events[0].text
    assert "source api" in events[1].text
    failed = browser.find_elements(By.CSS_SELECTOR, "section.delivery-failed")
    assert len(failed) == 2
    attempts = failed[0].find_elements(By.CSS_SELECTOR, "table.attempts tbody tr")
    assert len(attempts) == 3
    assert "503" in attempts[0].text
    assert "maintenance window" in attempts[0].text

    # 4. Redeliver the start callback: a new attempt arrives at the (now mended) receiver.
    flow.failing.default = Answer(status=204)
    before = len(flow.failing.received)
    delivery_id = failed[0].get_attribute("data-delivery")
    failed[0].find_element(By.CLASS_NAME, "redeliver").click()
    WebDriverWait(browser, WAIT).until(
        expected_conditions.text_to_be_present_in_element(
            (By.CSS_SELECTOR, ".flash"), "is being sent again"
        )
    )
    arrived = flow.failing.wait_for(before + 1)[before]
    assert arrived.headers["webhook-id"] == next(
        d["webhookId"] for d in deliveries(deployment, flow.alice) if str(d["id"]) == delivery_id
    )

    def succeeded_on_the_page() -> bool:
        browser.refresh()
        shown = browser.find_element(By.CSS_SELECTOR, f'section[data-delivery="{delivery_id}"]')
        return "delivery-succeeded" in (shown.get_attribute("class") or "")

    wait_until(succeeded_on_the_page, WAIT, "the redelivered callback to show as succeeded")
    shown = browser.find_element(By.CSS_SELECTOR, f'section[data-delivery="{delivery_id}"]')
    last = shown.find_elements(By.CSS_SELECTOR, "table.attempts tbody tr")[-1]
    assert len(shown.find_elements(By.CSS_SELECTOR, "table.attempts tbody tr")) == 4
    assert "204" in last.text
    screenshot(browser, "timeline")  # three failures, the redelivery that arrived, one failed

    # 5. Create an alert rule.
    browser.find_element(By.LINK_TEXT, "Alerts").click()
    Select(browser.find_element(By.ID, "type")).select_by_value("meeting.short")
    browser.find_element(By.ID, "seconds").send_keys("300")
    browser.find_element(By.ID, "callback_url").send_keys(flow.hooks.url("/alerts"))
    browser.find_element(By.ID, "create-rule").click()
    WebDriverWait(browser, WAIT).until(
        expected_conditions.presence_of_element_located((By.CSS_SELECTOR, "#rules tbody tr"))
    )
    (rule,) = browser.find_elements(By.CSS_SELECTOR, "#rules tbody tr")
    assert "meeting.short" in rule.text
    assert "seconds = 300" in rule.text
    rules = requests.get(
        f"{deployment.url}/v1/alerts/rules", headers=flow.alice.headers, timeout=10
    ).json()["rules"]
    assert [(r["type"], r["params"]) for r in rules] == [("meeting.short", {"seconds": 300})]

    # 6. Read a chart's data: meetings started per hour add up to the summary's figure.
    browser.find_element(By.LINK_TEXT, "Analytics").click()
    WebDriverWait(browser, WAIT).until(expected_conditions.title_contains("Analytics"))
    bars = browser.find_elements(By.CSS_SELECTOR, '#chart-meetings rect[data-series="started"]')
    started = [int(bar.get_attribute("data-value") or 0) for bar in bars]
    assert sum(started) == 3
    assert browser.find_element(By.CSS_SELECTOR, '[data-figure="started"]').text == "3"
    ended = browser.find_elements(By.CSS_SELECTOR, '#chart-meetings rect[data-series="ended"]')
    assert sum(int(bar.get_attribute("data-value") or 0) for bar in ended) == 2
    screenshot(browser, "analytics")

    # 7. Sign out: the console asks for a token again.
    browser.find_element(By.ID, "sign-out").click()
    WebDriverWait(browser, WAIT).until(expected_conditions.title_contains("Sign in"))
    assert "You are signed out." in browser.page_source
    browser.get(f"{deployment.url}/console/meetings")
    WebDriverWait(browser, WAIT).until(expected_conditions.title_contains("Sign in"))


def test_another_persons_meeting_is_a_404_page(
    browser: webdriver.Chrome, deployment: Deployment, flow: Flow
) -> None:
    sign_in(browser, deployment, flow.alice)
    bobs = flow.meetings["Bob's private meeting"]
    url = f"{deployment.url}/console/meetings/{bobs}"
    browser.get(url)
    assert heading(browser) == "Not found"
    assert "Bob's private meeting" not in browser.page_source
    cookie = browser.get_cookie("meetinghooks_console")
    assert cookie is not None
    assert cookie["httpOnly"] is True
    assert cookie["sameSite"] == "Lax"
    # The same request outside the browser, to see the status a person's browser got.
    status = requests.get(
        url, cookies={cookie["name"]: cookie["value"]}, allow_redirects=False, timeout=10
    ).status_code
    assert status == 404


def test_a_form_posted_without_its_csrf_token_is_refused(
    browser: webdriver.Chrome, deployment: Deployment, flow: Flow
) -> None:
    sign_in(browser, deployment, flow.alice)
    browser.get(f"{deployment.url}/console/alerts")
    # What a forged form from another site would lack: the token this session's page carries.
    browser.execute_script("document.querySelector('#new-rule input[name=csrf_token]').remove()")
    browser.find_element(By.ID, "callback_url").send_keys(flow.hooks.url("/forged"))
    browser.find_element(By.ID, "create-rule").click()
    WebDriverWait(browser, WAIT).until(expected_conditions.title_contains("Form refused"))
    assert "CSRF token" in browser.page_source
    rules = requests.get(
        f"{deployment.url}/v1/alerts/rules", headers=flow.alice.headers, timeout=10
    ).json()["rules"]
    assert all(r["callbackUrl"] != flow.hooks.url("/forged") for r in rules)
