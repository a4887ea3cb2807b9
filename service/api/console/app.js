// tuneserve console: a static app over the public HTTP API. It signs in with an API key (kept in this tab's
// sessionStorage only) and sees exactly what that key's tenant sees. No build step, no library, no HTML
// parsing: every element is made with `h`, so text from the API is never parsed as markup.

const KEY_NAME = "tuneserve.key";
const TERMINAL = new Set(["succeeded", "failed", "cancelled", "completed", "canceled", "expired"]);
const main = document.getElementById("main");
let key = sessionStorage.getItem(KEY_NAME);
let isAdmin = false;
let page = 0; // bumped on each navigation: a slow render or poll of an older page stops
const timers = [];

// ---------------------------------------------------------------------------------------------- helpers

function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith("on")) el.addEventListener(name.slice(2), value);
    else if (name === "value") el.value = value;
    else el.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

class ApiError extends Error {
  constructor(status, error) {
    super(error.message || `HTTP ${status}`);
    this.status = status;
    this.param = error.param;
    this.code = error.code;
  }
}

async function api(path, { method = "GET", body, form, raw } = {}) {
  const headers = { Authorization: `Bearer ${key}` };
  let payload;
  if (form) payload = form;
  else if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    payload = JSON.stringify(body);
  }
  const resp = await fetch(path, { method, headers, body: payload });
  if (raw && resp.ok) return resp;
  const data = await resp.json().catch(() => ({}));
  if (!resp.ok) throw new ApiError(resp.status, data.error || {});
  return data;
}

async function all(path) {
  // Every page of a list endpoint (`after` cursors), oldest page last.
  const items = [];
  let after = null;
  for (;;) {
    const sep = path.includes("?") ? "&" : "?";
    const res = await api(`${path}${sep}limit=100${after ? `&after=${encodeURIComponent(after)}` : ""}`);
    items.push(...res.data);
    if (!res.has_more || !res.data.length) return items;
    after = res.data[res.data.length - 1].id;
  }
}

function when(seconds) {
  return seconds ? new Date(seconds * 1000).toLocaleString() : "";
}

function status(value) {
  return h("span", { class: `status ${value}` }, value);
}

function table(columns, rows, empty = "Nothing yet.") {
  if (!rows.length) return h("p", { class: "muted" }, empty);
  return h(
    "table",
    {},
    h("thead", {}, h("tr", {}, columns.map(([title]) => h("th", { scope: "col" }, title)))),
    h("tbody", {}, rows.map((row) => h("tr", {}, columns.map(([, cell]) => h("td", {}, cell(row)))))),
  );
}

function link(hash, text) {
  return h("a", { href: hash }, text);
}

function errorBox(id) {
  return h("p", { class: "error", id, role: "alert", "aria-live": "polite" });
}

// A form whose submit runs `action`; its error shows in the form (the API's message, field named).
function cardForm(title, fields, label, action) {
  const error = errorBox();
  const button = h("button", { type: "submit" }, label);
  const form = h("form", { class: "card", "aria-label": title }, fields, button, error);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    error.textContent = "";
    button.disabled = true;
    try {
      await action(form);
    } catch (exc) {
      error.textContent = exc.param ? `${exc.message} (${exc.param})` : exc.message;
    } finally {
      button.disabled = false;
    }
  });
  return form;
}

function field(label, input) {
  return h("label", {}, label, input);
}

// Upload with a progress bar (XHR: fetch reports no upload progress); resolves to the file object.
function uploadFile(file, purpose, bar) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    const form = new FormData();
    form.append("purpose", purpose);
    form.append("file", file);
    xhr.open("POST", "/v1/files");
    xhr.setRequestHeader("Authorization", `Bearer ${key}`);
    xhr.upload.onprogress = (e) => {
      if (bar && e.lengthComputable) bar.value = e.loaded / e.total;
    };
    xhr.onload = () => {
      const data = JSON.parse(xhr.responseText || "{}");
      if (xhr.status === 200) resolve(data);
      else reject(new ApiError(xhr.status, data.error || {}));
    };
    xhr.onerror = () => reject(new Error("The upload failed: the service did not answer."));
    xhr.send(form);
  });
}

function every(seconds, fn) {
  const mine = page;
  const tick = async () => {
    if (mine !== page) return;
    try {
      if ((await fn()) === false) return; // done: stop polling
    } catch (exc) {
      console.warn(exc);
    }
    if (mine === page) timers.push(setTimeout(tick, seconds * 1000));
  };
  timers.push(setTimeout(tick, seconds * 1000));
}

// Replace `el`'s children with `nodes` (nested lists flattened; null, undefined and false left out, where
// the DOM's own replaceChildren would write them as text).
function fill(el, ...nodes) {
  el.replaceChildren(...nodes.flat(Infinity).filter((n) => n !== null && n !== undefined && n !== false));
}

function show(...nodes) {
  fill(main, ...nodes);
}

async function models() {
  // Language models only: the embedder (`type` embeddings) answers /v1/embeddings, not chat or training.
  return (await api("/v1/models")).data.filter((m) => m.type !== "embeddings");
}

function modelSelect(list, selected, attrs = {}) {
  const ids = list.map((m) => m.id);
  if (selected && !ids.includes(selected)) ids.unshift(selected); // a checkpoint, which lists leave out
  return h("select", attrs, ids.map((id) => h("option", { value: id, selected: id === selected }, id)));
}

// ------------------------------------------------------------------------------------------ sign in/out

