"""Drives `shoal agent --rpc-listen` with aria2p, as an aria2 user's script would.

Run by agent_rpc.rs in two phases, with RPC_PORT, RPC_SECRET, FAST_URL, SLOW_URL and OUT_DIR
in the environment; prints one JSON object with what it saw. Every wait is bounded.

Phase "first": a download to completion; one paused, unpaused and paused again; one removed;
one left running (its split raised for the next start, and the test kills the daemon once
its resume state holds 512 KiB); the notifications of all that, read
over the WebSocket with websocket-client (aria2p's own dependency) and parsed by aria2p.
Phase "again", after the daemon was killed and started again: the queue as found, and the
running one finished from its part file.
"""

import hashlib
import json
import os
import sys
import threading
import time

import aria2p
import websocket
from aria2p.client import Notification

PORT = int(os.environ["RPC_PORT"])
OUT = os.environ["OUT_DIR"]
api = aria2p.API(aria2p.Client(host="http://127.0.0.1", port=PORT, secret=os.environ["RPC_SECRET"]))


def wait(what, predicate, limit=60.0):
    end = time.monotonic() + limit
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise SystemExit(f"timed out after {limit}s waiting for {what}")


def status(gid):
    return api.get_download(gid).status


def sha256(name):
    with open(os.path.join(OUT, name), "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def first():
    seen = []
    socket = websocket.create_connection(f"ws://127.0.0.1:{PORT}/jsonrpc", timeout=60)
    # A call over the WebSocket is answered on it, as over POST.
    call = {"jsonrpc": "2.0", "id": "ws", "method": "aria2.getVersion",
            "params": ["token:" + os.environ["RPC_SECRET"]]}
    socket.send(json.dumps(call))
    answer = json.loads(socket.recv())
    assert answer["id"] == "ws" and "version" in answer["result"], answer

    def listen():
        while True:
            try:
                message = socket.recv()
            except Exception:
                return
            if not message:
                return
            notification = Notification.get_or_raise(json.loads(message))
            seen.append([notification.type, notification.gid])

    threading.Thread(target=listen, daemon=True).start()

    fast = api.add_uris([os.environ["FAST_URL"]], options={"out": "fast.bin"})
    wait("fast.bin to complete", lambda: status(fast.gid) == "complete")

    paused = api.add_uris([os.environ["SLOW_URL"] + "/b"], options={"out": "b.bin", "split": "1"})
    wait("b.bin to make progress", lambda: api.get_download(paused.gid).completed_length > 0)
    assert api.pause([paused]) == [True]
    wait("b.bin to pause", lambda: status(paused.gid) == "paused")
    assert api.resume([api.get_download(paused.gid)]) == [True]
    wait("b.bin to run again", lambda: status(paused.gid) == "active")
    assert api.pause([api.get_download(paused.gid)]) == [True]
    wait("b.bin to pause again", lambda: status(paused.gid) == "paused")

    removed = api.add_uris([os.environ["SLOW_URL"] + "/c"], options={"out": "c.bin", "split": "1"})
    wait("c.bin to run", lambda: status(removed.gid) == "active")
    assert api.remove([api.get_download(removed.gid)]) == [True]
    gone = lambda: removed.gid not in [d.gid for d in api.get_downloads()]
    wait("c.bin to be gone", gone)

    running = api.add_uris([os.environ["SLOW_URL"] + "/e"], options={"out": "e.bin", "split": "1"})
    wait("e.bin to get 256 KiB", lambda: api.get_download(running.gid).completed_length >= 256 << 10)
    assert api.client.change_option(running.gid, {"split": "16"}) == "OK"

    expected = [
        ["aria2.onDownloadStart", fast.gid],
        ["aria2.onDownloadComplete", fast.gid],
        ["aria2.onDownloadStart", paused.gid],
        ["aria2.onDownloadPause", paused.gid],
        ["aria2.onDownloadStart", paused.gid],
        ["aria2.onDownloadPause", paused.gid],
        ["aria2.onDownloadStart", removed.gid],
        ["aria2.onDownloadStop", removed.gid],
        ["aria2.onDownloadStart", running.gid],
    ]
    wait("the notifications", lambda: len(seen) >= len(expected), limit=10)
    return {
        "fast_sha256": sha256("fast.bin"),
        "paused": paused.gid,
        "running": running.gid,
        "notifications": seen,
        "expected_notifications": expected,
    }


def again():
    paused, running = sys.argv[2], sys.argv[3]
    found = {d.gid: d.status for d in api.get_downloads()}
    wait("e.bin to complete after the restart", lambda: status(running) == "complete")
    return {"found": found, "running_sha256": sha256("e.bin"), "paused_after": status(paused)}


print(json.dumps(first() if sys.argv[1] == "first" else again()))
