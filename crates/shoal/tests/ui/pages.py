"""Drives the tracker's /ui and an agent's /ui in one headless Chromium session (Selenium,
chromedriver given explicitly) and prints what it saw as one JSON object; the Rust test asserts
on it.

Usage: pages.py TRACKER_URL READER_TOKEN AGENT_TOKEN SHOTS_DIR AGENT_RPC_URL RPC_SECRET \
    FAST_URL SLOW_URL TAG_NAME
"""

import json
import sys
import time
import urllib.request

from selenium import webdriver
from selenium.common.exceptions import NoAlertPresentException, TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.support.ui import WebDriverWait

BASE, READER, AGENT, SHOTS, RPC, SECRET, FAST, SLOW, TAG = sys.argv[1:10]
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
    except (TimeoutException, TypeError):
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
    time.sleep(0.5)  # a stream draws at once; nothing may appear
    seen["no_token"] = {
        "app_hidden": driver.execute_script("return document.getElementById('app').hidden"),
        "agent_rows": len(rows(driver, "agents")),
        "content_rows": len(rows(driver, "contents")),
        "text": driver.find_element("tag name", "body").text,
    }
    driver.save_screenshot(SHOTS + "/tracker-no-token-1280x800.png")

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

    # The name filter asks the tracker for matching contents only.
    driver.find_element("id", "filter").send_keys("PLAIN")
    wait_for(driver, "the filtered contents", lambda d: len(rows(d, "contents")) == 1)
    seen["filtered"] = driver.execute_script(
        "return [...document.querySelectorAll('#contents .name')].map(n => n.textContent)")
    driver.find_element("id", "filter").clear()
    driver.execute_script("document.getElementById('filter').dispatchEvent(new Event('input'))")
    wait_for(driver, "every content again", lambda d: len(rows(d, "contents")) >= 3)

    # A phone.
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                           {"width": 390, "height": 844, "deviceScaleFactor": 2, "mobile": True})
    time.sleep(0.3)  # one layout
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

    # The agent's page: nothing without the RPC secret.
    driver.get(RPC + "/ui")
    wait_for(driver, "the agent's secret form", lambda d: d.execute_script("return !document.getElementById('login').hidden"))
    time.sleep(0.5)  # the queue draws at once; nothing may appear
    seen["agent_no_secret"] = {
        "app_hidden": driver.execute_script("return document.getElementById('app').hidden"),
        "text": driver.find_element("tag name", "body").text,
    }
    driver.get(RPC + "/ui#token=" + SECRET)
    wait_for(driver, "the agent's role", lambda d: "ui-a" in d.find_element("id", "role").text)
    seen["agent_role"] = driver.find_element("id", "role").text

    def add(url, out):
        driver.find_element("id", "add-url").send_keys(url)
        driver.find_element("id", "add-out").send_keys(out)
        driver.find_element("css selector", "#add button[type=submit]").click()

    def row_of(table, name):
        return driver.execute_script(
            "return [...document.querySelectorAll(arguments[0] + ' tr')]"
            ".map(r => [...r.cells].map(c => c.textContent)).find(r => r[0] === arguments[1]) || null",
            "#" + table, name)

    def click(table, name, label):
        driver.execute_script(
            "const row = [...document.querySelectorAll(arguments[0] + ' tr')]"
            ".find(r => r.cells[0].textContent === arguments[1]);"
            "[...row.querySelectorAll('button')].find(b => b.textContent === arguments[2]).click()",
            "#" + table, name, label)

    # A download added through the form finishes; its tag-like name stays text.
    add(FAST, TAG)
    wait_for(driver, "the fast download to finish", lambda d: (row_of("stopped", TAG) or ["", ""])[1] == "complete")
    # Three slow ones (one runs at a time): pause, resume, reorder, remove.
    for n in (1, 2, 3):
        add(SLOW, f"slow-{n}.bin")
        wait_for(driver, f"slow-{n}.bin queued", lambda d, n=n: row_of("queue", f"slow-{n}.bin"))
    wait_for(driver, "slow-1.bin active", lambda d: row_of("queue", "slow-1.bin")[1] == "active")
    click("queue", "slow-3.bin", "Up")
    wait_for(driver, "slow-3.bin before slow-2.bin",
             lambda d: [r[0] for r in rows(d, "queue")] == ["slow-1.bin", "slow-3.bin", "slow-2.bin"])
    seen["agent_reordered"] = rows(driver, "queue")
    click("queue", "slow-1.bin", "Pause")
    wait_for(driver, "slow-1.bin paused", lambda d: row_of("queue", "slow-1.bin")[1] == "paused")
    seen["agent_paused"] = rows(driver, "queue")
    driver.save_screenshot(SHOTS + "/agent-1280x800.png")
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                           {"width": 390, "height": 844, "deviceScaleFactor": 2, "mobile": True})
    time.sleep(0.3)  # one layout
    seen["agent_phone"] = {"scroll_width": driver.execute_script("return document.documentElement.scrollWidth")}
    driver.save_screenshot(SHOTS + "/agent-390x844.png")
    driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
    click("queue", "slow-1.bin", "Resume")
    wait_for(driver, "slow-1.bin resumed", lambda d: row_of("queue", "slow-1.bin")[1] in ("active", "waiting"))
    click("queue", "slow-2.bin", "Remove")
    wait_for(driver, "slow-2.bin removed", lambda d: row_of("queue", "slow-2.bin") is None)
    seen["agent_queue"] = rows(driver, "queue")
    seen["agent_stopped"] = rows(driver, "stopped")
    seen["agent_images"] = driver.execute_script("return document.getElementsByTagName('img').length")
    seen["agent_alerts"] = alerts(driver)
finally:
    driver.quit()
print(json.dumps(seen))