function signInPage(message) {
  document.getElementById("nav").hidden = true;
  document.getElementById("sign-out").hidden = true;
  document.getElementById("who").textContent = "";
  const input = h("input", { type: "password", name: "key", autocomplete: "off", required: true, id: "api-key" });
  const form = cardForm(
    "Sign in",
    [field("API key", input)],
    "Sign in",
    async () => {
      key = input.value.trim();
      try {
        await api("/v1/models");
      } catch (exc) {
        key = null;
        if (exc.status === 401 || exc.status === 403) throw new Error(`That key was refused: ${exc.message}`);
        throw exc;
      }
      sessionStorage.setItem(KEY_NAME, key);
      await start();
    },
  );
  show(
    h("h1", {}, "Sign in"),
    h("p", { class: "muted" }, "Your API key stays in this browser tab and is sent only to this service."),
    message ? h("p", { class: "error", role: "alert" }, message) : null,
    form,
  );
  input.focus();
}

function signOut() {
  sessionStorage.removeItem(KEY_NAME);
  key = null;
  isAdmin = false;
  page++;
  signInPage("Signed out.");
}

async function start() {
  try {
    await api("/v1/models");
  } catch (exc) {
    key = null;
    sessionStorage.removeItem(KEY_NAME);
    return signInPage(exc.status === 401 ? "Your key is no longer valid; sign in again." : exc.message);
  }
  isAdmin = await api("/v1/admin/api_keys").then(() => true, () => false);
  document.getElementById("nav").hidden = false;
  document.getElementById("nav-admin").hidden = !isAdmin;
  document.getElementById("sign-out").hidden = false;
  document.getElementById("who").textContent = isAdmin ? "admin key" : "tenant key";
  if (!location.hash || location.hash === "#/") location.hash = "#/jobs";
  else route();
}

// ---------------------------------------------------------------------------------------- fine-tuning

async function jobsPage(params) {
  const [jobs, bases] = await Promise.all([all("/v1/fine_tuning/jobs"), models()]);
  const given = params.get("training_file"); // a file already in the service (stored chats' export)
  const file = h("input", { type: "file", name: "training_file", accept: ".jsonl", required: !given });
  const bar = h("progress", { value: 0, max: 1, "aria-label": "Upload progress" });
  const epochs = h("input", { type: "number", name: "n_epochs", min: 1, max: 100, placeholder: "auto" });
  const suffix = h("input", { name: "suffix", maxlength: 40, placeholder: "optional" });
  const model = modelSelect(bases, bases[0]?.id, { name: "model" });
  const method = h("select", { name: "method" },
    h("option", { value: "supervised" }, "Supervised (chat or prompt/completion)"),
    h("option", { value: "dpo" }, "DPO (preference pairs)"),
  );
  const form = cardForm(
    "Start a job",
    [
      given ? h("p", {}, "Training file: ", h("code", {}, given), " (or choose another below)") : null,
      field("Training data (JSONL)", file), bar, field("Model", model), field("Method", method), field("Suffix", suffix), field("Epochs", epochs),
    ],
    "Start",
    async () => {
      const uploaded = given && !file.files.length ? { id: given } : await uploadFile(file.files[0], "fine-tune", bar);
      const hyperparameters = epochs.value ? { n_epochs: Number(epochs.value) } : {};
      const body = {
        model: model.value,
        training_file: uploaded.id,
        method: { type: method.value, [method.value]: { hyperparameters } },
      };
      if (suffix.value) body.suffix = suffix.value;
      const job = await api("/v1/fine_tuning/jobs", { method: "POST", body });
      location.hash = `#/jobs/${job.id}`;
    },
  );
  show(
    h("h1", {}, "Fine-tuning"),
    h("h2", {}, "Start a job"),
    form,
    h("h2", {}, "Jobs"),
    table(
      [
        ["Job", (j) => link(`#/jobs/${j.id}`, j.id)],
        ["Model", (j) => j.model],
        ["Status", (j) => status(j.status)],
        ["Fine-tuned model", (j) => j.fine_tuned_model || ""],
        ["Created", (j) => when(j.created_at)],
      ],
      jobs,
      "No jobs yet: start one above.",
    ),
  );
}

function lossChart(metrics) {
  const W = 760, H = 300, L = 48, R = 12, T = 12, B = 32;
  const train = metrics.filter((m) => m.train_loss !== undefined).map((m) => [m.step, m.train_loss]);
  const valid = metrics.filter((m) => m.valid_loss !== undefined).map((m) => [m.step, m.valid_loss]);
  const points = [...train, ...valid];
  const svg = (tag, attrs, ...kids) => {
    const el = document.createElementNS("http://www.w3.org/2000/svg", tag);
    for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
    el.append(...kids.map((k) => (k instanceof Node ? k : document.createTextNode(String(k)))));
    return el;
  };
  const chart = svg("svg", {
    class: "chart",
    viewBox: `0 0 ${W} ${H}`,
    role: "img",
    "aria-label": `Loss curve: ${train.length} training points, ${valid.length} validation points`,
    "data-train-points": train.length,
    "data-valid-points": valid.length,
  });
  if (!points.length) {
    chart.append(svg("text", { x: L, y: H / 2 }, "Waiting for the first step…"));
    return chart;
  }
  const maxStep = Math.max(...points.map((p) => p[0]), 1);
  const maxLoss = Math.max(...points.map((p) => p[1]));
  const minLoss = Math.min(0, ...points.map((p) => p[1]));
  const x = (s) => L + ((W - L - R) * (s - 0)) / maxStep;
  const y = (v) => T + ((H - T - B) * (maxLoss - v)) / (maxLoss - minLoss || 1);
  chart.append(
    svg("line", { class: "axis", x1: L, y1: H - B, x2: W - R, y2: H - B }),
    svg("line", { class: "axis", x1: L, y1: T, x2: L, y2: H - B }),
    svg("text", { x: 4, y: T + 10 }, maxLoss.toFixed(2)),
    svg("text", { x: 4, y: H - B }, minLoss.toFixed(2)),
    svg("text", { x: W - R - 60, y: H - 8 }, `step ${maxStep}`),
  );
  for (const [cls, series] of [["train", train], ["valid", valid]]) {
    if (!series.length) continue;
    const d = series.map(([s, v]) => `${x(s).toFixed(1)},${y(v).toFixed(1)}`).join(" ");
    chart.append(svg("polyline", { class: cls, points: d, fill: "none", "stroke-width": 2 }));
  }
  return chart;
}

