// The agent's page: its queue through the aria2 JSON-RPC at /jsonrpc (one system.multicall a
// second, the secret as aria2's `token:` parameter) and its fleet role from /ui/fleet. File
// names and URLs are attacker-controlled text: they reach the DOM through `shoal.el` only.
"use strict";

(function () {
  const { el, bytes, rate, status } = window.shoal;
  const $ = (id) => document.getElementById(id);
  const KEYS = ["gid", "status", "totalLength", "completedLength", "downloadSpeed", "files",
    "errorMessage", "dir"];
  const SHOWN_STOPPED = 50;
  let secret = "";
  let timer = null;
  let served = null;

  class Refused extends Error {}

  // Calls each [method, ...params] in one system.multicall; answers their results, or throws
  // the first error (Refused when the secret is wrong).
  async function rpc(calls) {
    const body = {
      jsonrpc: "2.0",
      id: "ui",
      method: "system.multicall",
      params: [calls.map(([methodName, ...params]) => ({ methodName, params: ["token:" + secret, ...params] }))],
    };
    const response = await fetch("/jsonrpc", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
      cache: "no-store",
    });
    const answer = await response.json();
    if (answer.error) throw new Error(answer.error.message);
    return answer.result.map((one) => {
      if (Array.isArray(one)) return one[0];
      if (one.message === "Unauthorized") throw new Refused(one.message);
      throw new Error(one.message || "the agent refused the call");
    });
  }

  async function fleet() {
    const response = await fetch("/ui/fleet", {
      headers: { Authorization: "Bearer " + secret },
      cache: "no-store",
    });
    if (response.status === 401) throw new Refused("Unauthorized");
    return response.json();
  }

  function open(token) {
    secret = token;
    served = null;
    tick();
  }

  function close() {
    clearTimeout(timer);
    timer = null;
    $("app").hidden = true;
  }

  async function tick() {
    clearTimeout(timer);
    try {
      const [active, waiting, stopped, stat] = await rpc([
        ["aria2.tellActive", KEYS],
        ["aria2.tellWaiting", 0, 1000, KEYS],
        ["aria2.tellStopped", 0, SHOWN_STOPPED, KEYS],
        ["aria2.getGlobalStat"],
      ]);
      const role = await fleet();
      draw(active, waiting, stopped, stat, role);
    } catch (e) {
      if (e instanceof Refused) {
        window.shoal.refused("The agent refused this secret.");
        return;
      }
      status("agent unreachable: " + e.message, "error");
    }
    timer = setTimeout(tick, 1000);
  }

  // Runs one queue action, then redraws at once.
  async function act(method, ...params) {
    try {
      await rpc([[method, ...params]]);
      $("add-error").textContent = "";
    } catch (e) {
      if (e instanceof Refused) return window.shoal.refused("The agent refused this secret.");
      $("add-error").textContent = method + ": " + e.message;
    }
    tick();
  }

  function name(d) {
    const file = (d.files && d.files[0]) || {};
    if (file.path) return file.path.split("/").pop();
    const uri = file.uris && file.uris[0] && file.uris[0].uri;
    return uri || d.gid;
  }

  function title(d) {
    const file = (d.files && d.files[0]) || {};
    return [file.path, ...(file.uris || []).map((u) => u.uri)].filter(Boolean).join("\n");
  }

  function meter(done, total) {
    const share = total > 0 ? Math.min(1, done / total) : 0;
    const fill = el("span");
    fill.style.width = (share * 100).toFixed(1) + "%";
    return el("div", { class: "meter", role: "meter", "aria-valuemin": 0, "aria-valuemax": 100,
      "aria-valuenow": Math.round(share * 100) }, fill);
  }

  function button(label, method, ...params) {
    return el("button", { type: "button", onclick: () => act(method, ...params) }, label);
  }

  function queueRow(d, index, waitingCount) {
    const done = Number(d.completedLength);
    const total = Number(d.totalLength);
    const running = d.status === "active" || d.status === "waiting";
    const actions = [
      running ? button("Pause", "aria2.pause", d.gid) : button("Resume", "aria2.unpause", d.gid),
      d.status !== "active" && index > 0 ? button("Up", "aria2.changePosition", d.gid, -1, "POS_CUR") : null,
      d.status !== "active" && index < waitingCount - 1
        ? button("Down", "aria2.changePosition", d.gid, 1, "POS_CUR") : null,
      button("Remove", "aria2.remove", d.gid),
    ];
    return el("tr", { "data-gid": d.gid }, [
      el("td", { title: title(d), "data-label": "File", class: "file" }, name(d)),
      el("td", { "data-label": "Status" }, el("span", { class: "state " + d.status }, d.status)),
      el("td", { "data-label": "Progress" }, [
        meter(done, total),
        el("span", { class: "num dim" }, bytes(done) + (total ? " of " + bytes(total) : "")),
      ]),
      el("td", { class: "num", "data-label": "Speed" }, d.status === "active" ? rate(d.downloadSpeed) : "–"),
      el("td", { "data-label": "Actions" }, el("div", { class: "actions" }, actions)),
    ]);
  }

  function stoppedRow(d) {
    return el("tr", { "data-gid": d.gid }, [
      el("td", { title: title(d), "data-label": "File", class: "file" }, name(d)),
      el("td", { "data-label": "Status", title: d.errorMessage || "" },
        el("span", { class: "state " + d.status }, d.errorMessage ? d.status + ": " + d.errorMessage : d.status)),
      el("td", { class: "num", "data-label": "Size" }, bytes(d.totalLength)),
      el("td", { "data-label": "Actions" },
        el("div", { class: "actions" }, button("Clear", "aria2.removeDownloadResult", d.gid))),
    ]);
  }

  function empty(columns, text) {
    return el("tr", {}, el("td", { class: "empty", colspan: columns }, text));
  }

  function draw(active, waiting, stopped, stat, role) {
    $("app").hidden = false;
    status("live · " + new Date().toLocaleTimeString(), "live");
    const now = Date.now();
    const upload = served && now > served.at ? Math.max(0, (role.served - served.bytes) * 1000 / (now - served.at)) : 0;
    served = { bytes: role.served, at: now };
    $("down").textContent = rate(stat.downloadSpeed);
    $("up").textContent = rate(Math.round(upload));
    $("counts").textContent = stat.numActive + " · " + stat.numWaiting + " · " + stat.numStopped;
    $("role").replaceChildren(
      el("p", {}, [el("span", { class: "mono" }, role.id), " ",
        el("span", { class: "tag" }, role.tracker ? "fleet member" : "on its own")]),
      el("p", { class: "dim" }, role.tracker
        ? ["tracker ", el("span", { class: "mono" }, role.tracker), " · peers reach it at ",
          el("span", { class: "mono" }, role.advertise)]
        : "no tracker: downloads come from their origins only"),
      el("p", { class: "dim" }, role.holdings + " holdings (" + role.complete + " whole) · served " +
        bytes(role.served) + " · " + role.uploads + " uploads now"),
    );
    const queued = [...active, ...waiting];
    const rows = queued.map((d, i) => queueRow(d, i - active.length, waiting.length));
    $("queue").replaceChildren(...(rows.length ? rows : [empty(5, "Nothing queued.")]));
    const done = stopped.map(stoppedRow);
    $("stopped").replaceChildren(...(done.length ? done : [empty(4, "Nothing finished yet.")]));
  }

  document.addEventListener("DOMContentLoaded", () => {
    $("add").addEventListener("submit", (event) => {
      event.preventDefault();
      const url = $("add-url").value.trim();
      const out = $("add-out").value.trim();
      if (!url) return;
      $("add-url").value = "";
      $("add-out").value = "";
      act("aria2.addUri", [url], out ? { out } : {});
    });
    window.shoal.start({ open, close });
  });
})();
