// The tracker's page: reads `/ui/events` (one `view` event a second) and draws agents,
// contents and swarms. Text from the tracker is attacker-controlled (names, URLs, ids): it
// goes into the DOM through `shoal.el` only.
"use strict";

(function () {
  const { el, bytes, rate, ago, status } = window.shoal;
  const $ = (id) => document.getElementById(id);
  const PAGE = 50;
  const view = { agents: 0, contents: 0, name: "" };
  let stream = null;
  let retry = null;

  function close() {
    if (stream) stream.abort();
    stream = null;
    clearTimeout(retry);
    $("app").hidden = true;
  }

  // The stream is read with fetch, not EventSource, so the token travels in a header.
  async function connect(token) {
    close();
    const controller = new AbortController();
    stream = controller;
    const query = new URLSearchParams({ agents: view.agents, contents: view.contents });
    if (view.name) query.set("name", view.name);
    status("connecting…");
    let response;
    try {
      response = await fetch("/ui/events?" + query, {
        headers: { Authorization: "Bearer " + token, Accept: "text/event-stream" },
        cache: "no-store",
        signal: controller.signal,
      });
    } catch (e) {
      if (!controller.signal.aborted) later(token, "tracker unreachable");
      return;
    }
    if (response.status === 401 || response.status === 403) {
      const body = await response.json().catch(() => ({}));
      window.shoal.refused("The tracker refused this token: " + (body.error || response.status));
      return;
    }
    if (!response.ok) {
      const body = await response.json().catch(() => ({}));
      later(token, "tracker answered " + response.status + " " + (body.error || ""));
      return;
    }
    try {
      await read(response.body, controller.signal);
    } catch (e) {
      // Aborted by a page change, or the connection dropped.
    }
    if (!controller.signal.aborted) later(token, "connection lost, reconnecting");
  }

  function later(token, why) {
    status(why, "error");
    clearTimeout(retry);
    retry = setTimeout(() => connect(token), 3000);
  }

  // Splits a text/event-stream into events; hands each `view` to draw.
  async function read(body, signal) {
    const reader = body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    while (!signal.aborted) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += value.replace(/\r\n?/g, "\n");
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        let name = "message";
        const data = [];
        for (const line of block.split("\n")) {
          if (line.startsWith("event:")) name = line.slice(6).trim();
          else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
        }
        if (name === "view") draw(JSON.parse(data.join("\n")));
        else if (name === "failed") status("tracker: " + data.join(" "), "error");
      }
    }
  }

  function draw(data) {
    $("app").hidden = false;
    status("live · " + new Date().toLocaleTimeString(), "live");
    drawTotals(data.totals);
    drawSwarms(data.swarms);
    drawAgents(data);
    drawContents(data);
  }

  function drawTotals(totals) {
    const item = (label, value) => el("div", { class: "total" }, [
      el("span", { class: "value num" }, String(value)),
      el("span", { class: "label" }, label),
    ]);
    $("totals").replaceChildren(
      item("agents", totals.agents),
      item("contents", totals.contents),
      item("manifests", totals.manifests),
      item("swarms", totals.swarms),
    );
  }

  function empty(columns, text) {
    return el("tr", {}, el("td", { class: "empty", colspan: columns }, text));
  }

  function drawAgents(data) {
    const rows = data.agents.map((a) => el("tr", {}, [
      el("td", { class: "mono", title: a.id, "data-label": "Agent" }, a.id),
      el("td", { class: "mono", "data-label": "Address" }, a.addr),
      el("td", { class: "num", "data-label": "Last heartbeat" }, ago(a.last_seen_ms)),
      el("td", { class: "num", "data-label": "Holdings" },
        a.complete_holdings + " whole / " + a.holdings),
      el("td", { class: "num", "data-label": "Served" }, bytes(a.served)),
      el("td", { class: "num", "data-label": "Upload" }, rate(a.upload_rate)),
    ]));
    $("agents").replaceChildren(...(rows.length ? rows : [empty(6, "No live agent.")]));
    pager("agents", data.agents_offset, data.agents.length, data.agents.length === PAGE, data.totals.agents);
  }

  function drawContents(data) {
    const rows = data.contents.map((c) => el("tr", {}, [
      el("td", { title: c.name + "\n" + c.id, "data-label": "Name" }, [
        el("span", { class: "name" }, c.name || "(no name)"),
        el("span", { class: "mono dim id" }, " " + c.id.slice(0, 12)),
      ]),
      el("td", { class: "num", "data-label": "Size" }, bytes(c.layout.size)),
      el("td", { class: "num", "data-label": "Holders" },
        c.complete_holders + " whole, " + c.partial_holders + " partial"),
      el("td", { "data-label": "Availability" }, bar(c.availability)),
    ]));
    $("contents").replaceChildren(...(rows.length ? rows : [empty(4, "No content matches.")]));
    pager("contents", data.contents_offset, data.contents.length, data.contents_more, null);
  }

  // One segment per part of the file, darker with more holders; red where nobody holds it.
  function bar(segments) {
    const canvas = el("canvas", { class: "availability", width: 192, height: 14 });
    const least = Math.min(...segments);
    const most = Math.max(...segments);
    canvas.setAttribute("title", "holders per part of the file: " +
      (least === most ? least : least + " to " + most));
    canvas.setAttribute("role", "img");
    canvas.setAttribute("aria-label", canvas.getAttribute("title"));
    const ctx = canvas.getContext("2d");
    const width = canvas.width / segments.length;
    segments.forEach((holders, i) => {
      ctx.fillStyle = holders === 0 ? "#e5534b" : "rgba(31, 111, 235, " + Math.min(1, 0.35 + 0.22 * holders) + ")";
      ctx.fillRect(Math.floor(i * width), 0, Math.ceil(width), canvas.height);
    });
    return canvas;
  }

  function pager(name, offset, shown, more, total) {
    const last = offset + shown;
    $(name + "-range").textContent = shown
      ? (offset + 1) + "–" + last + (total !== null ? " of " + total : "")
      : "";
    $(name + "-prev").disabled = offset === 0;
    $(name + "-next").disabled = !more;
  }

  function meter(done, total) {
    const share = total > 0 ? Math.min(1, done / total) : 0;
    const fill = el("span");
    fill.style.width = (share * 100).toFixed(1) + "%";
    return el("div", { class: "meter", role: "meter", "aria-valuemin": 0, "aria-valuemax": 100,
      "aria-valuenow": Math.round(share * 100) }, fill);
  }

  function drawSwarms(swarms) {
    if (!swarms.length) {
      $("swarms").replaceChildren(el("p", { class: "dim" }, "No swarm is running."));
      return;
    }
    $("swarms").replaceChildren(...swarms.map((s) => {
      const members = s.members.map((m) => el("li", {}, [
        el("span", { class: "mono member" }, m.id),
        // An empty cell for the others keeps every member's bar in one column.
        m.id === s.leader ? el("span", { class: "tag" }, "leader") : el("span"),
        meter(m.pieces, s.pieces),
        el("span", { class: "num dim" }, Math.round(100 * m.pieces / Math.max(1, s.pieces)) + " %"),
      ]));
      return el("article", { class: "swarm" }, [
        el("p", { class: "url mono", title: s.url }, s.url),
        el("p", { class: "dim" }, [
          "leader ", el("span", { class: "mono" }, s.leader),
          " · " + bytes(s.size) + " in " + s.pieces + " pieces",
        ]),
        el("div", { class: "origin" }, [
          el("span", { class: "dim" }, "from origin"),
          meter(s.origin_bytes, s.size),
          el("span", { class: "num" }, bytes(s.origin_bytes) + " of " + bytes(s.size)),
        ]),
        el("ul", { class: "members" }, members.length ? members
          : [el("li", { class: "dim" }, "no member holds a piece yet")]),
      ]);
    }));
  }

  function reopen() {
    connect(window.shoal.token());
  }

  function page(name, step) {
    view[name] = Math.max(0, view[name] + step);
    reopen();
  }

  document.addEventListener("DOMContentLoaded", () => {
    $("agents-prev").addEventListener("click", () => page("agents", -PAGE));
    $("agents-next").addEventListener("click", () => page("agents", PAGE));
    $("contents-prev").addEventListener("click", () => page("contents", -PAGE));
    $("contents-next").addEventListener("click", () => page("contents", PAGE));
    let typing = null;
    $("filter").addEventListener("input", (event) => {
      clearTimeout(typing);
      typing = setTimeout(() => {
        view.name = event.target.value.trim();
        view.contents = 0;
        reopen();
      }, 300);
    });
    window.shoal.start({ open: connect, close });
  });
})();