async function jobPage(id) {
  const mine = page;
  const events = new Map(); // id -> event, gathered once then polled newest first
  for (const e of await all(`/v1/fine_tuning/jobs/${id}/events`)) events.set(e.id, e);
  const parts = {
    head: h("div"),
    chart: h("div"),
    checkpoints: h("div"),
    events: h("div"),
    error: errorBox("job-error"),
  };
  const act = (path) => async () => {
    parts.error.textContent = "";
    try {
      await api(path, { method: "POST" });
      await refresh();
    } catch (exc) {
      parts.error.textContent = exc.message;
    }
  };
  async function refresh() {
    const job = await api(`/v1/fine_tuning/jobs/${id}`);
    for (const e of (await api(`/v1/fine_tuning/jobs/${id}/events?limit=100`)).data) events.set(e.id, e);
    const checkpoints = (await api(`/v1/fine_tuning/jobs/${id}/checkpoints?limit=100`)).data;
    if (mine !== page) return false;
    const ordered = [...events.values()].sort((a, b) => a.created_at - b.created_at || (a.id < b.id ? -1 : 1));
    const metrics = ordered.filter((e) => e.type === "metrics").map((e) => e.data);
    const hp = job.hyperparameters || {};
    fill(parts.head,
      h("p", {}, "Status: ", status(job.status), job.fine_tuned_model ? [" — model ", playLink(job.fine_tuned_model)] : null),
      job.error?.message ? h("p", { class: "error" }, job.error.message) : null,
      h("div", { class: "row" },
        h("div", {}, table([["Setting", (r) => r[0]], ["Value", (r) => String(r[1])]], [
          ["base model", job.model],
          ["epochs", hp.n_epochs],
          ["batch size", hp.batch_size],
          ["learning rate multiplier", hp.learning_rate_multiplier],
          ["trained tokens", job.trained_tokens ?? ""],
          ["training file", job.training_file],
          ["validation file", job.validation_file || "none"],
        ])),
      ),
      h("div", {},
        ["running", "queued", "validating_files", "paused"].includes(job.status)
          ? h("button", { type: "button", class: "plain", onclick: act(`/v1/fine_tuning/jobs/${id}/cancel`) }, "Cancel") : null,
        job.status === "running" ? h("button", { type: "button", class: "plain", onclick: act(`/v1/fine_tuning/jobs/${id}/pause`) }, "Pause") : null,
        job.status === "paused" ? h("button", { type: "button", class: "plain", onclick: act(`/v1/fine_tuning/jobs/${id}/resume`) }, "Resume") : null,
      ),
    );
    fill(parts.chart,
      lossChart(metrics),
      h("p", {}, h("span", { class: "legend-train" }, "— training loss "), h("span", { class: "legend-valid" }, "— validation loss")),
    );
    fill(parts.checkpoints, table(
      [
        ["Step", (c) => c.step_number],
        ["Validation loss", (c) => c.metrics?.valid_loss?.toFixed?.(4) ?? ""],
        ["Model", (c) => playLink(c.fine_tuned_model_checkpoint)],
      ],
      checkpoints,
      "No checkpoints yet.",
    ));
    fill(parts.events, table(
      [["Time", (e) => when(e.created_at)], ["Level", (e) => e.level], ["Message", (e) => e.message]],
      ordered.filter((e) => e.type !== "metrics").reverse().slice(0, 50),
    ));
    return !TERMINAL.has(job.status);
  }
  show(
    h("h1", {}, `Job ${id}`),
    parts.error,
    parts.head,
    h("h2", {}, "Loss"),
    parts.chart,
    h("h2", {}, "Checkpoints"),
    parts.checkpoints,
    h("h2", {}, "Events"),
    parts.events,
  );
  if (await refresh()) every(2, refresh);
}

function playLink(model) {
  return h("a", { href: `#/playground?model=${encodeURIComponent(model)}` }, model);
}

// ----------------------------------------------------------------------------------------- playground

async function readImage(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.onerror = () => reject(new Error("The image could not be read."));
    reader.readAsDataURL(file);
  });
}

async function stream(body, out, cites) {
  const resp = await api("/v1/chat/completions", { method: "POST", body: { ...body, stream: true }, raw: true });
  const reader = resp.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const event = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      for (const line of event.split("\n")) {
        if (!line.startsWith("data: ") || line === "data: [DONE]") continue;
        const chunk = JSON.parse(line.slice(6));
        if (chunk.error) throw new Error(chunk.error.message);
        if (chunk.citations) fill(cites, citationList(chunk.citations));
        for (const choice of chunk.choices || []) out.append(choice.delta?.content || "");
      }
    }
  }
}

function citationList(citations) {
  return h("ol", { "aria-label": "Citations" }, citations.map((c) =>
    h("li", {}, h("strong", {}, c.filename), ` (score ${c.score.toFixed(3)}): `, h("span", { class: "muted" }, c.text.slice(0, 240)))));
}

