#!/usr/bin/env python3
"""Slow-client abuse against one server on 127.0.0.1, driven by bench/abuse.sh.

usage: abuse.py HOST PORT PATH [HEADER]

1. baseline: REQUESTS legitimate GETs of PATH (one connection each, CONCURRENCY at once, from
   127.0.0.1), their rate and p99;
2. STALLED connections that each send half a request head and stall, spread over source
   addresses 127.0.0.2.. (PER_ADDR each, under the server's per-address cap), plus OVER more
   from one address (127.0.0.250), beyond that cap;
3. the same legitimate load again while they are held;
4. watches the stalled connections for WATCH seconds and reports when the server closed them.

Prints one Markdown table row per phase to stdout; every wait is bounded.
"""
import http.client
import os
import selectors
import socket
import sys
import threading
import time

HOST, PORT, PATH = sys.argv[1], int(sys.argv[2]), sys.argv[3]
HEADERS = dict([sys.argv[4].split(": ", 1)]) if len(sys.argv) > 4 else {}
REQUESTS = int(os.environ.get("REQUESTS", "2000"))
CONCURRENCY = int(os.environ.get("CONCURRENCY", "8"))
STALLED = int(os.environ.get("STALLED", "3000"))
PER_ADDR = int(os.environ.get("PER_ADDR", "250"))
OVER = int(os.environ.get("OVER", "300"))
WATCH = float(os.environ.get("WATCH", "45"))
LOAD_LIMIT = float(os.environ.get("LOAD_LIMIT", "60"))


def load():
    """REQUESTS requests, bounded by LOAD_LIMIT seconds: (ok, failed, seconds, p50, p99)."""
    latencies, failures, lock = [], [0], threading.Lock()
    left = [REQUESTS]
    deadline = time.monotonic() + LOAD_LIMIT

    def worker():
        while time.monotonic() < deadline:
            with lock:
                if left[0] == 0:
                    return
                left[0] -= 1
            start = time.monotonic()
            try:
                conn = http.client.HTTPConnection(
                    HOST, PORT, timeout=10, source_address=("127.0.0.1", 0)
                )
                conn.request("GET", PATH, headers=HEADERS)
                response = conn.getresponse()
                response.read()
                conn.close()
                ok = response.status < 500
            except OSError:
                ok = False
            with lock:
                if ok:
                    latencies.append(time.monotonic() - start)
                else:
                    failures[0] += 1

    begin = time.monotonic()
    threads = [threading.Thread(target=worker) for _ in range(CONCURRENCY)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seconds = time.monotonic() - begin
    latencies.sort()

    def pct(p):
        return latencies[min(len(latencies) - 1, int(p * len(latencies)))] if latencies else float("nan")

    return len(latencies), failures[0], seconds, pct(0.5), pct(0.99)


def stall(source):
    s = socket.socket()
    s.setblocking(True)
    s.settimeout(5)
    s.bind((source, 0))
    s.connect((HOST, PORT))
    s.sendall(b"GET " + PATH.encode() + b" HTTP/1.1\r\nHost: abuse\r\nX-Half: ")
    s.setblocking(False)
    return s


def row(name, result):
    ok, failed, seconds, p50, p99 = result
    print(
        f"| {name} | {ok} | {failed} | {ok / seconds:.0f} | {p50 * 1000:.1f} | {p99 * 1000:.1f} |",
        flush=True,
    )


print("| phase | ok | failed | req/s | p50 ms | p99 ms |")
print("|---|---:|---:|---:|---:|---:|")
row("no stalled connections", load())

opened_at = time.monotonic()
held, over = [], []
for i in range(STALLED):
    held.append(stall(f"127.0.0.{2 + i // PER_ADDR}"))
for _ in range(OVER):
    try:
        over.append(stall("127.0.0.250"))
    except OSError:
        pass
open_secs = time.monotonic() - opened_at

closed = {}
selector = selectors.DefaultSelector()
for s in held + over:
    selector.register(s, selectors.EVENT_READ)
stop_watch = time.monotonic() + WATCH


def watch():
    while time.monotonic() < stop_watch and len(closed) < len(held) + len(over):
        for key, _ in selector.select(timeout=0.2):
            s = key.fileobj
            try:
                data = s.recv(4096)
            except BlockingIOError:
                continue
            except OSError:
                data = b""
            if not data:
                closed[s] = time.monotonic() - opened_at
                selector.unregister(s)


watcher = threading.Thread(target=watch)
watcher.start()
row(f"with {len(held)} + {len(over)} stalled connections", load())
watcher.join()


def closed_by(group, t):
    return sum(1 for s in group if closed.get(s, float("inf")) <= t)


print()
print(f"opened {len(held)} stalled connections over {-(-len(held) // PER_ADDR)} addresses "
      f"and {len(over)} from 127.0.0.250 in {open_secs:.1f} s; closed by the server, "
      f"counted from the first opening:")
print()
print("| by | of the " + str(len(held)) + " under the per-address cap | of the " + str(len(over)) + " from one address |")
print("|---|---:|---:|")
for t in (1, 10, 25, 29, 32, 35, WATCH):
    print(f"| {t:g} s | {closed_by(held, t)} | {closed_by(over, t)} |")
times = sorted(closed[s] for s in held if s in closed)
if times:
    print()
    print(f"the {len(times)} closed of the first group closed between {times[0]:.1f} s and {times[-1]:.1f} s")
for s in held + over:
    s.close()
