"""Drives the tracker's /ui in headless Chromium (Selenium, chromedriver given explicitly) and
prints what it saw as one JSON object; the Rust test asserts on it.

Usage: pages.py BASE_URL READER_TOKEN AGENT_TOKEN SHOTS_DIR
"""

import json
import sys
import time
import urllib.request

from selenium import webdriver
from selenium.common.exceptions import NoAlertPresentException, TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.support.ui import WebDriverWait

BASE, READER, AGENT, SHOTS = sys.argv[1:5]
WAIT = 20  # seconds; a guard against hangs, never a measure

# Records any alert() instead of showing it: a script injected through a file name would call
# it. Runs before the page's own scripts, outside the page's CSP.
RECORD_ALERTS = "window.__alerts = []; window.alert = (m) => window.__alerts.push(String(m));"


def rows(driver, tbody):
    return driver.execute_script(
        "return [...document.querySelectorAll(arguments[0] + ' tr')]"
        ".map(r => [...r.cells].map(c => c.textContent))",
        "#" + tbody,
    )


def wait_for(driver, what, check):
    try:
        return WebDriverWait(driver, WAIT, poll_frequency=0.1).until(lambda d: check(d))
    except TimeoutException:
        raise SystemExit(f"timed out waiting for {what}; page text: {driver.find_element('tag name', 'body').text!r}")


def register_late_agent():
    body = json.dumps({"addr": "127.0.0.1:9", "holdings": []}).encode()
    request = urllib.request.Request(
        BASE + "/v1/agents/late-1",
        data=body,
        method="PUT",
        headers={"Authorization": "Bearer " + AGENT, "Content-Type": "application/json"},
    )
    urllib.request.urlopen(request, timeout=10).read()


def alerts(driver):
    try:
        text = driver.switch_to.alert.text
        return [text]
    except NoAlertPresentException:
        return driver.execute_script("return window.__alerts || []")


options = webdriver.ChromeOptions()
options.binary_location = "/usr/bin/chromium"
for arg in ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,800"]:
    options.add_argument(arg)
options.set_capability("unhandledPromptBehavior", "ignore")
driver = webdriver.Chrome(service=Service(executable_path="/usr/bin/chromedriver"), options=options)
seen = {}
try:
    driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": RECORD_ALERTS})

    # No token: the form, and nothing of the fleet.
    driver.get(BASE + "/ui")
    wait_for(driver, "the token form", lambda d: d.execute_script("return !document.getElementById('login').hidden"))
    time.sleep(1.5)  # a stream would have drawn by now; nothing may appear
    seen["no_token"] = {
        "app_hidden": driver.execute_script("return document.getElementById('app').hidden"),
        "agent_rows": len(rows(driver, "agents")),
        "content_rows": len(rows(driver, "contents")),
        "text": driver.find_element("tag name", "body").text,
    }

    # A wrong token: refused, and still nothing.
    driver.get(BASE + "/ui#token=not-a-token-of-this-tracker")
    wait_for(driver, "the refusal", lambda d: d.execute_script("return document.getElementById('login-error').textContent"))
    seen["wrong_token"] = {
        "error": driver.execute_script("return document.getElementById('login-error').textContent"),
        "agent_rows": len(rows(driver, "agents")),
        "stored": driver.execute_script("return sessionStorage.getItem('shoal-token')"),
    }

    # The reader's token in the fragment: the fleet, live.
    driver.get(BASE + "/ui#token=" + READER)
    wait_for(driver, "two agents", lambda d: len([r for r in rows(d, "agents") if r[0].startswith("ui-")]) >= 2)
    wait_for(driver, "the contents", lambda d: len(rows(d, "contents")) >= 3)
    wait_for(driver, "a swarm", lambda d: d.execute_script("return document.querySelectorAll('.swarm').length") >= 1)
    seen["fleet"] = {
        "hash": driver.execute_script("return location.hash"),
        "stored": driver.execute_script("return sessionStorage.getItem('shoal-token') !== null"),
        "agents": rows(driver, "agents"),
        "contents": rows(driver, "contents"),
        "names": driver.execute_script("return [...document.querySelectorAll('#contents .name')].map(n => n.textContent)"),
        "images": driver.execute_script("return document.getElementsByTagName('img').length"),
        "bars": driver.execute_script("return document.querySelectorAll('#contents canvas.availability').length"),
        "swarms": driver.execute_script(
            "return [...document.querySelectorAll('.swarm')].map(s => s.textContent)"),
        "members": driver.execute_script(
            "return [...document.querySelectorAll('.members li')].map(l => l.textContent)"),
        "alerts": alerts(driver),
    }
    driver.save_screenshot(SHOTS + "/tracker-1280x800.png")

    # Live: an agent that registers now appears without a reload.
    driver.execute_script("window.__same_page = true")
    register_late_agent()
    wait_for(driver, "the late agent", lambda d: any(r[0] == "late-1" for r in rows(d, "agents")))
    seen["live"] = {"same_page": driver.execute_script("return window.__same_page === true")}

    # A phone.
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                           {"width": 390, "height": 844, "deviceScaleFactor": 2, "mobile": True})
    time.sleep(1.5)
    seen["phone"] = {
        "scroll_width": driver.execute_script("return document.documentElement.scrollWidth"),
        "agent_rows": len(rows(driver, "agents")),
    }
    driver.save_screenshot(SHOTS + "/tracker-390x844.png")
    driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})

    # The token stays for the tab: a reload without the fragment still shows the fleet.
    driver.get(BASE + "/ui")
    wait_for(driver, "agents after a reload", lambda d: len(rows(d, "agents")) >= 2)
    seen["reload"] = {"agent_rows": len(rows(driver, "agents")), "alerts": alerts(driver)}
finally:
    driver.quit()
print(json.dumps(seen))