async function playgroundPage(params) {
  const [list, stores] = await Promise.all([models(), api("/v1/vector_stores?limit=100")]);
  const wanted = params.get("model") || list[0]?.id;
  const first = modelSelect(list, wanted, { name: "model" });
  const second = modelSelect(list, list[0]?.id, { name: "compare_model", "aria-label": "Second model" });
  const compare = h("input", { type: "checkbox", name: "compare" });
  const system = h("textarea", { name: "system", rows: 2, placeholder: "optional" });
  const prompt = h("textarea", { name: "prompt", rows: 4, required: true });
  const temperature = h("input", { type: "number", name: "temperature", min: 0, max: 2, step: 0.1, value: "0.7" });
  const maxTokens = h("input", { type: "number", name: "max_tokens", min: 1, max: 4096, value: "256" });
  const topP = h("input", { type: "number", name: "top_p", min: 0, max: 1, step: 0.05, value: "1" });
  const image = h("input", { type: "file", name: "image", accept: "image/png,image/jpeg,image/webp" });
  const keep = h("input", { type: "checkbox", name: "store" });
  const retrieval = h("select", { name: "vector_stores", multiple: true, size: Math.min(4, stores.data.length || 1) },
    stores.data.map((s) => h("option", { value: s.id }, s.name || s.id)));
  const answers = h("div", { class: "row" });
  const takesImages = (id) => (list.find((m) => m.id === id)?.modalities || ["text"]).includes("image");
  const form = cardForm(
    "Playground",
    [
      field("Model", first),
      h("div", {}, h("label", { class: "inline" }, compare, " Compare with"), second),
      field("Temperature", temperature),
      field("Max tokens", maxTokens),
      field("Top p", topP),
      field("Vector stores (retrieval)", retrieval),
      field("Image (vision models)", image),
      h("label", { class: "inline" }, keep, " Keep these chats (Stored chats: to review, evaluate or train on)"),
      h("div", { class: "wide" }, field("System prompt", system), field("Message", prompt)),
    ],
    "Send",
    async () => {
      const chosen = compare.checked ? [first.value, second.value] : [first.value];
      const content = [{ type: "text", text: prompt.value }];
      const imageFile = image.files[0];
      const picture = imageFile ? await readImage(imageFile) : null;
      const messages = (model) => [
        ...(system.value ? [{ role: "system", content: system.value }] : []),
        { role: "user", content: picture && takesImages(model) ? [{ type: "image_url", image_url: { url: picture } }, ...content] : prompt.value },
      ];
      const selected = [...retrieval.selectedOptions].map((o) => o.value);
      fill(answers);
      await Promise.all(chosen.map(async (model) => {
        const out = h("div", { class: "answer", "aria-live": "polite", "aria-busy": "true", "data-model": model });
        const cites = h("div");
        const error = h("p", { class: "error" });
        answers.append(h("section", {}, h("h2", {}, model), out, cites, error));
        const body = {
          model,
          messages: messages(model),
          temperature: Number(temperature.value),
          max_tokens: Number(maxTokens.value),
          top_p: Number(topP.value),
        };
        if (selected.length) body.retrieval = { vector_store_ids: selected };
        if (keep.checked) Object.assign(body, { store: true, metadata: { source: "playground" } });
        try {
          await stream(body, out, cites);
        } catch (exc) {
          error.textContent = exc.message;
        } finally {
          out.setAttribute("aria-busy", "false"); // the answer is whole (tests wait on it too)
        }
      }));
    },
  );
  show(h("h1", {}, "Playground"), form, answers);
}

// -------------------------------------------------------------------------------------- stored chats

// The chat completions kept with `store: true` (the playground's "Keep" too), filtered by model and
// metadata, and made into a fine-tuning file: a stronger model's answers teach a smaller one.
async function chatsPage(params) {
  const list = await models();
  const query = new URLSearchParams({ order: "desc" });
  const wanted = params.get("model") || "";
  const pair = params.get("metadata") || "";
  if (wanted) query.set("model", wanted);
  const [mkey, ...rest] = pair.split("=");
  if (pair && rest.length) query.set(`metadata[${mkey}]`, rest.join("="));
  const chats = await all(`/v1/chat/completions?${query}`);
  const model = h("select", { name: "model" }, h("option", { value: "" }, "any model"),
    list.map((m) => h("option", { value: m.id, selected: m.id === wanted }, m.id)));
  const metadata = h("input", { name: "metadata", placeholder: "KEY=VALUE", value: pair });
  const filter = cardForm("Which chats", [field("Model", model), field("Metadata", metadata)], "Show", async () => {
    const next = new URLSearchParams();
    if (model.value) next.set("model", model.value);
    if (metadata.value) next.set("metadata", metadata.value);
    location.hash = `#/chats?${next}`;
  });
  const made = h("p", { "aria-live": "polite" });
  const exportForm = cardForm("Make a training file", [made], "Make a training file", async () => {
    const body = { filename: "stored-chats.jsonl" };
    if (wanted) body.model = wanted;
    if (pair && rest.length) body.metadata = { [mkey]: rest.join("=") };
    const file = await api("/v1/chat/completions/export", { method: "POST", body });
    fill(made, `${file.file_id}: ${file.exported} chat${file.exported === 1 ? "" : "s"}`, file.skipped ? ` (${file.skipped} cut off, left out)` : "", " ",
      link(`#/jobs?training_file=${encodeURIComponent(file.file_id)}`, "Fine-tune on it"));
  });
  const answer = (c) => {
    const message = c.choices?.[0]?.message || {};
    return (message.content || "").slice(0, 120) || (message.tool_calls ? "(tool calls)" : "");
  };
  show(
    h("h1", {}, "Stored chats"),
    h("p", { class: "muted" }, "Chats kept with store: true (the playground's \"Keep\" too), newest first."),
    filter,
    table(
      [
        ["Created", (c) => when(c.created)],
        ["Model", (c) => c.model],
        ["Metadata", (c) => Object.entries(c.metadata || {}).map(([k, v]) => `${k}=${v}`).join(", ")],
        ["Answer", answer],
        ["Finish", (c) => c.choices?.[0]?.finish_reason || ""],
      ],
      chats,
      "No stored chats: send a chat with store: true, or tick Keep in the playground.",
    ),
    chats.length ? exportForm : null,
  );
}

