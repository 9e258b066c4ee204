"""Headless Debian Chromium through its ChromeDriver, against `meetinghooks run` on loopback."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service

from tests.browser.deployment import Deployment, Flow, free_port, run_flow

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
REQUIRE_SERVICES = os.environ.get("MEETINGHOOKS_REQUIRE_SERVICES") == "1"
# The deployment is always embedded (SQLite): `make test`'s first pass runs these tests, and its
# PostgreSQL pass would only run them a second time.
POSTGRES_PASS = "postgresql" in os.environ.get("TEST_DATABASE_URL", "")
# `make screenshots` sets it: where the flow saves its PNGs.
SCREENSHOTS = os.environ.get("MEETINGHOOKS_SCREENSHOTS")
# Nothing a fresh profile would fetch: updates, sync, QUIC, background requests.
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1280,900",
)

pytestmark = pytest.mark.browser


@pytest.fixture(scope="session")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    if POSTGRES_PASS:
        pytest.skip("the browser tests run embedded, in the SQLite pass of make test")
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        message = "Debian's chromium and chromium-driver are not installed"
        if REQUIRE_SERVICES:
            pytest.fail(message)
        pytest.skip(message)
    running = Deployment(home=tmp_path_factory.mktemp("console"), port=free_port())
    running.start()
    yield running
    running.stop()


@pytest.fixture(scope="session")
def flow(deployment: Deployment) -> Iterator[Flow]:
    made = run_flow(deployment)
    yield made
    made.hooks.stop()
    made.failing.stop()


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[webdriver.Chrome]:
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path / 'profile'}")
    # The path given: selenium-manager never runs, so nothing is downloaded.
    driver = webdriver.Chrome(options=options, service=Service(executable_path=str(CHROMEDRIVER)))
    driver.implicitly_wait(0)
    yield driver
    driver.quit()
    shutil.rmtree(tmp_path / "profile", ignore_errors=True)
