"""bench/ui_load.py: fills a tracker with AGENTS agents and CONTENTS contents, then times the
tracker's /ui in headless Chromium (see bench/ui-load.sh, which runs it).

Usage: ui_load.py BASE AGENT_TOKEN READER_TOKEN AGENTS CONTENTS ROUNDS
"""

import hashlib
import json
import statistics
import sys
import time
import urllib.request

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.support.ui import WebDriverWait

BASE, AGENT, READER = sys.argv[1:4]
AGENTS, CONTENTS, ROUNDS = (int(a) for a in sys.argv[4:7])
PIECES = 256  # 1 GiB in 4 MiB pieces

# Records when the first page of contents is drawn, in ms since navigation start.
OBSERVE = """
new MutationObserver(() => {
  if (!window.__drawn && document.querySelectorAll('#contents tr canvas').length >= arguments_rows)
    window.__drawn = performance.now();
}).observe(document, { subtree: true, childList: true });
"""


def call(method, path, body, token):
    request = urllib.request.Request(
        BASE + path,
        data=json.dumps(body).encode(),
        method=method,
        headers={"Authorization": "Bearer " + token, "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return response.read()


def content(n):
    return hashlib.blake2s(b"ui-load %d" % n).hexdigest()


def holding(n, partial):
    layout = {"size": PIECES << 22, "piece_size": 1 << 22}
    held = {"content": content(n), "name": "build-%05d/image-%d.raw" % (n // 10, n), "layout": layout}
    if partial:
        held["pieces"] = "ff" * (PIECES // 16) + "00" * (PIECES // 16)
    return held


def fill():
    started = time.monotonic()
    per_agent = max(1, CONTENTS // AGENTS)
    for i in range(AGENTS):
        own = [holding(i * per_agent + k, False) for k in range(per_agent)]
        # Five more, held partly: each content has a few holders, some of them partial.
        shared = [holding((i * per_agent + per_agent + k) % CONTENTS, True) for k in range(5)]
        body = {"addr": "127.0.0.1:%d" % (10000 + i), "holdings": own + shared}
        call("PUT", "/v1/agents/agent-%04d" % i, body, AGENT)
    return time.monotonic() - started


def first_event():
    request = urllib.request.Request(BASE + "/ui/events", headers={"Authorization": "Bearer " + READER})
    started = time.monotonic()
    with urllib.request.urlopen(request, timeout=30) as response:
        data = b""
        while b"\n\n" not in data:
            data += response.read1(65536)
    return time.monotonic() - started, data.index(b"\n\n")


def main():
    filled = fill()
    event_s, event_bytes = first_event()
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for arg in ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,800"]:
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(executable_path="/usr/bin/chromedriver"), options=options)
    times = []
    try:
        driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument",
                               {"source": OBSERVE.replace("arguments_rows", "50")})
        for _ in range(ROUNDS):
            driver.get("about:blank")
            driver.get(BASE + "/ui#token=" + READER)
            drawn = WebDriverWait(driver, 30, poll_frequency=0.05).until(
                lambda d: d.execute_script("return window.__drawn"))
            times.append(drawn / 1000)
        agents_rows = driver.execute_script("return document.querySelectorAll('#agents tr').length")
        totals = driver.find_element("id", "totals").text.replace("\n", " ")
    finally:
        driver.quit()
    print("| fleet | filled in | first event | page drawn (median / min / max of %d) |" % ROUNDS)
    print("|---|---|---|---|")
    print("| %d agents, %d contents (%s; %d agent rows shown) | %.1f s | %.0f ms, %.1f KiB | %.3f / %.3f / %.3f s |" % (
        AGENTS, CONTENTS, totals, agents_rows, filled, event_s * 1000, event_bytes / 1024,
        statistics.median(times), min(times), max(times)))


main()