// ------------------------------------------------------------------------------------------- batches

function batchProgress(b) {
  const c = b.request_counts || {};
  return `${(c.completed || 0) + (c.failed || 0)} of ${c.total || 0}` + (c.failed ? ` (${c.failed} failed)` : "");
}

async function batchesPage() {
  const batches = await all("/v1/batches");
  const file = h("input", { type: "file", name: "requests", accept: ".jsonl", required: true });
  const bar = h("progress", { value: 0, max: 1, "aria-label": "Upload progress" });
  const form = cardForm(
    "Run a batch",
    [field("Requests (JSONL: custom_id, method, url, body a line)", file), bar],
    "Run",
    async () => {
      // The endpoint is the first request's `url`; the API checks every line against it.
      const first = (await file.files[0].text()).split("\n").find((line) => line.trim());
      let endpoint;
      try {
        endpoint = JSON.parse(first).url;
      } catch {
        throw new Error("line 1 is not a JSON request ({\"custom_id\", \"method\", \"url\", \"body\"})");
      }
      const uploaded = await uploadFile(file.files[0], "batch", bar);
      const body = { input_file_id: uploaded.id, endpoint, completion_window: "24h" };
      const batch = await api("/v1/batches", { method: "POST", body });
      location.hash = `#/batches/${batch.id}`;
    },
  );
  show(
    h("h1", {}, "Batches"),
    h("p", { class: "muted" }, "Files of requests answered in the background, a few at a time beside interactive chats."),
    form,
    table(
      [
        ["Batch", (b) => link(`#/batches/${b.id}`, b.id)],
        ["Endpoint", (b) => b.endpoint],
        ["Status", (b) => status(b.status)],
        ["Answered", batchProgress],
        ["Created", (b) => when(b.created_at)],
      ],
      batches,
      "No batches yet.",
    ),
  );
}

async function batchPage(id) {
  const mine = page;
  const head = h("div");
  const error = errorBox("batch-error");
  const act = (fn) => async () => {
    error.textContent = "";
    try {
      await fn();
      await refresh();
    } catch (exc) {
      error.textContent = exc.message;
    }
  };
  async function refresh() {
    const b = await api(`/v1/batches/${id}`);
    if (mine !== page) return false;
    const u = b.usage || {};
    fill(head,
      h("p", {}, "Status: ", status(b.status), ` — ${batchProgress(b)} requests answered`, ` — ${u.total_tokens || 0} tokens`),
      (b.errors?.data || []).map((e) => h("p", { class: "error" }, e.message)),
      h("div", {},
        TERMINAL.has(b.status) || b.status === "cancelling"
          ? null
          : h("button", { type: "button", class: "plain", onclick: act(() => api(`/v1/batches/${id}/cancel`, { method: "POST" })) }, "Cancel"),
        b.output_file_id
          ? h("button", { type: "button", class: "plain", onclick: act(() => download(`/v1/files/${b.output_file_id}/content`, `${id}_output.jsonl`)) }, "Download answers")
          : null,
        b.error_file_id
          ? h("button", { type: "button", class: "plain", onclick: act(() => download(`/v1/files/${b.error_file_id}/content`, `${id}_errors.jsonl`)) }, "Download errors")
          : null,
      ),
    );
    return !TERMINAL.has(b.status);
  }
  show(h("h1", {}, `Batch ${id}`), error, head);
  if (await refresh()) every(2, refresh);
}

// -------------------------------------------------------------------------------------- vector stores

async function vectorStoresPage() {
  const stores = await all("/v1/vector_stores");
  const name = h("input", { name: "name", required: true, maxlength: 256 });
  show(
    h("h1", {}, "Vector stores"),
    cardForm("Create a vector store", [field("Name", name)], "Create", async () => {
      const store = await api("/v1/vector_stores", { method: "POST", body: { name: name.value } });
      location.hash = `#/vector-stores/${store.id}`;
    }),
    table(
      [
        ["Name", (s) => link(`#/vector-stores/${s.id}`, s.name || s.id)],
        ["Files", (s) => `${s.file_counts.completed} ready, ${s.file_counts.in_progress} in progress, ${s.file_counts.failed} failed`],
        ["Created", (s) => when(s.created_at)],
      ],
      stores,
      "No vector stores yet.",
    ),
  );
}

