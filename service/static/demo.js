// The nextclick demo page: plain JavaScript over the public HTTP API (docs/api.md).
// Two models side by side on the same clicks, a catalogue with titles (GET /catalog),
// and a user's start-of-session list next to the anonymous one.
"use strict";

const K = 10;
const USERS = ["alice", "bob", "carol"];
const $ = (selector) => document.querySelector(selector);

const state = {
  models: [],            // from GET /models: [{name, version, ...}]
  user: "",              // "" = anonymous
  session: "",
  clicks: [],            // item ids of this session, in click order
  events: 0,
  titles: new Map(),     // model name -> Map(item id -> {title, category})
  titled: new Map(),     // model name -> whether its bundle has a catalogue
  lastPersonal: new Map(), // "user@model" -> item ids of the last personalised list shown
  history: new Map(),    // user -> titles of the sessions ended on this page, oldest first
  recommendationIds: false, // the API takes recommendation_id on events (from /openapi.json)
};

const panes = ["a", "b"].map((id) => ({
  id, el: document.getElementById(`pane-${id}`), model: "", recommendationId: null,
}));

// ---- HTTP ------------------------------------------------------------------------------
class ApiFailure extends Error {
  constructor(where, status, code, message) {
    super(message);
    this.where = where; this.status = status; this.code = code;
  }
  describe() {
    const status = this.status ? `${this.status} ` : "";
    return `${this.where}: ${status}${this.code}: ${this.message}`;
  }
}

