"""The console in a real browser: headless Debian Chromium, driven by
selenium through chromedriver, against a running ``kestrel run`` fed JSON
lines on its stdin.  Screenshots go to tests/artifacts/ (gitignored).

Skipped only when Chromium cannot start here, with the reason."""

from __future__ import annotations

import shutil
import signal
import tempfile
from pathlib import Path

import pytest

from kestrel_core.testing import wait_for
from kestrel_api_server.testing import proc_event, request

ARTIFACTS = Path(__file__).parent / "artifacts"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"


@pytest.fixture
def browser():
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError as exc:
        pytest.skip(f"selenium is not installed ({exc}); scripts/bootstrap installs it")
    for path in (CHROMIUM, CHROMEDRIVER):
        if not Path(path).exists():
            pytest.skip(f"{path} not found: install Debian's chromium and chromium-driver (scripts/bootstrap does, as root)")
    profile = tempfile.mkdtemp(prefix="kestrel-chromium-")
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-dev-shm-usage", f"--user-data-dir={profile}", "--window-size=1500,1000"):
        opts.add_argument(arg)
    try:
        driver = webdriver.Chrome(options=opts, service=Service(executable_path=CHROMEDRIVER))
    except Exception as exc:  # noqa: BLE001 - the one reason to skip: Chromium cannot start here
        shutil.rmtree(profile, ignore_errors=True)
        pytest.skip(f"headless Chromium did not start: {type(exc).__name__}: {str(exc).splitlines()[0]}")
    driver.set_script_timeout(10)
    ARTIFACTS.mkdir(exist_ok=True)
    yield driver
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)


def rows(driver) -> list[tuple[int, str]]:
    got = driver.execute_script(
        "return [...document.querySelectorAll('#alert-rows tr.alert-row')].map(r => [Number(r.dataset.id), r.dataset.severity])")
    return [(i, sev) for i, sev in got]


def conn_state(driver) -> str:
    return driver.execute_script("return document.getElementById('conn').dataset.state || ''")


def shot(driver, name: str) -> None:
    driver.save_screenshot(str(ARTIFACTS / name))


def test_console_live_feed_filter_detail_ack_and_restart(browser, kestrel_run):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    run = kestrel_run(heartbeat_s=30).start()
    run.feed(proc_event("curl", host="web2", container="c-42"))
    run.wait_alerts(1)

    browser.get(run.base + "/")
    wait_for(lambda: conn_state(browser) == "live", 30, "the live feed to connect")
    assert rows(browser) == [(1, "low")]
    browser.execute_script("window.__noReload = 'same page'")

    # 1. an alert appears live, without a reload
    run.feed(proc_event("nc", host="web1"))
    wait_for(lambda: (2, "high") in rows(browser), 20, "alert 2 to appear in the list")
    assert rows(browser)[0] == (2, "high"), "new alerts go on top"
    wait_for(lambda: browser.find_element(By.ID, "ov-total").text == "2", 20, "the overview to count 2 alerts")
    shot(browser, "01-live-alert.png")

    # 2. filter by severity: the list and the live feed keep to it
    Select(browser.find_element(By.ID, "f-severity")).select_by_value("high")
    wait_for(lambda: rows(browser) == [(2, "high")], 10, "the list to show only high alerts")
    run.feed(proc_event("curl", host="web3"), proc_event("ncat", host="web3", container="c-7"))
    wait_for(lambda: rows(browser) == [(4, "high"), (2, "high")], 20, "the new high alert, and not the low one")
    assert browser.execute_script("return window.kestrelConsole.received") == [2, 3, 4]
    shot(browser, "02-filter-high.png")

    # 3. open a detail: evidence timeline and fields
    browser.find_element(By.CSS_SELECTOR, "#alert-rows tr[data-id='4']").click()
    wait_for(lambda: browser.find_element(By.ID, "detail").is_displayed(), 10, "the detail view")
    wait_for(lambda: browser.find_element(By.ID, "detail").get_attribute("data-id") == "4", 10, "detail of alert 4")
    assert "Netcat started" in browser.find_element(By.ID, "d-title").text
    assert "c-7" in browser.find_element(By.ID, "d-meta").text
    evidence = browser.find_elements(By.CSS_SELECTOR, "#d-timeline li.evidence")
    assert len(evidence) == 1 and "ncat" in evidence[0].text
    assert "process.name" in browser.find_element(By.ID, "d-fields").text

    # 4. acknowledge with a note
    browser.find_element(By.ID, "ack-note").send_keys("reviewed: test traffic")
    browser.find_element(By.ID, "ack-button").click()
    wait_for(lambda: "acknowledged" in browser.find_element(By.ID, "d-ack-state").text and
             "not" not in browser.find_element(By.ID, "d-ack-state").text, 10, "the acknowledgement")
    assert "reviewed: test traffic" in browser.find_element(By.ID, "d-ack-state").text
    assert browser.find_element(By.CSS_SELECTOR, "#alert-rows tr[data-id='4'] .ack-cell").text == "✓"
    assert request(run.base, "GET", "/api/alerts/4")[2]["ack"]["note"] == "reviewed: test traffic"
    shot(browser, "03-detail-acked.png")

    # 5. the server restarts: the feed reconnects and no alert is missing or doubled
    Select(browser.find_element(By.ID, "f-severity")).select_by_value("")
    wait_for(lambda: [i for i, _ in rows(browser)] == [4, 3, 2, 1], 10, "the unfiltered list")
    assert run.stop(signal.SIGTERM) == 0, run.output()
    wait_for(lambda: conn_state(browser) in ("reconnecting", "offline"), 20, "the feed to notice the restart")
    shot(browser, "04-reconnecting.png")
    run.start()
    # raised right after the restart: the browser may still be backing off
    run.feed(proc_event("nc", host="web4"), proc_event("curl", host="web4"))
    wait_for(lambda: conn_state(browser) == "live", 60, "the feed to reconnect")
    run.feed(proc_event("ncat", host="web5"))
    stored = [a["id"] for a in run.wait_alerts(7)]
    assert stored == [7, 6, 5, 4, 3, 2, 1]
    wait_for(lambda: [i for i, _ in rows(browser)] == stored, 30, "every stored alert in the list")
    state = browser.execute_script("return window.kestrelConsole")
    assert state["received"] == [2, 3, 4, 5, 6, 7] and state["duplicates"] == 0
    assert state["reconnects"] >= 1
    assert browser.execute_script("return window.__noReload") == "same page"
    assert request(run.base, "GET", "/api/alerts/4")[2]["ack"]["note"] == "reviewed: test traffic"
    shot(browser, "05-after-restart.png")
    assert run.stop(signal.SIGTERM) == 0


