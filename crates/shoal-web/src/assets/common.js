// What both shoal pages share: the token, DOM building, number formatting. Loaded before the
// page's own script, it defines `window.shoal`.
//
// File names, URLs and agent ids are attacker-controlled text: pages build the DOM with
// `shoal.el`, which sets text through text nodes and attributes through `setAttribute`, and
// never through HTML parsing.
"use strict";

(function () {
  const KEY = "shoal-token";
  const $ = (id) => document.getElementById(id);

  // A token in the fragment (`#token=...`) is moved to sessionStorage and removed from the
  // address bar, so it is neither bookmarked nor shown over a shoulder. Fragments never reach
  // the server or its logs.
  function takeFragmentToken() {
    const found = /(?:^#|&)token=([^&]*)/.exec(location.hash);
    if (!found) return false;
    try {
      sessionStorage.setItem(KEY, decodeURIComponent(found[1]));
    } catch (e) {
      sessionStorage.setItem(KEY, found[1]);
    }
    history.replaceState(null, "", location.pathname + location.search);
    return true;
  }

  function token() {
    return sessionStorage.getItem(KEY) || "";
  }

  // An element with `props` (attributes, or `on*` listeners) and children (nodes, or strings
  // added as text).
  function el(tag, props, children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(props || {})) {
      if (value === undefined || value === null || value === false) continue;
      if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
      else node.setAttribute(name, value === true ? "" : String(value));
    }
    for (const child of [].concat(children === undefined ? [] : children)) {
      if (child === null || child === undefined) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  const UNITS = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
  function bytes(n) {
    let value = Number(n) || 0;
    let unit = 0;
    while (value >= 1024 && unit < UNITS.length - 1) {
      value /= 1024;
      unit += 1;
    }
    return (unit === 0 ? String(value) : value.toFixed(value < 10 ? 1 : 0)) + " " + UNITS[unit];
  }

  function rate(n) {
    return bytes(n) + "/s";
  }

  function ago(ms) {
    const s = Math.round((Number(ms) || 0) / 1000);
    if (s < 60) return s + " s ago";
    if (s < 3600) return Math.floor(s / 60) + " min ago";
    return Math.floor(s / 3600) + " h ago";
  }

  function status(text, kind) {
    const node = $("status");
    if (!node) return;
    node.textContent = text;
    node.className = "status" + (kind ? " " + kind : "");
  }

  let page = null;

  // Shows the token form, with `message` saying why (a refused token), and nothing else.
  function showLogin(message) {
    $("app").hidden = true;
    $("logout").hidden = true;
    $("login").hidden = false;
    $("login-error").textContent = message || "";
    status("");
    $("token").focus();
  }

  function open() {
    $("login").hidden = true;
    $("logout").hidden = false;
    page.open(token());
  }

  // The server refused the token: forget it and ask for another.
  function refused(message) {
    sessionStorage.removeItem(KEY);
    if (page) page.close();
    showLogin(message);
  }

  // Starts a page: `handlers.open(token)` runs once a token is known (it shows `#app` when
  // the server accepted it), `handlers.close()` when it is forgotten.
  function start(handlers) {
    page = handlers;
    takeFragmentToken();
    $("login").addEventListener("submit", (event) => {
      event.preventDefault();
      const given = $("token").value.trim();
      $("token").value = "";
      if (!given) return;
      sessionStorage.setItem(KEY, given);
      open();
    });
    $("logout").addEventListener("click", () => refused("Token forgotten."));
    // A link with another token opened in this tab changes only the fragment: no reload.
    window.addEventListener("hashchange", () => {
      if (takeFragmentToken()) open();
    });
    if (token()) open();
    else showLogin("");
  }

  window.shoal = { el, bytes, rate, ago, status, refused, start, token };
})();
