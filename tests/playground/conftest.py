"""A real headless Chromium (Debian's ``chromium``, driven through its ``chromedriver`` by selenium).

Why selenium rather than playwright-python: Debian ships ``chromium`` and ``chromium-driver`` as one
version, so the driver always matches the browser, and selenium speaks the W3C WebDriver protocol that
chromedriver implements; playwright pins its own browser builds (whose download fails here) and supports
a system Chromium only loosely, through the DevTools protocol of whatever version Debian ships.

One browser per test module; each test gets a fresh page, and a failing test leaves a screenshot, the
page's HTML and the browser console under its ``tmp_path``.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--no-proxy-server", "--disable-dev-shm-usage", "--window-size=1280,1000",
)  # fmt: skip


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    # Keep each phase's report on the item, so a fixture's teardown knows whether the test failed.
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    setattr(item, f"report_{report.when}", report)


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[webdriver.Chrome]:
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        pytest.fail("chromium and chromedriver are needed (Debian packages chromium, chromium-driver: scripts/setup)")
    work = tmp_path_factory.mktemp("chromium")
    options = Options()
    options.binary_location = CHROMIUM
    for flag in (*FLAGS, f"--user-data-dir={work / 'profile'}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(executable_path=CHROMEDRIVER, log_output=str(work / "chromedriver.log"))
    driver = webdriver.Chrome(options=options, service=service)
    driver.set_page_load_timeout(60)
    driver.set_script_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()  # stops chromedriver and every chromium process it started


def keep_evidence(driver: webdriver.Chrome, folder: Path) -> None:
    """Screenshot, HTML and console of the page as it is now, into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(folder / "failure.png"))
    (folder / "page.html").write_text(driver.page_source)
    (folder / "console.json").write_text(json.dumps(driver.get_log("browser"), indent=1))


@pytest.fixture
def page(browser: webdriver.Chrome, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[webdriver.Chrome]:
    """The browser, for one test; on failure its state is kept under the test's ``tmp_path``."""
    browser.get_log("browser")  # start each test with an empty console
    yield browser
    report = getattr(request.node, "report_call", None)
    if report is not None and report.failed:
        keep_evidence(browser, tmp_path)
        print(f"playground test failed: screenshot, HTML and console in {tmp_path}")
    # The key a test kept for its tab must not reach the next test's page.
    if browser.current_url.startswith("http"):
        browser.execute_script("sessionStorage.clear()")