async function vectorStorePage(id) {
  const mine = page;
  const store = await api(`/v1/vector_stores/${id}`);
  const files = h("div");
  const uploads = h("div");
  const error = errorBox("upload-error");
  const picker = h("input", { type: "file", multiple: true, "aria-label": "Documents to add" });
  let polling = false;
  const drop = h("div", { class: "drop" }, "Drop documents here (PDF, HTML, DOCX, Markdown, text) or ", picker);
  async function add(list) {
    error.textContent = "";
    for (const file of list) {
      const bar = h("progress", { value: 0, max: 1, "aria-label": `Upload of ${file.name}` });
      uploads.append(h("p", {}, file.name, " ", bar));
      try {
        const uploaded = await uploadFile(file, "assistants", bar);
        await api(`/v1/vector_stores/${id}/files`, { method: "POST", body: { file_id: uploaded.id } });
      } catch (exc) {
        error.textContent = `${file.name}: ${exc.message}`;
      }
    }
    if ((await refresh()) && !polling) {
      polling = true;
      every(2, refresh);
    }
  }
  picker.addEventListener("change", () => add([...picker.files]));
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => { e.preventDefault(); drop.classList.remove("over"); add([...e.dataTransfer.files]); });
  async function refresh() {
    const list = await all(`/v1/vector_stores/${id}/files`);
    const names = new Map();
    await Promise.all(list.map(async (f) => names.set(f.id, (await api(`/v1/files/${f.id}`).catch(() => ({}))).filename)));
    if (mine !== page) return false;
    fill(files, table(
      [
        ["File", (f) => names.get(f.id) || f.id],
        ["Status", (f) => status(f.status)],
        ["Error", (f) => f.last_error?.message || ""],
      ],
      list,
      "No files yet.",
    ));
    return list.some((f) => f.status === "in_progress");
  }
  const query = h("input", { name: "query", required: true, "aria-label": "Search query" });
  const results = h("section", { "aria-label": "Search results" });
  show(
    h("h1", {}, `Vector store ${store.name || id}`),
    drop,
    uploads,
    error,
    h("h2", {}, "Files"),
    files,
    h("h2", {}, "Search"),
    cardForm("Search", [field("Query", query)], "Search", async () => {
      const res = await api(`/v1/vector_stores/${id}/search`, { method: "POST", body: { query: query.value } });
      fill(results, table(
        [
          ["Score", (r) => r.score.toFixed(3)],
          ["File", (r) => r.filename],
          ["Chunk", (r) => h("pre", {}, r.content.map((c) => c.text).join("\n"))],
        ],
        res.data,
        "No hits.",
      ));
    }),
    results,
  );
  if (await refresh()) {
    polling = true;
    every(2, refresh);
  }
}

// ---------------------------------------------------------------------------------------------- evals

function passRate(c) {
  const n = c.passed + c.failed;
  return n ? `${((100 * c.passed) / n).toFixed(1)} %` : "";
}

async function evalsPage() {
  const [evals, suites, list] = await Promise.all([all("/v1/evals"), api("/v1/evals/suites"), models()]);
  const model = modelSelect(list, list[0]?.id, { name: "model", "aria-label": "Model to evaluate" });
  const error = errorBox("suite-error");
  const runSuite = (name) => async () => {
    error.textContent = "";
    try {
      const ev = await api("/v1/evals", { method: "POST", body: { suite: name, name } });
      const run = await api(`/v1/evals/${ev.id}/runs`, { method: "POST", body: { data_source: { type: "completions", model: model.value } } });
      location.hash = `#/evals/${ev.id}/runs/${run.id}`;
    } catch (exc) {
      error.textContent = exc.message;
    }
  };
  show(
    h("h1", {}, "Evals"),
    h("h2", {}, "Built-in suites"),
    h("p", {}, field("Run on", model)),
    error,
    table(
      [
        ["Suite", (s) => s.name],
        ["About", (s) => s.description],
        ["Items", (s) => s.items],
        ["", (s) => h("button", { type: "button", onclick: runSuite(s.name), "data-suite": s.name }, `Run ${s.name}`)],
      ],
      suites.data,
    ),
    h("h2", {}, "Your evals"),
    table(
      [
        ["Eval", (e) => link(`#/evals/${e.id}`, e.name || e.id)],
        ["Criteria", (e) => (e.testing_criteria || []).map((c) => c.name).join(", ")],
        ["Created", (e) => when(e.created_at)],
      ],
      evals,
      "No evals yet.",
    ),
  );
}

async function evalPage(id) {
  const [ev, runs] = await Promise.all([api(`/v1/evals/${id}`), all(`/v1/evals/${id}/runs`)]);
  const picked = new Set();
  const comparison = h("div");
  const error = errorBox("compare-error");
  const compare = async () => {
    error.textContent = "";
    if (picked.size < 2) return (error.textContent = "Pick two runs or more to compare.");
    const query = [...picked].map((r) => `run_ids=${encodeURIComponent(r)}`).join("&");
    try {
      const c = await api(`/v1/evals/${id}/compare?${query}`);
      fill(comparison,
        table(
          [["Criterion", (r) => r.testing_criteria], ...c.runs.map((run, i) => [run.model, (r) => (r.pass_rate[i] === null ? "" : `${(100 * r.pass_rate[i]).toFixed(1)} %`)])],
          c.criteria,
        ),
        h("h2", {}, `${c.changed_items.length} item(s) changed status`),
        table(
          [["Item", (it) => it.datasource_item_id], ...c.runs.map((run, i) => [run.model, (it) => [status(it.status[i] || ""), " ", it.output_text[i] || ""]])],
          c.changed_items,
          "No item changed.",
        ),
      );
    } catch (exc) {
      error.textContent = exc.message;
    }
  };
  show(
    h("h1", {}, `Eval ${ev.name || id}`),
    table(
      [
        ["", (r) => h("input", { type: "checkbox", "aria-label": `Compare ${r.id}`, onchange: (e) => (e.target.checked ? picked.add(r.id) : picked.delete(r.id)) })],
        ["Run", (r) => link(`#/evals/${id}/runs/${r.id}`, r.name || r.id)],
        ["Model", (r) => r.model],
        ["Status", (r) => status(r.status)],
        ["Passed", (r) => `${r.result_counts.passed} / ${r.result_counts.total}`],
      ],
      runs,
      "No runs yet.",
    ),
    h("button", { type: "button", onclick: compare }, "Compare selected runs"),
    error,
    comparison,
  );
}