def test_feed_watchdog_and_exponential_back_off(browser, kestrel_run):
    run = kestrel_run(heartbeat_s=30).start()
    browser.get(run.base + "/")
    wait_for(lambda: conn_state(browser) == "live", 30, "the live feed to connect")
    defaults = browser.execute_script("return [window.kestrelConsole.heartbeatTimeoutMs, window.kestrelConsole.backoffMaxMs]")
    assert defaults == [90000, 30000]

    # 1. silence longer than the heartbeat timeout is a disconnect (the server's next heartbeat is 30 s away)
    browser.get(run.base + "/?hb_timeout_ms=1500&backoff_max_ms=4000")
    wait_for(lambda: conn_state(browser) == "live", 30, "the live feed to connect")
    state = lambda: browser.execute_script("return window.kestrelConsole")  # noqa: E731
    wait_for(lambda: state()["reconnects"] >= 1, 10, "the watchdog to drop the silent stream")
    assert state()["lastError"] == "no heartbeat for 1500 ms"
    wait_for(lambda: conn_state(browser) == "live", 10, "the feed to come back after the watchdog")
    assert state()["waits"][0] == 1000

    # 2. with the server gone, waits double up to the cap; each attempt fails
    assert run.stop() == 0
    # (while the server was up the watchdog kept dropping the silent stream, 1 s each time: a
    # connection that delivered a message resets the back-off)
    wait_for(lambda: state()["waits"][-2:] == [4000, 4000], 40, "the back-off to reach its cap")
    waits = state()["waits"]
    last_reset = len(waits) - 1 - waits[::-1].index(1000)
    assert waits[last_reset:] == [1000, 2000, 4000, 4000], waits
    shot(browser, "06-backing-off.png")

    # 3. and it connects again when the server is back, the alert raised meanwhile included
    run.start()
    run.feed(proc_event("nc"))
    wait_for(lambda: conn_state(browser) == "live", 30, "the feed to reconnect")
    wait_for(lambda: [i for i, _ in rows(browser)] == [1], 20, "the alert raised while it was away")
    assert run.stop() == 0


def test_sequence_detail_shows_its_steps_in_order(browser, kestrel_run):
    from selenium.webdriver.common.by import By

    run = kestrel_run().start()
    browser.get(run.base + "/")
    wait_for(lambda: conn_state(browser) == "live", 30, "the live feed to connect")
    assert "no alerts match" in browser.find_element(By.ID, "alert-rows").text
    run.feed(proc_event("wget", host="build1", pid=10))
    run.feed(proc_event("chmod", host="build1", pid=11))
    wait_for(lambda: rows(browser) == [(1, "medium")], 20, "the sequence alert")
    browser.find_element(By.CSS_SELECTOR, "#alert-rows tr[data-id='1']").click()
    wait_for(lambda: len(browser.find_elements(By.CSS_SELECTOR, "#d-timeline li.evidence")) == 2, 10,
             "two evidence steps")
    steps = browser.find_elements(By.CSS_SELECTOR, "#d-timeline li.evidence")
    assert [s.get_attribute("data-step") for s in steps] == ["0", "1"]
    assert "wget" in steps[0].text and "chmod" in steps[1].text
    assert "(+" in steps[1].text and "(+" not in steps[0].text  # offset from the first step
    assert "Download then chmod" in browser.find_element(By.ID, "d-title").text
    wait_for(lambda: browser.find_element(By.ID, "ov-total").text == "1", 20, "the overview to count the alert")
    shot(browser, "07-sequence-detail.png")
    assert run.stop() == 0
