// searchengine's page: no framework, no build step, nothing fetched from anywhere but this server.
"use strict";
(() => {
  const LIMIT = 50;
  const $ = (id) => document.getElementById(id);
  const grid = $("grid"), message = $("message"), viewer = $("viewer");
  const uploads = new Map();  // search-by-image files of this tab, by history key
  let state = null;           // {query, hits, offset, done, loading, token}
  let current = -1;           // index of the hit shown large, -1 when the viewer is closed

  function queryFromURL() {
    const p = new URLSearchParams(location.search);
    if (p.get("q")) return { kind: "text", q: p.get("q") };
    if (/^\d+$/.test(p.get("similar") || "")) return { kind: "similar", id: Number(p.get("similar")) };
    if (p.get("image")) return { kind: "image", key: p.get("image"), name: p.get("name") || "image" };
    return null;
  }

  function urlOf(query) {
    if (!query) return "/";
    if (query.kind === "text") return "/?q=" + encodeURIComponent(query.q);
    if (query.kind === "similar") return "/?similar=" + query.id;
    return "/?image=" + encodeURIComponent(query.key) + "&name=" + encodeURIComponent(query.name);
  }

  function describe(query) {
    if (query.kind === "text") return "“" + query.q + "”";
    if (query.kind === "similar") return "photos like #" + query.id;
    return "photos like " + query.name;
  }

  async function fetchPage(query, offset) {
    let response;
    if (query.kind === "image") {
      const file = uploads.get(query.key);
      if (!file) throw new Error("search by that image again (uploaded images are not kept)");
      const body = new FormData();
      body.append("image", file);
      body.append("limit", String(LIMIT));
      body.append("offset", String(offset));
      response = await fetch("/api/search", { method: "POST", body });
    } else {
      const path = query.kind === "text"
        ? "/api/search?q=" + encodeURIComponent(query.q) + "&limit=" + LIMIT + "&offset=" + offset
        : "/api/images/" + query.id + "/similar?limit=" + LIMIT + "&offset=" + offset;
      response = await fetch(path);
    }
    const data = await response.json().catch(() => ({ error: "unexpected answer (" + response.status + ")" }));
    if (!response.ok) throw new Error(data.error || "request failed");
    return data.results;
  }

  function tile(hit, index) {
    const a = document.createElement("a");
    a.className = "tile";
    a.href = hit.file;
    a.title = hit.path + "\nscore " + hit.score.toFixed(3);
    a.dataset.index = String(index);
    const img = document.createElement("img");
    img.loading = "lazy";
    img.decoding = "async";
    img.alt = hit.path.split("/").pop();
    img.src = hit.thumbnail;
    if (hit.width && hit.height) { img.width = hit.width; img.height = hit.height; }
    const score = document.createElement("span");
    score.className = "score";
    score.textContent = hit.score.toFixed(3);
    a.append(img, score);
    a.addEventListener("click", (event) => {
      if (event.button !== 0 || event.ctrlKey || event.metaKey || event.shiftKey) return;
      event.preventDefault();
      openViewer(index);
    });
    return a;
  }

  async function loadMore() {
    const s = state;
    if (!s || s.done || s.loading) return;
    s.loading = true;
    try {
      const hits = await fetchPage(s.query, s.offset);
      if (s !== state) return;
      const start = s.hits.length;
      s.hits.push(...hits);
      s.offset += hits.length;
      s.done = hits.length < LIMIT;
      grid.append(...hits.map((h, i) => tile(h, start + i)));
      message.textContent = s.hits.length ? describe(s.query) : "No results for " + describe(s.query);
    } catch (err) {
      if (s === state) { message.textContent = err.message; s.done = true; }
    } finally {
      s.loading = false;
    }
    if (s === state && !s.done && nearBottom()) loadMore();
  }

  function nearBottom() {
    return $("more").getBoundingClientRect().top < window.innerHeight + 800;
  }

  function run(query, push) {
    closeViewer();
    if (push) history.pushState(query, "", urlOf(query));
    grid.replaceChildren();
    message.textContent = query ? "Searching " + describe(query) + "…" : "";
    if (query && query.kind === "text") $("q").value = query.q;
    state = query ? { query, hits: [], offset: 0, done: false, loading: false } : null;
    document.title = query ? describe(query) + " · searchengine" : "searchengine";
    if (state) loadMore();
  }

  function searchFile(file) {
    if (!file || !(file.type || "").startsWith("image/")) { message.textContent = "That is not an image file."; return; }
    const key = String(Date.now()) + Math.random().toString(36).slice(2, 6);
    uploads.set(key, file);
    run({ kind: "image", key, name: file.name || "pasted image" }, true);
  }

  // --- the large view --------------------------------------------------------------------------------------
  async function openViewer(index) {
    if (!state || index < 0) return;
    if (index >= state.hits.length) {
      if (state.done) return;
      await loadMore();
      if (index >= state.hits.length) return;
    }
    current = index;
    const hit = state.hits[index];
    viewer.hidden = false;
    $("large").src = hit.preview;
    $("large").alt = hit.path;
    $("path").textContent = hit.path;
    $("original").href = hit.file;
    $("copy").textContent = "Copy path";
    showFacts(hit, null);
    try {
      const response = await fetch("/api/images/" + hit.id);
      if (response.ok && current === index) showFacts(hit, await response.json());
    } catch (err) { /* the facts from the hit stay */ }
  }

  function showFacts(hit, record) {
    const facts = [["Score", hit.score.toFixed(4)]];
    if (hit.width && hit.height) facts.push(["Size", hit.width + " × " + hit.height + (record ? " · " + bytes(record.size) : "")]);
    if (record) {
      facts.push(["Date", record.taken_at || new Date(record.mtime).toLocaleString() + " (file)"]);
      if (record.camera) facts.push(["Camera", record.camera]);
      if (record.lens) facts.push(["Lens", record.lens]);
      if (record.format) facts.push(["Format", record.format.toUpperCase()]);
      if (record.latitude != null && record.longitude != null) {
        facts.push(["Place", record.latitude.toFixed(5) + ", " + record.longitude.toFixed(5)]);
      }
    }
    const dl = $("facts");
    dl.replaceChildren();
    for (const [name, value] of facts) {
      const dt = document.createElement("dt"), dd = document.createElement("dd");
      dt.textContent = name; dd.textContent = value;
      dl.append(dt, dd);
    }
  }

  function bytes(n) {
    return n >= 1 << 20 ? (n / (1 << 20)).toFixed(1) + " MB" : Math.max(1, Math.round(n / 1024)) + " kB";
  }

  function closeViewer() {
    if (current < 0) return;
    const tileEl = grid.querySelector('[data-index="' + current + '"]');
    viewer.hidden = true;
    $("large").removeAttribute("src");
    current = -1;
    if (tileEl) tileEl.focus({ preventScroll: false });
  }

  async function copyPath() {
    const text = $("path").textContent;
    try { await navigator.clipboard.writeText(text); }
    catch (err) {
      const range = document.createRange();
      range.selectNodeContents($("path"));
      getSelection().removeAllRanges(); getSelection().addRange(range);
      document.execCommand("copy");
    }
    $("copy").textContent = "Copied";
  }

  // --- status line -----------------------------------------------------------------------------------------
  async function refreshStatus() {
    try {
      const [status, indexing] = await Promise.all([fetch("/api/status").then((r) => r.json()),
                                                    fetch("/api/indexing").then((r) => r.json())]);
      let line = status.images.toLocaleString() + " images · " + status.model;
      if (indexing.watching) {
        line += indexing.running ? " · indexing " + indexing.done + "/" + indexing.total : " · watching for changes";
        if (indexing.last_error) line += " · " + indexing.last_error;
      }
      $("status").textContent = line;
      if (indexing.watching) setTimeout(refreshStatus, indexing.running ? 2000 : 8000);
    } catch (err) { $("status").textContent = "server unreachable"; }
  }

  // --- wiring ----------------------------------------------------------------------------------------------
  $("search").addEventListener("submit", (event) => {
    event.preventDefault();
    const q = $("q").value.trim();
    if (q) run({ kind: "text", q }, true);
  });
  $("pick").addEventListener("change", (event) => { searchFile(event.target.files[0]); event.target.value = ""; });
  $("close").addEventListener("click", closeViewer);
  $("prev").addEventListener("click", () => openViewer(current - 1));
  $("next").addEventListener("click", () => openViewer(current + 1));
  $("copy").addEventListener("click", copyPath);
  $("similar").addEventListener("click", () => {
    if (current >= 0) run({ kind: "similar", id: state.hits[current].id }, true);
  });
  document.addEventListener("keydown", (event) => {
    if (current < 0) return;
    if (event.key === "Escape") closeViewer();
    else if (event.key === "ArrowLeft") openViewer(current - 1);
    else if (event.key === "ArrowRight") openViewer(current + 1);
  });
  let dragDepth = 0;
  document.addEventListener("dragenter", (e) => { e.preventDefault(); dragDepth++; $("drop").hidden = false; });
  document.addEventListener("dragleave", () => { if (--dragDepth <= 0) { dragDepth = 0; $("drop").hidden = true; } });
  document.addEventListener("dragover", (e) => e.preventDefault());
  document.addEventListener("drop", (e) => {
    e.preventDefault(); dragDepth = 0; $("drop").hidden = true;
    if (e.dataTransfer.files.length) searchFile(e.dataTransfer.files[0]);
  });
  document.addEventListener("paste", (e) => {
    const item = [...(e.clipboardData || { items: [] }).items].find((i) => i.kind === "file");
    if (item) { e.preventDefault(); searchFile(item.getAsFile()); }
  });
  window.addEventListener("popstate", (e) => run(e.state || queryFromURL(), false));
  new IntersectionObserver((entries) => { if (entries.some((e) => e.isIntersecting)) loadMore(); },
                           { rootMargin: "800px" }).observe($("more"));
  const initial = queryFromURL();
  history.replaceState(initial, "", urlOf(initial));
  run(initial, false);
  refreshStatus();
})();