async function runPage(evalId, runId) {
  const mine = page;
  const head = h("div");
  const items = h("div");
  async function refresh() {
    const run = await api(`/v1/evals/${evalId}/runs/${runId}`);
    const output = (await api(`/v1/evals/${evalId}/runs/${runId}/output_items?limit=100`)).data;
    if (mine !== page) return false;
    fill(head,
      h("p", {}, "Model ", playLink(run.model), " — ", status(run.status), ` — ${run.progress?.completed ?? 0} of ${run.progress?.total ?? "?"} items`),
      run.error?.message ? h("p", { class: "error" }, run.error.message) : null,
      table(
        [["Criterion", (c) => c.testing_criteria], ["Pass rate", (c) => h("span", { "data-pass-rate": c.testing_criteria }, passRate(c))], ["Passed", (c) => c.passed], ["Failed", (c) => c.failed]],
        run.per_testing_criteria_results,
        "No results yet.",
      ),
    );
    fill(items, table(
      [
        ["Item", (it) => it.datasource_item_id],
        ["Status", (it) => status(it.status)],
        ["Answer", (it) => (it.sample?.output || []).map((o) => o.content).join("\n")],
      ],
      output,
    ));
    return !TERMINAL.has(run.status);
  }
  show(h("h1", {}, `Run ${runId}`), head, h("h2", {}, "Items"), items);
  if (await refresh()) every(2, refresh);
}

// --------------------------------------------------------------------------------------------- models

async function modelsPage() {
  const list = await models();
  const bases = list.filter((m) => !m.parent);
  const file = h("input", { type: "file", name: "adapter", accept: ".tar.gz,.tgz,.zip", required: true });
  const bar = h("progress", { value: 0, max: 1, "aria-label": "Upload progress" });
  const base = modelSelect(bases, bases[0]?.id, { name: "base_model" });
  const suffix = h("input", { name: "suffix", maxlength: 40, placeholder: "optional" });
  const importForm = cardForm(
    "Import an adapter",
    [field("PEFT adapter (.tar.gz or .zip of its folder)", file), bar, field("Base model", base), field("Suffix", suffix)],
    "Import",
    async () => {
      const uploaded = await uploadFile(file.files[0], "adapter", bar);
      const body = { file: uploaded.id, base_model: base.value };
      if (suffix.value) body.suffix = suffix.value;
      const model = await api("/v1/models", { method: "POST", body });
      location.hash = `#/models/${encodeURIComponent(model.id)}`;
    },
  );
  show(
    h("h1", {}, "Models"),
    h("h2", {}, "Import an adapter"),
    importForm,
    h("h2", {}, "All models"),
    table(
      [
        ["Model", (m) => link(`#/models/${encodeURIComponent(m.id)}`, m.id)],
        ["Base", (m) => m.root],
        ["Parent", (m) => m.parent || ""],
        ["Inputs", (m) => (m.modalities || ["text"]).join(", ")],
        ["", (m) => playLink(m.id)],
      ],
      list,
    ),
  );
}

// A body of the API saved as a download (the API needs the key, so no plain link).
async function download(path, filename) {
  const resp = await api(path, { raw: true });
  const url = URL.createObjectURL(await resp.blob());
  const a = h("a", { href: url, download: filename });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60_000);
}

function downloadAdapter(id) {
  return download(`/v1/models/${encodeURIComponent(id)}/content`, `${id.replaceAll(":", "_").replaceAll("/", "_")}.tar.gz`);
}

async function modelPage(id) {
  const m = await api(`/v1/models/${encodeURIComponent(id)}`);
  const l = m.lineage || {};
  const error = errorBox("model-error");
  const act = (fn) => async () => {
    error.textContent = "";
    try {
      await fn();
    } catch (exc) {
      error.textContent = exc.message;
    }
  };
  const remove = act(async () => {
    if (!confirm(`Delete ${m.id} and its adapter? This cannot be undone.`)) return;
    await api(`/v1/models/${encodeURIComponent(m.id)}`, { method: "DELETE" });
    location.hash = "#/models";
  });
  const actions = m.parent
    ? [
        h("p", {},
          h("button", { type: "button", class: "plain", onclick: act(() => downloadAdapter(m.id)) }, "Download adapter"),
          " ",
          h("button", { type: "button", class: "plain", onclick: remove }, "Delete"),
        ),
        h("p", { class: "muted" },
          "The model merged into its base (a Hugging Face folder, the base model's size) is too large for a browser: ",
          h("code", {}, `tuneserve models download ${m.id} --merged`),
        ),
        error,
      ]
    : null;
  show(
    h("h1", {}, m.id),
    h("p", {}, playLink(m.id)),
    actions,
    h("h2", {}, "Lineage"),
    h("ol", { class: "lineage" },
      h("li", {}, "Base model: ", l.base_model || m.root),
      l.parent ? h("li", {}, "Parent: ", l.parent) : null,
      l.training_job ? h("li", {}, "Training job: ", link(`#/jobs/${l.training_job}`, l.training_job)) : null,
      l.training_file_sha256 ? h("li", {}, "Training data SHA-256: ", h("code", {}, l.training_file_sha256)) : null,
    ),
    h("h2", {}, "Evaluations"),
    table(
      [
        ["Run", (r) => link(`#/evals/${r.eval_id}/runs/${r.run_id}`, r.run_id)],
        ["Status", (r) => status(r.status)],
        ["Results", (r) => (r.per_testing_criteria_results || []).map((c) => `${c.testing_criteria}: ${passRate(c)}`).join("; ")],
      ],
      l.evals || [],
      "Not evaluated yet.",
    ),
  );
}