async function api(method, path, body) {
  const headers = {};
  if (body !== undefined) headers["content-type"] = "application/json";
  const key = $("#api-key").value.trim();
  if (key) headers["X-API-Key"] = key;
  const where = `${method} /${path.split("?")[0]}`;
  const started = performance.now();
  let response;
  try {
    response = await fetch(path, {
      method, headers, body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch (error) {
    throw new ApiFailure(where, 0, "unreachable", "the service did not answer");
  }
  const ms = performance.now() - started;
  let data = null;
  if (response.status !== 204) {
    try { data = await response.json(); } catch (error) { data = null; }
  }
  if (!response.ok) {
    const failure = data && data.error ? data.error
      : { code: `http_${response.status}`, message: response.statusText || "request failed" };
    throw new ApiFailure(where, response.status, failure.code, failure.message);
  }
  return { data, ms };
}

const enc = encodeURIComponent;

// Every user action runs after the previous one has finished, so lists never mix the
// answers of two actions; <body data-busy> says whether any is still running.
let chain = Promise.resolve();
let queued = 0;

function run(action) {
  queued += 1;
  document.body.dataset.busy = "true";
  chain = chain.then(action).catch(showError).finally(() => {
    queued -= 1;
    if (queued === 0) document.body.dataset.busy = "false";
  });
  return chain;
}

function showError(error) {
  const text = error instanceof ApiFailure ? error.describe() : String(error);
  $("#error-text").textContent = text;
  $("#error").hidden = false;
  if (error instanceof ApiFailure && error.status === 401) {
    $("#error-text").textContent += " (enter the API key at the top right)";
  }
}

function clearError() { $("#error").hidden = true; $("#error-text").textContent = ""; }

function note(text) { $("#note").textContent = text; }

// ---- titles ------------------------------------------------------------------------------
function titlesOf(model) {
  if (!state.titles.has(model)) state.titles.set(model, new Map());
  return state.titles.get(model);
}

async function ensureTitles(model, ids) {
  const known = titlesOf(model);
  const missing = [...new Set(ids)].filter((id) => !known.has(id));
  for (let start = 0; start < missing.length; start += 100) {
    const chunk = missing.slice(start, start + 100);
    try {
      const { data } = await api("GET", `catalog?model=${enc(model)}&ids=${chunk.map(enc).join(",")}`);
      state.titled.set(model, data.titled);
      for (const item of data.items) known.set(item.item_id, item);
    } catch (error) {
      // titles are a nicety: the lists still show item ids
      for (const id of chunk) known.set(id, { item_id: id, title: null, category: null });
    }
  }
}

function describe(model, id) {
  return titlesOf(model).get(id) || { item_id: id, title: null, category: null };
}

// ---- rendering -----------------------------------------------------------------------------
function itemNode(info, options = {}) {
  const li = document.createElement("li");
  const button = document.createElement("button");
  button.type = "button";
  button.className = "item";
  button.dataset.itemId = info.item_id;
  if (options.rank !== undefined) {
    const rank = document.createElement("span");
    rank.className = "rank";
    rank.textContent = String(options.rank);
    button.append(rank);
  }
  const text = document.createElement("span");
  text.className = "text";
  const title = document.createElement("span");
  title.className = "title";
  title.textContent = info.title || info.item_id;
  text.append(title);
  const sub = document.createElement("span");
  sub.className = "sub";
  const parts = [];
  if (info.category) parts.push(info.category);
  if (info.title) parts.push(info.item_id);
  sub.textContent = parts.join(" · ");
  text.append(sub);
  button.append(text);
  const badges = document.createElement("span");
  badges.className = "badges";
  for (const [flag, label, cls] of [
    [options.seen, "clicked", "seen"], [options.fresh, "new", "fresh"],
    [options.personal, "for you", "personal"]]) {
    if (flag) {
      const badge = document.createElement("span");
      badge.className = `badge ${cls}`;
      badge.textContent = label;
      badges.append(badge);
    }
  }
  if (options.score !== undefined) {
    const score = document.createElement("span");
    score.className = "score";
    const value = Number(options.score);
    // counts as whole numbers, model scores and relative popularity with 3 decimals
    score.textContent = Number.isInteger(value) && Math.abs(value) >= 2
      ? value.toLocaleString() : value.toFixed(3);
    score.title = "score";
    badges.append(score);
  }
  button.append(badges);
  if (options.onClick) button.addEventListener("click", options.onClick);
  else button.disabled = true;
  li.append(button);
  return li;
}

function renderList(list, model, recommendations, extra = () => ({})) {
  list.replaceChildren(...recommendations.map((rec, index) => itemNode(
    describe(model, rec.item_id),
    { rank: index + 1, score: rec.score, seen: state.clicks.includes(rec.item_id), ...extra(rec) })));
}

function sourceLabel(source) {
  return { session: "from this session", user: "from the user's memory",
           start: "start for a new user", popular: "popular items" }[source] || source || "";
}

function setMeta(root, data, ms) {
  root.querySelector(".source").textContent = data ? sourceLabel(data.source) : "";
  root.querySelector(".source").dataset.source = data ? data.source || "" : "";
  root.querySelector(".latency").textContent = ms === undefined ? "" : `${ms.toFixed(0)} ms`;
}

function renderPane(pane, data, ms) {
  const el = pane.el;
  el.querySelector(".pane-error").hidden = true;
  setMeta(el, data, ms);
  let outcome = "";
  if (data.accepted) outcome = "click recorded";
  else if (data.duplicates) outcome = "same event: already recorded";
  el.querySelector(".outcome").textContent = outcome;
  const unknown = Array.isArray(data.unknown_items) ? data.unknown_items : [];
  const unknownBox = el.querySelector(".unknown");
  unknownBox.hidden = unknown.length === 0;
  unknownBox.textContent = unknown.length
    ? `Not in ${data.model.name}'s catalogue (recorded, but it does not move this model): `
      + unknown.map((item) => (typeof item === "string" ? item : item.item_id)).join(", ")
    : "";
  pane.recommendationId = data.recommendation_id || null;
  renderList(el.querySelector(".recs"), pane.model, data.recommendations, (rec) => ({
    onClick: () => run(() => clickItem(rec.item_id, pane.recommendationId)) }));
}

function failPane(pane, error) {
  const el = pane.el;
  el.querySelector(".recs").replaceChildren();  // a stale list would look like an answer
  el.querySelector(".unknown").hidden = true;
  setMeta(el, null, undefined);
  el.querySelector(".outcome").textContent = "";
  const box = el.querySelector(".pane-error");
  box.hidden = false;
  box.textContent = error instanceof ApiFailure ? error.describe() : String(error);
  showError(error);
}

async function paneRequest(pane, method, path, body) {
  pane.el.classList.add("loading");
  try {
    const { data, ms } = await api(method, path, body);
    await ensureTitles(pane.model, data.recommendations.map((rec) => rec.item_id));
    renderPane(pane, data, ms);
    return data;
  } catch (error) {
    failPane(pane, error);
    return null;
  } finally {
    pane.el.classList.remove("loading");
  }
}

// ---- the session -----------------------------------------------------------------------------
function newSession() {
  state.session = `demo-${Math.random().toString(36).slice(2, 10)}`;
  state.clicks = [];
  state.events = 0;
  $("#session-id").textContent = state.session;
  renderTrail();
}

function renderTrail() {
  const trail = $("#trail");
  $("#session-count").textContent = `${state.clicks.length} click${state.clicks.length === 1 ? "" : "s"}`
    + (state.user ? ` · ${state.user}` : " · anonymous");
  if (!state.clicks.length) {
    const empty = document.createElement("li");
    empty.className = "muted empty";
    empty.textContent = "nothing yet: pick an item from the catalogue or a list";
    trail.replaceChildren(empty);
    return;
  }
  trail.replaceChildren(...state.clicks.map((id) => {
    const info = describe(panes[0].model, id);
    const li = document.createElement("li");
    li.textContent = info.title || id;
    li.title = id;
    return li;
  }));
}

function excludeSeen() { return $("#exclude-seen").checked; }

async function clickItem(itemId, recommendationId) {
  clearError();
  note("");
  state.events += 1;
  // one event, sent to both models: the second request repeats its event_id (and its
  // timestamp), so the service records the click once and answers both models after it
  const event = { item_id: itemId, event_id: `${state.session}-${state.events}`,
                  timestamp: Date.now() / 1000 };
  if (state.user) event.user_id = state.user;
  if (recommendationId && state.recommendationIds) event.recommendation_id = recommendationId;
  let recorded = false;
  for (const pane of panes) {
    const query = new URLSearchParams({ k: K, model: pane.model, exclude_seen: excludeSeen() });
    const path = `sessions/${enc(state.session)}/events?${query}`;
    recorded = (await paneRequest(pane, "POST", path, event)) !== null || recorded;
  }
  if (recorded) {
    state.clicks.push(itemId);
    await ensureTitles(panes[0].model, [itemId]);
  }
  renderTrail();
  for (const pane of panes) markSeen(pane.el.querySelector(".recs"));
}

function markSeen(list) {
  for (const button of list.querySelectorAll("button.item")) {
    const seen = state.clicks.includes(button.dataset.itemId);
    const badges = button.querySelector(".badges");
    if (seen && !badges.querySelector(".seen")) {
      const badge = document.createElement("span");
      badge.className = "badge seen";
      badge.textContent = "clicked";
      badges.prepend(badge);
    }
  }
}

function describeModel(pane) {
  // the test-set accuracy recorded at export, when /models carries it
  const model = state.models.find((entry) => entry.name === pane.model) || {};
  const metrics = model.accuracy || model.metrics || {};
  const parts = [];
  if (typeof metrics["recall@20"] === "number") parts.push(`Recall@20 ${(100 * metrics["recall@20"]).toFixed(1)}%`);
  if (typeof metrics["mrr@20"] === "number") parts.push(`MRR@20 ${metrics["mrr@20"].toFixed(3)}`);
  pane.el.querySelector(".model-note").textContent = parts.length
    ? `test set: ${parts.join(" · ")}` : "";
}

async function refreshPane(pane) {
  describeModel(pane);
  const query = new URLSearchParams({ k: K, model: pane.model });
  if (state.clicks.length) {
    query.set("session_id", state.session);
    query.set("exclude_seen", excludeSeen());
  } else if (state.user) {
    query.set("user_id", state.user);
  }
  await paneRequest(pane, "GET", `recommend?${query}`);
}

async function refreshMemory() {
  const model = $("#memory-model").value;
  const userList = $("#memory-user");
  const anonList = $("#memory-anon");
  let anonymous = null;
  try {
    const { data, ms } = await api("GET", `recommend?${new URLSearchParams({ k: K, model })}`);
    await ensureTitles(model, data.recommendations.map((rec) => rec.item_id));
    anonymous = data;
    renderList(anonList, model, data.recommendations);
    $("#memory-anon-source").textContent = sourceLabel(data.source);
    $("#memory-anon-latency").textContent = `${ms.toFixed(0)} ms`;
  } catch (error) {
    anonList.replaceChildren();
    $("#memory-anon-source").textContent = "";
    $("#memory-anon-latency").textContent = "";
    showError(error);
  }
  if (!state.user) {
    $("#memory-history").textContent = "";
    $("#memory-user-title").textContent = "Start of the next session for a user";
    userList.replaceChildren();
    $("#memory-user-source").textContent = "";
    $("#memory-user-latency").textContent = "";
    $("#memory-summary").textContent = "Anonymous visitors have no memory: pick a user above "
      + "to see the list the service keeps for them across sessions.";
    return;
  }
  $("#memory-user-title").textContent = `Start of the next session for ${state.user}`;
  const past = state.history.get(state.user) || [];
  $("#memory-history").textContent = past.length
    ? `${state.user}'s sessions ended on this page: `
      + past.map((titles, index) => `${index + 1}) ${titles.join(" → ")}`).join("   ")
    : "";
  try {
    const query = new URLSearchParams({ k: K, model, user_id: state.user });
    const { data, ms } = await api("GET", `recommend?${query}`);
    await ensureTitles(model, data.recommendations.map((rec) => rec.item_id));
    const key = `${state.user}@${model}`;
    const before = state.lastPersonal.get(key);
    const anonIds = new Set(anonymous ? anonymous.recommendations.map((rec) => rec.item_id) : []);
    const ids = data.recommendations.map((rec) => rec.item_id);
    renderList(userList, model, data.recommendations, (rec) => ({
      personal: anonymous !== null && !anonIds.has(rec.item_id),
      fresh: before !== undefined && !before.includes(rec.item_id) }));
    $("#memory-user-source").textContent = sourceLabel(data.source);
    $("#memory-user-latency").textContent = `${ms.toFixed(0)} ms`;
    const differs = ids.filter((id) => !anonIds.has(id)).length;
    const fresh = before === undefined ? 0 : ids.filter((id) => !before.includes(id)).length;
    let summary;
    if (data.source === "popular") {
      summary = `${model} keeps no memory of users: ${state.user}'s start list is the anonymous one. `
        + "Choose a model with user state (e.g. hrnn-init) to see memory at work.";
    } else if (data.source === "start") {
      summary = `${model} has no history of ${state.user} yet, so her list is its start for a new `
        + "user. Click a few items and end the session to give it one.";
    } else {
      summary = `${state.user}'s start list shares ${ids.length - differs} of ${ids.length} items `
        + "with the anonymous one";
      summary += before === undefined ? "." : `; ${fresh} item${fresh === 1 ? " is" : "s are"} new since it was last shown.`;
    }
    $("#memory-summary").textContent = summary;
    state.lastPersonal.set(key, ids);
  } catch (error) {
    userList.replaceChildren();
    $("#memory-user-source").textContent = "";
    $("#memory-user-latency").textContent = "";
    $("#memory-summary").textContent = "";
    showError(error);
  }
}

async function refreshAll() {
  for (const pane of panes) await refreshPane(pane);
  await refreshMemory();
}

async function endSession() {
  clearError();
  if (!state.clicks.length) {
    note("Nothing to end yet: this session has no clicks.");
    return;
  }
  try {
    await api("POST", `sessions/${enc(state.session)}/end`);
    note(state.user ? `Session ended and folded into ${state.user}'s memory.` : "Session ended.");
    if (state.user) {
      const titles = state.clicks.map((id) => describe(panes[0].model, id).title || id);
      state.history.set(state.user, [...(state.history.get(state.user) || []), titles]);
    }
  } catch (error) {
    showError(error);
  }
  newSession();
  await refreshAll();
}

async function switchUser(user) {
  state.user = user;
  for (const button of document.querySelectorAll("#users button")) {
    button.setAttribute("aria-pressed", String(button.dataset.user === user));
  }
  clearError();
  note("");
  newSession();
  await refreshAll();
}

function renderUsers() {
  const box = $("#users");
  box.replaceChildren(...["", ...USERS].map((user) => {
    const button = document.createElement("button");
    button.type = "button";
    button.dataset.user = user;
    button.textContent = user || "anonymous";
    button.setAttribute("aria-pressed", String(user === state.user));
    button.addEventListener("click", () => run(() => switchUser(user)));
    return button;
  }));
}

// ---- catalogue ---------------------------------------------------------------------------------
let searchTimer = null;

async function loadCatalog() {
  const model = panes[0].model;
  const q = $("#search").value.trim();
  const query = new URLSearchParams({ model, limit: 40 });
  if (q) query.set("q", q);
  try {
    const { data } = await api("GET", `catalog?${query}`);
    state.titled.set(model, data.titled);
    const known = titlesOf(model);
    for (const item of data.items) known.set(item.item_id, item);
    $("#catalog").replaceChildren(...data.items.map((item) => itemNode(item, {
      seen: state.clicks.includes(item.item_id),
      onClick: () => run(() => clickItem(item.item_id, null)) })));
    const what = q ? `${data.total.toLocaleString()} match${data.total === 1 ? "" : "es"}`
      : `${data.total.toLocaleString()} items, most popular first`;
    $("#catalog-note").textContent = data.titled ? what : `${what} · no titles in this bundle`;
  } catch (error) {
    $("#catalog").replaceChildren();
    $("#catalog-note").textContent = "";
    showError(error);
  }
}

// ---- start -------------------------------------------------------------------------------------
function fillSelect(select, chosen) {
  select.replaceChildren(...state.models.map((model) => {
    const option = document.createElement("option");
    option.value = model.name;
    option.textContent = `${model.name} @ ${model.version}`;
    return option;
  }));
  select.value = chosen;
}

function hasEventWithRecommendationId(node) {
  // any schema in the OpenAPI document (inline or in components) describing an event
  // that carries a recommendation_id
  if (!node || typeof node !== "object") return false;
  const properties = node.properties;
  if (properties && typeof properties === "object"
      && "item_id" in properties && "recommendation_id" in properties) return true;
  return Object.values(node).some(hasEventWithRecommendationId);
}

async function detectRecommendationIds() {
  try {
    const response = await fetch("openapi.json");
    state.recommendationIds = hasEventWithRecommendationId(await response.json());
  } catch (error) {
    state.recommendationIds = false;
  }
}

async function start() {
  clearError();
  let data;
  try {
    ({ data } = await api("GET", "models"));
  } catch (error) {
    showError(error);
    return;
  }
  state.models = data.models || [];
  if (!state.models.length) {
    showError(new Error("the service has no models loaded"));
    return;
  }
  const names = state.models.map((model) => model.name);
  const first = names.includes(data.default) ? data.default : names[0];
  const second = names.find((name) => name !== first) || first;
  panes[0].model = first;
  panes[1].model = second;
  panes.forEach((pane) => fillSelect(pane.el.querySelector(".model-select"), pane.model));
  // the memory lists are worth watching on a model that keeps user state
  const remembering = [first, second, ...names].find((name) => {
    const model = state.models.find((entry) => entry.name === name);
    return model && model.user_state === true;
  });
  fillSelect($("#memory-model"), remembering || first);
  if (first === second) note("Only one model is loaded: both panes show it.");
  await detectRecommendationIds();
  await loadCatalog();
  await refreshAll();
}

document.addEventListener("DOMContentLoaded", () => {
  const key = $("#api-key");
  key.value = localStorage.getItem("nextclick-demo-key") || "";
  key.addEventListener("change", () => {
    localStorage.setItem("nextclick-demo-key", key.value.trim());
    run(start);
  });
  $("#error-close").addEventListener("click", clearError);
  $("#end-session").addEventListener("click", () => run(endSession));
  $("#exclude-seen").addEventListener("change", () => run(async () => {
    for (const pane of panes) await refreshPane(pane);
  }));
  $("#search").addEventListener("input", () => {
    clearTimeout(searchTimer);
    searchTimer = setTimeout(() => run(loadCatalog), 200);
  });
  $("#user-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const user = $("#user-new").value.trim();
    if (!/^[A-Za-z0-9._:@-]{1,64}$/.test(user)) {
      showError(new Error("a user id uses letters, digits and . _ : @ - only"));
      return;
    }
    if (!USERS.includes(user)) USERS.push(user);
    $("#user-new").value = "";
    renderUsers();
    run(() => switchUser(user));
  });
  panes.forEach((pane) => {
    pane.el.querySelector(".model-select").addEventListener("change", (event) => run(async () => {
      pane.model = event.target.value;
      if (pane === panes[0]) await loadCatalog();
      await refreshPane(pane);
    }));
  });
  $("#memory-model").addEventListener("change", () => run(refreshMemory));
  renderUsers();
  newSession();
  run(start);
});
