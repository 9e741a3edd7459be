// lorasmith GUI: plain JS over the JSON API (no framework, no CDN: works unplugged). docs/gui.md
"use strict";
const LS = (() => {
  // --- token: given once as ?token=..., kept for this tab, sent as the X-Token header --------------
  const params = new URLSearchParams(location.search);
  if (params.get("token")) sessionStorage.setItem("lsToken", params.get("token"));
  const token = sessionStorage.getItem("lsToken") || "";
  const tq = token ? "?token=" + encodeURIComponent(token) : "";
  if (token) {  // keep the token on in-app links (pages need it on a network)
    document.querySelectorAll("nav a[href^='/']").forEach(a => { if (!a.target) a.href += tq; });
  }
  const withToken = (url) => token ? url + (url.includes("?") ? "&" : "?") + "token=" + encodeURIComponent(token) : url;
  const $ = (sel) => document.querySelector(sel);
  const el = (tag, attrs = {}, ...kids) => {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) {
      if (k === "text") e.textContent = v; else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
      else if (v !== null && v !== undefined && v !== false) e.setAttribute(k, v === true ? "" : v);
    }
    kids.flat().forEach(k => e.append(k instanceof Node ? k : document.createTextNode(String(k))));
    return e;
  };

  async function api(path, opts = {}) {
    const headers = {"x-lorasmith": "1"};
    if (token) headers["X-Token"] = token;
    if (opts.body !== undefined) headers["Content-Type"] = "application/json";
    const r = await fetch(path, {method: opts.method || (opts.body !== undefined ? "POST" : "GET"), headers,
      body: opts.body !== undefined ? JSON.stringify(opts.body) : undefined});
    const data = await r.json().catch(() => ({}));
    if (!r.ok) {
      const detail = Array.isArray(data.detail) ? data.detail.map(d => `${d.loc.slice(1).join(".")}: ${d.msg}`).join("; ") : data.detail;
      const err = new Error(data.error || detail || r.statusText);
      err.field = data.field; err.status = r.status;
      throw err;
    }
    return data;
  }
  function toast(text, bad) {
    const t = $("#toast");
    t.textContent = text; t.className = bad ? "show bad" : "show";
    clearTimeout(t._timer); t._timer = setTimeout(() => t.className = "", 5000);
  }
  const fmtTime = (s) => {
    if (s === null || s === undefined || !isFinite(s)) return "-";
    s = Math.round(s); const h = Math.floor(s / 3600), m = Math.floor(s % 3600 / 60), sec = s % 60;
    return h ? `${h}h${String(m).padStart(2, "0")}m` : m ? `${m}m${String(sec).padStart(2, "0")}s` : `${sec}s`;
  };
  const fmtNum = (x, d = 4) => (x === null || x === undefined) ? "-" : Number(x).toPrecision(d);

  // typed-path completion inside the root (server side), for every input.path
  function pathCompletion() {
    const list = $("#complete-list");
    if (!list) return;
    document.querySelectorAll("input.path").forEach(inp => {
      let timer;
      inp.addEventListener("input", () => {
        clearTimeout(timer);
        timer = setTimeout(async () => {
          try {
            const r = await api("/api/fs/complete?prefix=" + encodeURIComponent(inp.value));
            list.replaceChildren(...r.entries.map(e => el("option", {value: e.path})));
          } catch (e) { list.replaceChildren(); }
        }, 150);
      });
    });
  }

  // a browser notification when a job this page saw running has ended (permission asked by "Queue run")
  function notifyEnded(before, j) {
    if (!before || before.status !== "running" || j.status === "running" || !window.Notification || Notification.permission !== "granted") return;
    new Notification(`lorasmith: #${j.id} ${j.name} ${j.status}`, {body: j.error || `step ${(j.run || {}).step || 0}`, tag: `lorasmith-${j.id}`});
  }

  // --- Runs -----------------------------------------------------------------------------------------
  function progressText(j) {
    const r = j.run || {};
    if (!r.total) return r.phase || "";
    return `${r.step || 0}/${r.total}` + (r.it_s ? ` · ${fmtNum(r.it_s, 3)} it/s · ETA ${fmtTime(r.eta_s)}` : "");
  }
  async function runsPage() {
    const seen = new Map();
    async function refresh() {
      const {jobs} = await api("/api/jobs");
      jobs.forEach(j => { notifyEnded(seen.get(j.id), j); seen.set(j.id, j); });
      const queued = jobs.filter(j => j.status === "queued").map(j => j.id);
      const rows = jobs.map(j => {
        const link = j.kind === "compare_grid" ? el("a", {href: withToken(`/compare?job=${j.parent}`)}, "grid")
          : j.kind !== "train" ? "" : ["done", "interrupted"].includes(j.status)
          ? el("span", {}, el("a", {href: withToken(`/runs/${j.id}`)}, "open"), " ", el("a", {href: withToken(`/compare?job=${j.id}`)}, "compare"))
          : el("a", {href: withToken(`/runs/${j.id}`)}, "open");
        const acts = [];
        if (j.status === "queued") {
          const i = queued.indexOf(j.id);
          const move = (d) => { const q = queued.slice(); q.splice(i, 1); q.splice(Math.max(0, i + d), 0, j.id);
            api("/api/queue/order", {body: {ids: q}}).then(refresh); };
          acts.push(el("button", {onclick: () => move(-1), title: "earlier"}, "▲"), el("button", {onclick: () => move(1), title: "later"}, "▼"));
        }
        if (j.status === "queued" || j.status === "running")
          acts.push(el("button", {onclick: () => api(`/api/jobs/${j.id}/cancel`, {body: {}}).then(r => { toast(r.result); refresh(); })},
            j.status === "running" ? "stop" : "cancel"));
        return el("tr", {"data-id": j.id, "data-status": j.status},
          el("td", {}, j.id), el("td", {}, j.name), el("td", {}, j.kind),
          el("td", {}, el("span", {class: "badge " + j.status}, j.status), j.error ? el("div", {class: "error-line"}, j.error) : ""),
          el("td", {}, progressText(j)), el("td", {}, j.run_dir_rel || ""), el("td", {}, link, " ", ...acts));
      });
      $("#jobs tbody").replaceChildren(...rows);
    }
    await refresh();
    setInterval(refresh, 2000);
  }

  // --- one run: live view ---------------------------------------------------------------------------
  function runPage(id) {
    const lossChart = new LSChart($("#loss-chart"), {label: "loss"});
    const lrChart = new LSChart($("#lr-chart"), {label: "lr"});
    const rows = new Map();  // step -> merged metric row (later lines win: a resumed run repeats steps)
    let offset = 0, job = null, source = null;
    const smooth = $("#smooth");
    function redraw() {
      const steps = [...rows.keys()].sort((a, b) => a - b);
      const pick = (k) => steps.filter(s => typeof rows.get(s)[k] === "number").map(s => [s, rows.get(s)[k]]);
      lossChart.setSeries([{name: "loss", points: pick("loss"), smooth: Number(smooth.value)},
        ...[...new Set(steps.flatMap(s => Object.keys(rows.get(s))))].filter(k => k.startsWith("loss/") || k.startsWith("val"))
          .map(k => ({name: k, points: pick(k)}))]);
      const lrKeys = [...new Set(steps.flatMap(s => Object.keys(rows.get(s))))].filter(k => k.startsWith("lr/"));
      lrChart.setSeries(lrKeys.map(k => ({name: k, points: pick(k)})));
    }
    smooth.addEventListener("input", redraw);
    $("#zoom-reset").addEventListener("click", () => { lossChart.resetZoom(); lrChart.resetZoom(); });
    const addRows = (list) => list.forEach(r => rows.set(r.step, Object.assign(rows.get(r.step) || {}, r)));

    function showJob(j) {
      notifyEnded(job, j);
      job = j;
      const r = j.run || {};
      $("#job-name").textContent = `#${j.id} ${j.name}`;
      $("#job-status").textContent = j.status; $("#job-status").className = "badge " + j.status;
      $("#step").textContent = r.step || 0; $("#total").textContent = r.total || "?";
      $("#epoch").textContent = r.epoch ? `${r.epoch}/${r.epochs || "?"}` : "-";
      $("#its").textContent = r.it_s ? fmtNum(r.it_s, 3) : "-";
      $("#eta").textContent = fmtTime(r.eta_s); $("#phase").textContent = r.phase || "-";
      $("#loss").textContent = fmtNum(r.loss);
      $("#bar").style.width = r.total ? `${100 * (r.step || 0) / r.total}%` : "0";
      const running = j.status === "running";
      ["#stop", "#save-now", "#sample-now"].forEach(s => $(s).disabled = !running);
      ["#resume", "#extend"].forEach(s => $(s).disabled = running || j.status === "queued");
      $("#error").hidden = j.status !== "failed";
      if (j.status === "failed") { $("#error-text").textContent = j.error || "failed"; $("#error-help").href = withToken(j.help); }
      $("#folder").textContent = j.run_dir_rel || "";
    }
    async function slow() {  // samples, files and log: every few seconds, not per event
      try {
        const [s, f, l, il] = await Promise.all([api(`/api/jobs/${id}/samples`), api(`/api/jobs/${id}/files`), api(`/api/jobs/${id}/log?lines=60`),
          api(`/api/jobs/${id}/image-losses?top=12`)]);
        showSamples(s.samples); showImageLosses(il);
        $("#files").replaceChildren(...f.files.map(x => el("li", {}, x.dir ? x.name + "/" :
          el("a", {href: withToken("/api/file?path=" + encodeURIComponent(f.folder + "/" + x.name)), target: "_blank"}, x.name),
          el("small", {}, x.dir ? "" : ` ${(x.size / 1024).toFixed(0)} KiB`))));
        const log = $("#log"); const atEnd = log.scrollTop + log.clientHeight >= log.scrollHeight - 5;
        log.textContent = l.log; if (atEnd) log.scrollTop = log.scrollHeight;
      } catch (e) { /* the next round shows it */ }
    }
    function showImageLosses(r) {
      if (!r.images.length) return;
      const dir = (p) => p.slice(0, p.lastIndexOf("/"));
      $("#image-losses").replaceChildren(el("p", {class: "hint"}, `${r.count} images, mean ${fmtNum(r.mean)} ± ${fmtNum(r.std)}`),
        el("table", {class: "grid image-losses"}, el("thead", {}, el("tr", {}, el("th", {}, "image"), el("th", {}, "mean loss"), el("th", {}, "z"), el("th", {}, "steps"))),
          el("tbody", {}, ...r.images.map(i => el("tr", {class: i.z >= 2 ? "outlier" : ""},
            el("td", {}, i.path ? el("a", {href: withToken(`/dataset?folder=${encodeURIComponent(dir(i.path))}&focus=${encodeURIComponent(i.path)}`), title: "open in the caption editor"},
              el("img", {src: withToken("/api/file?path=" + encodeURIComponent(i.path)), alt: i.path, loading: "lazy"}), " ", i.path) : i.key),
            el("td", {}, fmtNum(i.mean)), el("td", {}, i.z.toFixed(2)), el("td", {}, i.n))))));
    }
    function showSamples(list) {
      if (!list.length) return;
      const prompts = [...new Set(list.map(s => s.prompt))];
      const steps = [...new Set(list.map(s => s.step))].sort((a, b) => a - b);
      const at = new Map(list.map(s => [s.step + "\u0000" + s.prompt, s]));
      const table = el("table", {class: "samples grid"},
        el("thead", {}, el("tr", {}, el("th", {}, "step"), ...prompts.map(p => el("th", {}, p)))),
        el("tbody", {}, ...steps.map(st => el("tr", {}, el("th", {}, st), ...prompts.map(p => {
          const s = at.get(st + "\u0000" + p);
          return el("td", {}, s ? el("a", {href: withToken("/api/file?path=" + encodeURIComponent(s.path)), target: "_blank"},
            el("img", {src: withToken("/api/file?path=" + encodeURIComponent(s.path)), alt: `${p} @ ${st}`, loading: "lazy"})) : "");
        })))));
      $("#samples").replaceChildren(table);
    }
    function connect() {
      if (source) source.close();
      source = new EventSource(withToken(`/api/jobs/${id}/events?offset=${offset}`));
      source.addEventListener("job", ev => showJob(JSON.parse(ev.data)));
      source.addEventListener("metrics", ev => { const d = JSON.parse(ev.data); offset = d.offset; addRows(d.rows); redraw(); });
      source.addEventListener("end", () => { source.close(); source = null; slow(); });
      source.onerror = () => { source.close(); source = null; setTimeout(connect, 2000); };
    }
    async function start() {
      const m = await api(`/api/jobs/${id}/metrics?max_points=4000`);
      addRows(m.rows); offset = m.offset; redraw();
      showJob(await api(`/api/jobs/${id}`));
      connect(); slow();
      setInterval(() => { slow(); if (!source && job && (job.status === "running" || job.status === "queued")) connect(); }, 3000);
    }
    document.querySelectorAll("[data-action]").forEach(b => b.addEventListener("click", async () => {
      try { await api(`/api/jobs/${id}/${b.dataset.action}`, {body: {}}); toast(`${b.dataset.action} requested: acted on after the current step`); }
      catch (e) { toast(e.message, true); }
    }));
    const follow = async (extra) => {
      try {
        const j = await api(`/api/jobs/${id}/resume`, {body: {extra_steps: extra}});
        location.href = withToken(`/runs/${j.id}`);
      } catch (e) { toast(e.message, true); }
    };
    $("#compare-link").href = withToken(`/compare?job=${id}`);
    $("#resume").addEventListener("click", () => follow(0));
    $("#extend").addEventListener("click", () => follow(Number($("#extend-steps").value)));
    start().catch(e => toast(e.message, true));
  }

  // --- Configure: the form is generated from the option schema -------------------------------------
  function configurePage() {
    let schema = null, timer = null;
    const form = $("#form");
    const script = () => $("#script").value;
    const stash = sessionStorage.getItem("lsValues");  // handed over from the Dataset page
    function buildForm(values) {
      const groups = new Map(schema.groups.map(g => [g.key, el("fieldset", {"data-group": g.key}, el("legend", {}, g.title))]));
      for (const f of schema.fields) {
        const id = "opt-" + f.name;
        let input;
        if (f.type === "bool") input = el("input", {type: "checkbox", id, name: f.name});
        else if (f.choices) input = el("select", {id, name: f.name}, el("option", {value: ""}, `(default ${f.default ?? "-"})`),
          ...f.choices.map(c => el("option", {value: c}, c)));
        else input = el("input", {id, name: f.name, class: f.type === "path" ? "path" : null, list: f.type === "path" ? "complete-list" : null,
          placeholder: f.default === null || f.default === undefined ? "" : (Array.isArray(f.default) ? f.default.join(" ") : String(f.default)),
          inputmode: ["int", "float"].includes(f.type) ? "decimal" : null});
        const limits = [f.min !== null ? `≥ ${f.min}` : "", f.gt !== null ? `> ${f.gt}` : "", f.max !== null ? `≤ ${f.max}` : ""].filter(Boolean).join(", ");
        const row = el("div", {class: "field" + (f.basic ? " basic" : " advanced") + (f.status !== "supported" ? " " + f.status : ""), "data-name": f.name},
          el("label", {for: id, title: f.help}, f.name, el("small", {}, ` ${f.label}${limits ? " · " + limits : ""}${f.list ? " · space-separated" : ""}`)),
          input, el("div", {class: "help"}, f.help), el("div", {class: "field-error"}));
        groups.get(f.group).append(row);
      }
      form.replaceChildren(...[...groups.values()].filter(g => g.children.length > 1));
      setValues(values || {});
      pathCompletion();
    }
    function getValues() {
      const out = {};
      for (const f of schema.fields) {
        const inp = document.getElementById("opt-" + f.name);
        if (!inp) continue;
        if (f.type === "bool") { if (inp.checked) out[f.name] = true; continue; }
        const v = inp.value.trim();
        if (v === "") continue;
        out[f.name] = f.list ? v.split(/\s+/) : v;
      }
      return out;
    }
    function setValues(values) {
      for (const f of schema.fields) {
        const inp = document.getElementById("opt-" + f.name);
        if (!inp) continue;
        const v = values[f.name];
        if (f.type === "bool") inp.checked = !!v;
        else inp.value = v === undefined || v === null ? "" : Array.isArray(v) ? v.join(" ") : String(v);
      }
      check();
    }
    async function check() {
      clearTimeout(timer);
      timer = setTimeout(async () => {
        const r = await api("/api/validate", {body: {script: script(), values: getValues()}});
        document.querySelectorAll(".field.bad").forEach(f => { f.classList.remove("bad"); f.querySelector(".field-error").textContent = ""; });
        $("#verdict").textContent = r.ok ? "✓ valid: the trainer would accept these options" : r.error;
        $("#verdict").className = "verdict " + (r.ok ? "ok" : "bad");
        if (!r.ok && r.field) {
          const row = form.querySelector(`.field[data-name="${r.field}"]`);
          if (row) { row.classList.add("bad"); row.classList.add("shown"); row.querySelector(".field-error").textContent = r.error; }
        }
        $("#notices").replaceChildren(...r.notices.map(n => el("li", {}, n)));
        $("#cli").textContent = r.cli; $("#toml").textContent = r.toml;
      }, 200);
    }
    async function load() {
      schema = await api("/api/schema?script=" + script());
      const cur = form.children.length ? getValues() : (stash ? JSON.parse(stash) : {});
      buildForm(cur);
      sessionStorage.removeItem("lsValues");
    }
    form.addEventListener("input", check);
    form.addEventListener("change", check);
    $("#script").addEventListener("change", load);
    $("#advanced").addEventListener("change", () => form.classList.toggle("show-advanced", $("#advanced").checked));
    api("/api/presets").then(r => $("#preset").append(...r.presets.map(p => el("option", {value: p}, p))));
    const merge = (values) => setValues(Object.assign(getValues(), values));
    $("#load-preset").addEventListener("click", async () => {
      if (!$("#preset").value) return;
      try { merge((await api(`/api/presets/${$("#preset").value}?script=${script()}`)).values); toast("preset loaded"); } catch (e) { toast(e.message, true); }
    });
    $("#load-toml").addEventListener("click", async () => {
      try { setValues((await api("/api/config/load", {body: {path: $("#toml-path").value, script: script()}})).values); toast("loaded"); }
      catch (e) { toast(e.message, true); }
    });
    $("#save-toml").addEventListener("click", async () => {
      try { const r = await api("/api/config/save", {body: {path: $("#toml-path").value, script: script(), values: getValues()}}); toast("saved " + r.path); }
      catch (e) { toast(e.message, true); }
    });
    $("#from-lora").addEventListener("click", async () => {
      try {
        const r = await api("/api/lora-settings", {body: {path: $("#lora-path").value}});
        setValues(r.values);
        toast(`settings from the LoRA loaded${r.model_hint ? "; it was trained on " + r.model_hint + ": set the model path" : ""}`);
      } catch (e) { toast(e.message, true); }
    });
    $("#plan-btn").addEventListener("click", async () => {
      try {
        const r = await api("/api/dataset/preflight", {body: {values: getValues(), processes: Number($("#processes").value) || 1}});
        $("#plan").replaceChildren(planTable(r.plan), $("#plan-btn"));
      } catch (e) { toast(e.message, true); }
    });
    $("#memory-btn").addEventListener("click", async () => {
      try {
        const r = await api("/api/memory", {body: {values: getValues()}});
        $("#memory").replaceChildren(el("table", {class: "plan-table"},
          ...Object.entries(r.parts).map(([k, v]) => el("tr", {}, el("th", {}, k), el("td", {}, gib(v)))),
          el("tr", {class: "total"}, el("th", {}, "total (rough, ±30 %)"), el("td", {}, el("b", {}, gib(r.total_bytes))))),
          el("p", {class: "hint"}, `${r.family}, ${(r.lora_parameters / 1e6).toFixed(2)} M LoRA parameters, ${r.resolution.join("×")} × batch ${r.batch}`),
          $("#memory-btn"));
      } catch (e) { toast(e.message, true); }
    });
    // the memory check: a 2-step dry run of these options (a queued job) measuring the peak, shown beside the estimate
    const gib = (b) => (b / 2 ** 30).toFixed(2) + " GiB", mib = (b) => (b / 2 ** 20).toFixed(0) + " MiB";
    const size = (b) => b >= 2 ** 30 ? gib(b) : mib(b);
    function checkTable(r) {
      const m = r.measured, c = r.comparison, rows = [["dry run", `job #${r.job}: ${r.job_status}` + (r.run && r.run.step ? ` (step ${r.run.step}/${r.run.total})` : "")]];
      if (r.estimate) rows.push(["estimated (without the CUDA context)", size(r.estimate.total_bytes - (r.estimate.parts["CUDA context"] || 0))]);
      if (m && m.device === "cuda") rows.push(["measured: max allocated", size(m.max_allocated_bytes)], ["measured: max reserved", size(m.max_reserved_bytes)],
        ["GPU", `${m.device_name}, ${gib(m.total_bytes)}`]);
      if (m && m.device === "cpu") rows.push(["measured: resident set growth (no GPU)", size(m.peak_rss_bytes - (m.start_rss_bytes || 0))],
        ["peak resident set", size(m.peak_rss_bytes)]);
      if (c) rows.push(["measured / estimated", el("b", {}, c.ratio.toFixed(2))]);
      const t = el("table", {class: "plan-table", id: "memory-check-result", "data-state": r.state},
        ...rows.map(([k, v]) => el("tr", {}, el("th", {}, k), el("td", {}, v))));
      const cpu = m && m.device === "cpu" ? el("p", {class: "hint"}, "no GPU: the resident set also holds ~150 MiB that is not " +
        "model memory (dataset, tokenizer, allocator), so the ratio says little for small runs") : "";
      return [t, cpu, r.error ? el("p", {class: "error-line"}, r.error) : "", r.estimate_error ? el("p", {class: "hint"}, r.estimate_error) : ""];
    }
    $("#memory-check-btn").addEventListener("click", async () => {
      try {
        const first = await api("/api/memory/check", {body: {script: script(), values: getValues(),
          processes: Number($("#processes").value) || 1, gpu_ids: $("#gpu-ids").value || null}});
        toast(`memory check queued (job #${first.job}): 2 steps in a temporary folder`);
        const poll = async () => {
          const r = await api(`/api/memory/check/${first.job}`);
          $("#memory-check").replaceChildren(...checkTable(r), $("#memory-check-btn"));
          if (["queued", "running"].includes(r.job_status) || r.state === "queued") setTimeout(poll, 1500);
        };
        poll();
      } catch (e) {
        toast(e.message, true);
        const row = e.field && form.querySelector(`.field[data-name="${e.field}"]`);
        if (row) { row.classList.add("bad", "shown"); row.querySelector(".field-error").textContent = e.message; }
      }
    });
    $("#queue").addEventListener("click", async () => {
      if (window.Notification && Notification.permission === "default") Notification.requestPermission();  // "run ended" notices
      try {
        const j = await api("/api/jobs", {body: {script: script(), values: getValues(), processes: Number($("#processes").value) || 1,
          gpu_ids: $("#gpu-ids").value || null}});
        location.href = withToken(`/runs/${j.id}`);
      } catch (e) {
        toast(e.message, true);
        const row = e.field && form.querySelector(`.field[data-name="${e.field}"]`);
        if (row) { row.classList.add("bad", "shown"); row.querySelector(".field-error").textContent = e.message; row.scrollIntoView(); }
      }
    });
    load().catch(e => toast(e.message, true));
  }
  function planTable(p) {
    const rows = [["images", p.images], ["regularization images", p.reg_images], ["images × repeats per epoch", p.samples_per_epoch],
      ["batch size", p.batch_size], ["batches per epoch", p.batches_per_epoch], ["steps per epoch", p.steps_per_epoch],
      ["epochs", p.epochs], ["total steps", p.total_steps], ["LoRA files saved", p.saves], ["sample rounds", p.sample_rounds]];
    return el("table", {class: "plan-table"}, ...rows.map(([k, v]) => el("tr", {}, el("th", {}, k), el("td", {}, v))));
  }

  // --- Dataset --------------------------------------------------------------------------------------
  function datasetPage() {
    pathCompletion();
    let items = [];
    const values = () => {
      const v = {train_data_dir: $("#train-dir").value, resolution: $("#resolution").value, train_batch_size: Number($("#batch").value) || 1,
        caption_extension: $("#ext").value, enable_bucket: true};
      if ($("#reg-dir").value) v.reg_data_dir = $("#reg-dir").value;
      if ($("#min-bucket").value) v.min_bucket_reso = Number($("#min-bucket").value);
      if ($("#max-bucket").value) v.max_bucket_reso = Number($("#max-bucket").value);
      if ($("#bucket-steps").value) v.bucket_reso_steps = Number($("#bucket-steps").value);
      return v;
    };
    $("#check").addEventListener("click", async () => {
      try {
        const r = await api("/api/dataset/preflight", {body: {values: values()}});
        const issues = r.issues.map(i => el("li", {class: i.level || i.severity || ""}, i.message || JSON.stringify(i)));
        $("#report").replaceChildren(
          el("h2", {}, r.fatal ? "✗ training could not start with this dataset" : "✓ dataset ready"),
          el("ul", {class: "issues"}, ...issues),
          el("h3", {}, "Folders"), table(r.folders),
          el("h3", {}, "Buckets"), table(r.buckets),
          el("h3", {}, "Steps"), planTable(r.plan),
          el("details", {}, el("summary", {}, "as text (tools/check_dataset.py)"), el("pre", {class: "code"}, r.text)));
      } catch (e) { toast(e.message, true); }
    });
    function table(rows) {
      if (!rows || !rows.length) return el("p", {class: "hint"}, "none");
      const keys = Object.keys(rows[0]);
      return el("table", {class: "grid"}, el("thead", {}, el("tr", {}, ...keys.map(k => el("th", {}, k)))),
        el("tbody", {}, ...rows.map(r => el("tr", {}, ...keys.map(k => el("td", {}, typeof r[k] === "object" ? JSON.stringify(r[k]) : r[k]))))));
    }
    $("#demo").addEventListener("click", async () => {
      try {
        const r = await api("/api/demo", {body: {}});
        $("#train-dir").value = r.train_data_dir; $("#reg-dir").value = r.reg_data_dir; $("#resolution").value = "64"; $("#batch").value = 2;
        $("#min-bucket").value = r.values.min_bucket_reso || ""; $("#max-bucket").value = r.values.max_bucket_reso || "";
        $("#bucket-steps").value = r.values.bucket_reso_steps || "";
        sessionStorage.setItem("lsDemo", JSON.stringify(r));
        toast(`demo dataset in ${r.folder}; the tiny model is made by job #${r.job}`);
      } catch (e) { toast(e.message, true); }
    });
    $("#to-configure").addEventListener("click", () => {
      const v = values();
      const demo = sessionStorage.getItem("lsDemo");
      if (demo) Object.assign(v, JSON.parse(demo).values);
      sessionStorage.setItem("lsValues", JSON.stringify(v));
      location.href = withToken("/configure");
    });
    async function loadCaptions() {
      const r = await api(`/api/dataset/captions?folder=${encodeURIComponent($("#train-dir").value)}&ext=${encodeURIComponent($("#ext").value)}`);
      items = r.items;
      $("#captions").replaceChildren(...items.map((it, i) => el("div", {class: "cap"},
        el("img", {src: withToken("/api/file?path=" + encodeURIComponent(it.image)), alt: it.image, loading: "lazy"}),
        el("textarea", {rows: 3, "data-i": i, placeholder: "(no caption)"}, it.caption ?? ""),
        el("button", {onclick: () => save(i)}, "save"), el("small", {}, `${it.image} · ${it.tokens} tokens`))));
      tagTable();
    }
    async function save(i) {
      const text = document.querySelector(`textarea[data-i="${i}"]`).value;
      await api("/api/dataset/caption", {method: "PUT", body: {image: items[i].image, text, ext: $("#ext").value}});
      items[i].caption = text;
      tagTable();
    }
    function tagTable() {
      const counts = new Map();
      items.forEach(it => (it.caption || "").split(",").map(t => t.trim()).filter(Boolean).forEach(t => counts.set(t, (counts.get(t) || 0) + 1)));
      const sorted = [...counts.entries()].sort((a, b) => b[1] - a[1]).slice(0, 60);
      const missing = items.filter(it => it.caption === null).length;
      const hist = new Map();  // CLIP token lengths in bins of 10; past 75 the text encoder cuts (unless --max_token_length)
      items.forEach(it => { const b = Math.min(Math.floor((it.tokens || 0) / 10) * 10, 150); hist.set(b, (hist.get(b) || 0) + 1); });
      const bins = [...hist.keys()].sort((a, b) => a - b);
      const most = Math.max(1, ...hist.values());
      const bySha = new Map();
      items.forEach(it => bySha.set(it.sha1, [...(bySha.get(it.sha1) || []), it.image]));
      const dups = [...bySha.values()].filter(g => g.length > 1);
      $("#tags").replaceChildren(el("p", {}, `${items.length} images, ${missing} without a caption, ${dups.length} duplicate groups. Tags:`),
        ...sorted.map(([t, n]) => el("span", {class: "tag"}, `${t} ${n}`)),
        el("h3", {}, "Caption length (CLIP tokens)"),
        el("table", {class: "hist"}, ...bins.map(b => el("tr", {class: b >= 80 ? "long" : ""}, el("th", {}, `${b}–${b + 9}`),
          el("td", {}, el("span", {class: "bar", style: `width:${Math.round(200 * hist.get(b) / most)}px`}), ` ${hist.get(b)}`)))),
        dups.length ? el("div", {}, el("h3", {}, "Duplicate images"), el("ul", {}, ...dups.map(g => el("li", {}, g.join(" = "))))) : "");
    }
    $("#flat-make").addEventListener("click", async () => {
      try {
        const r = await api("/api/dataset/kohya-folder", {body: {source: $("#flat-src").value, dest: $("#flat-dest").value || "img",
          repeats: Number($("#flat-repeats").value), trigger: $("#flat-trigger").value, class_name: $("#flat-class").value, ext: $("#ext").value}});
        $("#train-dir").value = r.train_data_dir; toast("made " + r.folder);
      } catch (e) { toast(e.message, true); }
    });
    $("#cap-run").addEventListener("click", async () => {
      try {
        const j = await api("/api/dataset/caption-job", {body: {folder: $("#train-dir").value, caption_weights: $("#cap-model").value,
          ext: $("#ext").value, prefix: $("#cap-prefix").value, suffix: $("#cap-suffix").value, overwrite: $("#cap-overwrite").checked}});
        toast(`queued captioning as job #${j.id} (Runs page)`);
      } catch (e) { toast(e.message, true); }
    });
    $("#load-captions").addEventListener("click", () => loadCaptions().catch(e => toast(e.message, true)));
    const asked = new URLSearchParams(location.search);  // from the run page's per-image loss: open that image's caption
    if (asked.get("folder")) {
      $("#train-dir").value = asked.get("folder");
      loadCaptions().then(() => {
        const card = [...document.querySelectorAll(".cap img")].find(i => i.alt === asked.get("focus"));
        if (card) { card.parentElement.classList.add("focus"); card.parentElement.scrollIntoView({block: "center"}); }
      }).catch(e => toast(e.message, true));
    }
    $("#bulk-apply").addEventListener("click", async () => {
      const pre = $("#bulk-prefix").value, suf = $("#bulk-suffix").value, find = $("#bulk-find").value, repl = $("#bulk-repl").value;
      for (let i = 0; i < items.length; i++) {
        const ta = document.querySelector(`textarea[data-i="${i}"]`);
        let t = ta.value;
        if (find) t = t.split(find).join(repl);
        ta.value = pre + t + suf;
        await save(i);
      }
      toast(`${items.length} captions saved`);
    });
  }

  // --- Compare: checkpoint x strength x prompt grids, the chosen checkpoint, run history and diff ---------
  function comparePage() {
    const params = new URLSearchParams(location.search);
    let id = Number(params.get("job")) || null, info = null, timer = null;
    const img = (path, alt) => el("a", {href: withToken("/api/file?path=" + encodeURIComponent(path)), target: "_blank"},
      el("img", {src: withToken("/api/file?path=" + encodeURIComponent(path)), alt, loading: "lazy"}));
    async function loadHistory() {
      const {runs} = await api("/api/history");
      const finished = runs.filter(r => ["done", "interrupted", "failed"].includes(r.status));
      if (!id && finished.length) id = finished[0].id;
      $("#run").replaceChildren(...runs.map(r => el("option", {value: r.id, selected: r.id === id}, `#${r.id} ${r.name} (${r.status})`)));
      $("#history tbody").replaceChildren(...runs.map((r, i) => el("tr", {"data-id": r.id},
        el("td", {}, el("input", {type: "radio", name: "diff-a", value: r.id, checked: i === 1 || (runs.length === 1 && i === 0)})),
        el("td", {}, el("input", {type: "radio", name: "diff-b", value: r.id, checked: i === 0})),
        el("td", {}, el("a", {href: withToken(`/runs/${r.id}`)}, r.id)), el("td", {}, r.name),
        el("td", {}, el("span", {class: "badge " + r.status}, r.status)),
        el("td", {}, r.total ? `${r.step || 0}/${r.total}` : ""), el("td", {}, fmtNum(r.loss)),
        el("td", {}, r.best ? "★ " + r.best.file : ""), el("td", {}, r.folder || ""))));
    }
    function showGrid(g) {
      const req = g.request, best = info.best && info.best.file;
      const at = new Map(g.images.map(i => [`${i.checkpoint}\u0000${i.strength}\u0000${i.prompt}`, i]));
      const label = new Map(info.checkpoints.map(c => [c.file, c.label]));
      const tables = req.prompts.map(p => el("table", {class: "grid compare"},
        el("caption", {}, p),
        el("thead", {}, el("tr", {}, el("th", {}, "checkpoint \\ strength"), ...req.strengths.map(s => el("th", {}, String(s))))),
        el("tbody", {}, ...req.checkpoints.map(c => el("tr", {class: c === best ? "best" : ""},
          el("th", {}, el("div", {}, (c === best ? "★ " : "") + (label.get(c) || "")), el("small", {}, c), el("br"),
            el("button", {class: "small choose", "data-file": c, onclick: () => choose(c)}, c === best ? "chosen" : "choose")),
          ...req.strengths.map(s => { const i = at.get(`${c}\u0000${s}\u0000${p}`);
            return el("td", {}, i ? img(`${info.folder}/${i.file}`, `${c} at ${s}: ${p}`) : el("span", {class: "hint"}, "…")); }))))));
      return el("div", {class: "grid-block", "data-grid": g.name}, el("h3", {}, `${g.name}: ${g.images.length}/${req.checkpoints.length * req.strengths.length * req.prompts.length} images · seed ${req.seed} · ${req.steps} steps`), ...tables);
    }
    async function choose(file) {
      const copy = confirm(`Mark ${file} as the chosen checkpoint.\nAlso copy it to best/ (never over an existing file)?`);
      try { await api(`/api/jobs/${id}/best`, {body: {file, keep_copy: copy}}); toast(`${file} chosen`); await load(false); await loadHistory(); }
      catch (e) { toast(e.message, true); }
    }
    async function load(fillForm) {
      if (!id) { $("#grid-form").hidden = true; return; }
      info = await api(`/api/jobs/${id}/compare`);
      $("#grid-form").hidden = false;
      if (fillForm) {
        $("#checkpoints").replaceChildren(...info.checkpoints.map(c => el("label", {},
          el("input", {type: "checkbox", value: c.file, checked: true}), ` ${c.label} `, el("small", {}, c.file))));
        if (!info.checkpoints.length) $("#checkpoints").replaceChildren(el("p", {class: "hint"}, "this run has no LoRA file yet"));
        $("#prompts").value = info.prompts.join("\n");
      }
      $("#best").textContent = info.best ? `chosen: ★ ${info.best.file}` + (info.best.copy ? ` (copy: ${info.best.copy})` : "") : "no checkpoint chosen yet";
      $("#grids").replaceChildren(...(info.grids.length ? info.grids.map(showGrid) : [el("p", {class: "hint"}, "no grid yet")]));
      const pending = info.grid_jobs.filter(j => j.status === "queued" || j.status === "running");
      const failed = info.grid_jobs.filter(j => j.status === "failed").slice(-1);
      $("#grid-status").textContent = pending.length ? `grid job #${pending[0].id} ${pending[0].status}…` :
        failed.length ? `grid job #${failed[0].id} failed: ${failed[0].error}` : "";
      clearTimeout(timer);
      if (pending.length) timer = setTimeout(() => load(false).catch(e => toast(e.message, true)), 2000);
    }
    $("#run").addEventListener("change", () => { id = Number($("#run").value); history.replaceState(null, "", `?job=${id}`); load(true).catch(e => toast(e.message, true)); });
    $("#make-grid").addEventListener("click", async () => {
      const num = (s) => s.trim() === "" ? null : Number(s);
      const body = {checkpoints: [...document.querySelectorAll("#checkpoints input:checked")].map(i => i.value),
        strengths: $("#strengths").value.trim().split(/[\s,]+/).filter(Boolean).map(Number),
        prompts: $("#prompts").value.split("\n").map(s => s.trim()).filter(Boolean),
        steps: Number($("#steps").value), seed: Number($("#seed").value), scale: Number($("#scale").value),
        width: num($("#width").value), height: num($("#height").value), sampler: $("#sampler").value.trim()};
      try { const r = await api(`/api/jobs/${id}/grid`, {body}); toast(`queued ${r.grid} (job #${r.job.id})`); await load(false); }
      catch (e) { toast(e.message, true); }
    });
    $("#diff").addEventListener("click", async () => {
      const a = document.querySelector("input[name=diff-a]:checked"), b = document.querySelector("input[name=diff-b]:checked");
      if (!a || !b) return toast("pick run A and run B", true);
      try {
        const r = await api(`/api/diff?a=${a.value}&b=${b.value}`);
        const show = (v) => v === null || v === undefined ? "—" : Array.isArray(v) ? v.join(" ") : String(v);
        $("#diff-out").replaceChildren(el("p", {}, `${r.diff.length} settings differ, ${r.same} are the same`),
          el("table", {class: "grid diff"}, el("thead", {}, el("tr", {}, el("th", {}, "setting"), el("th", {}, `#${r.a}`), el("th", {}, `#${r.b}`))),
            el("tbody", {}, ...r.diff.map(d => el("tr", {}, el("th", {}, d.name), el("td", {}, show(d.a)), el("td", {}, show(d.b)))))));
      } catch (e) { toast(e.message, true); }
    });
    loadHistory().then(() => load(true)).catch(e => toast(e.message, true));
  }

  // --- Tools ----------------------------------------------------------------------------------------
  function toolsPage() {
    let fields = [];
    async function loadForm() {
      $("#tool-form").replaceChildren(el("p", {class: "hint"}, "reading the tool's options…"));
      const tool = $("#tool").value;
      try {
        const r = await api(`/api/tools/${tool}/schema`);
        if (tool !== $("#tool").value) return;  // another tool was picked meanwhile: its answer draws the form
        fields = r.fields;
        $("#tool-description").textContent = r.description;
        $("#tool-form").replaceChildren(...fields.map(f => {
          const id = "tool-" + f.name;
          const input = f.kind === "flag" ? el("input", {type: "checkbox", id}) : f.choices
            ? el("select", {id}, el("option", {value: ""}, `(default ${f.default ?? "-"})`), ...f.choices.map(c => el("option", {value: c}, c)))
            : el("input", {id, class: "path", list: "complete-list", placeholder: f.default === null ? "" : String(f.default)});
          return el("div", {class: "field basic" + (f.required ? " required" : "")},
            el("label", {for: id}, f.flag, f.required ? " *" : ""), input, el("div", {class: "help"}, f.help));
        }));
        pathCompletion();
      } catch (e) { $("#tool-form").replaceChildren(el("p", {class: "error"}, e.message)); }
    }
    function formArgs() {
      const args = [];
      for (const f of fields) {
        const inp = document.getElementById("tool-" + f.name);
        if (!inp) continue;
        if (f.kind === "flag") { if (inp.checked) args.push(f.flag); continue; }
        const v = inp.value.trim();
        if (!v) continue;
        args.push(f.flag, ...(f.kind === "list" ? v.split(/\s+/) : [v]));
      }
      return args;
    }
    $("#tool").addEventListener("change", loadForm);
    loadForm();
    $("#run-tool").addEventListener("click", async () => {
      const raw = $("#args").value.split("\n").map(s => s.trim()).filter(Boolean);
      const args = raw.length ? raw : formArgs();
      try { const j = await api(`/api/tools/${$("#tool").value}`, {body: {args}}); toast(`queued job #${j.id}`); location.href = withToken("/runs"); }
      catch (e) { toast(e.message, true); }
    });
    $("#help").addEventListener("click", async () => {
      try { const r = await api(`/api/tools/${$("#tool").value}/help`); $("#tool-help").hidden = false; $("#tool-help").textContent = r.help; }
      catch (e) { toast(e.message, true); }
    });
  }

  return {api, runsPage, runPage, configurePage, datasetPage, comparePage, toolsPage, withToken};
})();