// ---------------------------------------------------------------------------------------------- admin

async function adminPage() {
  const health = await api("/health").catch((e) => ({ status: e.message }));
  const tenantsBox = h("div");
  const keysBox = h("div");
  const limits = h("section", { "aria-label": "Tenant limits" });
  const tenant = h("input", { name: "tenant", required: true });
  const name = h("input", { name: "name" });
  const created = h("div", { "aria-live": "polite" });

  async function refresh() {
    const [tenants, keys] = await Promise.all([api("/v1/admin/tenants"), api("/v1/admin/api_keys")]);
    const toggle = (t) => async () => {
      const id = encodeURIComponent(t.id);
      const path = t.disabled_at ? `/v1/admin/tenants/${id}/enable` : `/v1/admin/tenants/${id}/disable`;
      await api(path, { method: "POST" });
      await refresh();
    };
    const showLimits = (t) => async () => {
      const l = await api(`/v1/admin/tenants/${encodeURIComponent(t.id)}/limits`);
      fill(limits, h("h2", {}, `Limits of ${t.id}`), table(
        [["Limit", (r) => r[0]], ["Value", (r) => String(r[1])], ["", (r) => (r[0] in l.overrides ? "set by the admin" : "default")]],
        Object.entries(l.limits),
      ));
    };
    const revoke = (id) => async () => {
      await api(`/v1/admin/api_keys/${id}`, { method: "DELETE" });
      await refresh();
    };
    fill(tenantsBox, table(
      [
        ["Tenant", (t) => t.id],
        ["Created", (t) => when(t.created_at)],
        ["Status", (t) => (t.disabled_at ? status("disabled") : "enabled")],
        ["", (t) => (t.id === "default" ? "" : [
          h("button", { type: "button", class: "plain", onclick: toggle(t), "data-tenant": t.id }, t.disabled_at ? "Enable" : "Disable"),
          " ",
          h("button", { type: "button", class: "plain", onclick: showLimits(t) }, "Limits"),
        ])],
      ],
      tenants.data,
    ));
    fill(keysBox, table(
      [
        ["Tenant", (k) => k.tenant],
        ["Name", (k) => k.name || ""],
        ["Key", (k) => `${k.prefix}…`],
        ["Created", (k) => when(k.created_at)],
        ["", (k) => (k.revoked_at ? "revoked" : h("button", { type: "button", class: "plain", onclick: revoke(k.id) }, "Revoke"))],
      ],
      keys.data,
    ));
  }

  await refresh();
  show(
    h("h1", {}, "Admin"),
    h("h2", {}, "Health"),
    h("p", {}, "Service: ", status(health.status)),
    table(
      [["Component", (c) => c[0]], ["Status", (c) => status(c[1].status)], ["Detail", (c) => c[1].detail || ""]],
      Object.entries(health.components || {}),
    ),
    h("h2", {}, "Tenants"),
    tenantsBox,
    limits,
    h("h2", {}, "API keys"),
    cardForm("Create a key", [field("Tenant", tenant), field("Name", name)], "Create key", async () => {
      const k = await api("/v1/admin/api_keys", { method: "POST", body: { tenant: tenant.value, name: name.value || null } });
      fill(created, h("p", { class: "ok" }, `Key for ${k.tenant} (shown once): `, h("code", {}, k.key)));
      await refresh();
    }),
    created,
    keysBox,
  );
}

// --------------------------------------------------------------------------------------------- router

const ROUTES = [
  [/^#\/jobs$/, jobsPage],
  [/^#\/jobs\/([^/]+)$/, jobPage],
  [/^#\/playground$/, playgroundPage],
  [/^#\/chats$/, chatsPage],
  [/^#\/batches$/, batchesPage],
  [/^#\/batches\/([^/]+)$/, batchPage],
  [/^#\/vector-stores$/, vectorStoresPage],
  [/^#\/vector-stores\/([^/]+)$/, vectorStorePage],
  [/^#\/evals$/, evalsPage],
  [/^#\/evals\/([^/]+)$/, evalPage],
  [/^#\/evals\/([^/]+)\/runs\/([^/]+)$/, runPage],
  [/^#\/models$/, modelsPage],
  [/^#\/models\/(.+)$/, (id) => modelPage(decodeURIComponent(id))],
  [/^#\/admin$/, adminPage],
];

async function route() {
  if (!key) return signInPage();
  page++;
  while (timers.length) clearTimeout(timers.pop());
  const [path, query = ""] = location.hash.split("?");
  for (const a of document.querySelectorAll("#nav a")) {
    if (path.startsWith(a.getAttribute("href"))) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  for (const [pattern, render] of ROUTES) {
    const m = path.match(pattern);
    if (!m) continue;
    const args = m.slice(1);
    try {
      await render(...args, new URLSearchParams(query)); // the query's params after the path's captures
    } catch (exc) {
      if (exc.status === 401) return signInPage("Your key is no longer valid; sign in again.");
      show(h("h1", {}, "Something went wrong"), h("p", { class: "error", role: "alert" }, exc.message));
    }
    main.focus({ preventScroll: true });
    return;
  }
  show(h("h1", {}, "Not found"), h("p", {}, link("#/jobs", "Back to fine-tuning")));
}

window.addEventListener("hashchange", route);
document.getElementById("sign-out").addEventListener("click", signOut);
if (key) start();
else signInPage();
