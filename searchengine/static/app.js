// searchengine's page: no framework, no build step, nothing fetched from anywhere but this server.
"use strict";
(() => {
  const LIMIT = 50;
  // Tiles that can be on the first screen load at once; the rest wait until they come near (loading=lazy).
  // Tiles are at least 150 px square (style.css), so this over-counts a little, never under.
  const EAGER = Math.ceil(window.innerWidth / 150) * Math.ceil(window.innerHeight / 150);
  const $ = (id) => document.getElementById(id);
  const grid = $("grid"), message = $("message"), viewer = $("viewer");
  const uploads = new Map();  // search-by-image files of this tab, by history key
  let state = null;           // {query, hits, ids (of the hits), offset, done, loading}
  let current = -1;           // index of the hit shown large, -1 when the viewer is closed
  let shown = null;           // the video in the large view: {hit, moments, moment (id), seek (seconds)}
  let textFor = null;         // the id whose text the large view shows (a video's moment changes it)
  // A browser's name for each codec (RFC 6381), to ask it whether it can play a video; FFmpeg's name otherwise.
  const CODECS = { h264: "avc1.42E01E", hevc: "hvc1.1.6.L93.B0", av1: "av01.0.05M.08", vp9: "vp09.00.10.08",
                   vp8: "vp8", mpeg4: "mp4v.20.8", theora: "theora" };
  const PASSED = ["kind", "moments"];  // page parameters handed on to the API as they are
  const SVG = $("boxes").namespaceURI;  // for the boxes' polygons
  const PLACEHOLDERS = { text: "Describe a photo or a moment, or drop / paste an image",
                         words: "Words written in the pictures: all of them, \"a phrase\", prefix*" };

  function queryFromURL() {
    const p = new URLSearchParams(location.search);
    const passed = PASSED.filter((k) => p.get(k)).map((k) => "&" + k + "=" + encodeURIComponent(p.get(k))).join("");
    let query = null;
    if (p.get("q")) query = { kind: "text", q: p.get("q") };
    else if (p.get("words")) query = { kind: "words", q: p.get("words") };
    else if (/^\d+$/.test(p.get("similar") || "")) query = { kind: "similar", id: Number(p.get("similar")) };
    else if (p.get("image")) query = { kind: "image", key: p.get("image"), name: p.get("name") || "image" };
    if (query && passed) query.passed = passed;
    return query;
  }

  function urlOf(query) {
    if (!query) return "/";
    const passed = query.passed || "";
    if (query.kind === "text") return "/?q=" + encodeURIComponent(query.q) + passed;
    if (query.kind === "words") return "/?words=" + encodeURIComponent(query.q) + passed;
    if (query.kind === "similar") return "/?similar=" + query.id + passed;
    return "/?image=" + encodeURIComponent(query.key) + "&name=" + encodeURIComponent(query.name) + passed;
  }

  function describe(query) {
    if (query.kind === "text") return "“" + query.q + "”";
    if (query.kind === "words") return "the words “" + query.q + "”";
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
      for (const [k, v] of new URLSearchParams(query.passed || "")) body.append(k, v);
      response = await fetch("/api/search", { method: "POST", body });
    } else {
      const page = "limit=" + LIMIT + "&offset=" + offset;
      const path = query.kind === "text" ? "/api/search?q=" + encodeURIComponent(query.q) + "&" + page
        : query.kind === "words" ? "/api/search?words=" + encodeURIComponent(query.q) + "&" + page
        : "/api/images/" + query.id + "/similar?" + page;
      response = await fetch(path + (query.passed || ""));
    }
    const data = await response.json().catch(() => ({ error: "unexpected answer (" + response.status + ")" }));
    if (!response.ok) throw new Error(data.error || "request failed");
    return data.results;
  }

  function tile(hit, index) {
    const a = document.createElement("a");
    a.className = "tile";
    a.href = hit.file;
    const lines = hit.words ? hit.words.map((w) => "\n“" + w.text + "”").join("") : "";
    a.title = hit.path + (hit.score == null ? "" : "\nscore " + hit.score.toFixed(3)) + lines;
    a.dataset.index = String(index);
    a.dataset.id = String(hit.id);
    const img = document.createElement("img");
    img.loading = index < EAGER ? "eager" : "lazy";
    img.decoding = "async";
    img.setAttribute("elementtiming", "thumbnail");  // its paint is measurable (Element Timing API)
    img.alt = hit.path.split("/").pop();
    img.src = hit.thumbnail;
    if (hit.width && hit.height) { img.width = hit.width; img.height = hit.height; }
    a.append(img);
    if (hit.score != null) {  // null: a listing by words or filters alone, newest first
      const score = document.createElement("span");
      score.className = "score";
      score.textContent = hit.score.toFixed(3);
      a.append(score);
    }
    if (hit.kind === "video") {
      a.classList.add("video");
      a.title = hit.path + "\nat " + clock(hit.start_s) + (hit.score == null ? "" : " · score " + hit.score.toFixed(3))
        + lines;
      const badge = document.createElement("span");
      badge.className = "badge";
      badge.textContent = "\u25B6 " + clock(hit.start_s);
      a.append(badge);
    }
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
      const page = await fetchPage(s.query, s.offset);
      if (s !== state) return;
      const start = s.hits.length;
      // A text query's next page is the fusion of more CLIP hits with the words, which may rank again one
      // already shown: each image is shown once.
      const hits = page.filter((h) => !s.ids.has(h.id));
      hits.forEach((h) => s.ids.add(h.id));
      s.hits.push(...hits);
      s.offset += page.length;
      s.done = page.length < LIMIT;
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
    if (query && (query.kind === "text" || query.kind === "words")) {
      $("q").value = query.q;
      setWordsMode(query.kind === "words");
    }
    state = query ? { query, hits: [], ids: new Set(), offset: 0, done: false, loading: false } : null;
    document.title = query ? describe(query) + " · searchengine" : "searchengine";
    return state ? loadMore() : Promise.resolve();
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
    $("large").alt = hit.path;
    $("path").textContent = hit.path;
    $("original").href = hit.file;
    $("original").textContent = hit.kind === "video" ? "Open video" : "Open original";
    $("copy").textContent = "Copy path";
    showMedia(hit);
    drawBoxes();  // the boxes of the hit shown, once its picture is (the preview's load draws them again)
    showFacts(hit, null);
    showText(null);
    textFor = hit.id;
    try {
      const response = await fetch("/api/images/" + hit.id);
      if (response.ok && current === index) {
        const record = await response.json();
        showFacts(hit, record);
        if (textFor === hit.id) showText(record, hit.words);
        if (shown && shown.hit === hit) showMoments(record.moments);
      }
    } catch (err) { /* the facts from the hit stay */ }
  }

  // --- the words read in the picture: the matching lines' boxes over it, the whole text beside it ------------
  const same = (a, b) => a.text === b.text && JSON.stringify(a.box) === JSON.stringify(b.box);

  function showText(record, words) {
    const box = $("text-box"), text = $("text");
    $("copy-text").textContent = "Copy text";
    if (!record || !record.text || !record.text_lines) { box.hidden = true; text.replaceChildren(); return; }
    text.replaceChildren(...record.text_lines.map((line) => {
      const div = document.createElement("div");  // a line each (a <p> would copy as a paragraph)
      if ((words || []).some((w) => same(w, line))) {
        const mark = document.createElement("mark");
        mark.textContent = line.text;
        div.append(mark);
      } else {
        div.textContent = line.text;
      }
      return div;
    }));
    box.hidden = false;
  }

  async function momentText(id) {  // another moment of the video: its own text (its frame's), without boxes
    if (textFor === id || current < 0) return;
    textFor = id;
    try {
      const response = await fetch("/api/images/" + id);
      const record = response.ok ? await response.json() : null;
      if (textFor === id) showText(record, shown && shown.hit.id === id ? shown.hit.words : null);
    } catch (err) { if (textFor === id) showText(null); }
  }

  // The hit's matching lines, over the picture as shown: the preview (or a video's frame), or a video paused in
  // its moment. Boxes are fractions of the upright picture, so an SVG of viewBox 0 0 1 1 over it fits any size.
  function drawBoxes() {
    const svg = $("boxes"), large = $("large"), player = $("player");
    const hit = current >= 0 && state ? state.hits[current] : null;
    let rect = null;
    if (hit && hit.words && hit.words.length && (!shown || shown.moment === hit.id)) {
      if (!large.hidden && large.complete && large.naturalWidth > 0) {
        rect = { x: large.offsetLeft, y: large.offsetTop, w: large.offsetWidth, h: large.offsetHeight };
      } else if (!player.hidden && player.paused && inMoment(hit, player)) {
        const vw = player.videoWidth || hit.width, vh = player.videoHeight || hit.height;
        const scale = Math.min(player.offsetWidth / vw, player.offsetHeight / vh);
        rect = { w: vw * scale, h: vh * scale };
        rect.x = player.offsetLeft + (player.offsetWidth - rect.w) / 2;
        rect.y = player.offsetTop + (player.offsetHeight - rect.h) / 2;
      }
    }
    if (!rect || !(rect.w > 0 && rect.h > 0)) { svg.setAttribute("hidden", ""); svg.replaceChildren(); return; }
    Object.assign(svg.style, { left: rect.x + "px", top: rect.y + "px", width: rect.w + "px", height: rect.h + "px" });
    svg.replaceChildren(...hit.words.map((w) => {
      const polygon = document.createElementNS(SVG, "polygon");
      polygon.setAttribute("points", w.box.map(([x, y]) => x + "," + y).join(" "));
      const title = document.createElementNS(SVG, "title");
      title.textContent = w.text;
      polygon.append(title);
      return polygon;
    }));
    svg.removeAttribute("hidden");  // an SVG element has no `hidden` property
  }

  function inMoment(hit, player) {
    if (player.readyState < HTMLMediaElement.HAVE_METADATA) return true;  // its poster: the moment's frame
    const t = player.currentTime + 0.1;
    return hit.start_s == null || (hit.start_s <= t && t < hit.end_s);
  }

  // --- a video in the large view: played from its moment, or its frame and a download link -------------------
  function canPlay(hit) {
    if (!hit.mime || hit.mime === "video/x-msvideo") return false;  // AVI: no browser plays it
    // Chromium plays QuickTime files through its MP4 reader yet answers "" for video/quicktime itself.
    const container = hit.mime === "video/quicktime" ? "video/mp4" : hit.mime;
    const codec = hit.codec ? CODECS[hit.codec] || hit.codec : null;
    return $("player").canPlayType(codec ? container + '; codecs="' + codec + '"' : container) !== "";
  }

  function showMedia(hit) {
    const player = $("player"), large = $("large");
    stopPlayer();
    shown = null;
    $("cannot-play").hidden = true;
    $("moments-box").hidden = true;
    $("moments").replaceChildren();
    if (hit.kind !== "video") {
      player.hidden = true;
      large.hidden = false;
      large.src = hit.preview;
      return;
    }
    shown = { hit, moments: [], moment: hit.id, seek: hit.start_s ?? hit.frame_s ?? 0 };
    if (!canPlay(hit)) { cannotPlay(hit); return; }
    large.hidden = true;
    large.removeAttribute("src");
    player.hidden = false;
    player.poster = hit.preview;
    player.src = hit.file;
  }

  function cannotPlay(hit, failed) {
    stopPlayer();
    const moment = shown.moments.find((m) => m.id === shown.moment);
    $("player").hidden = true;
    $("large").hidden = false;
    $("large").src = moment ? moment.preview : hit.preview;
    $("download").href = hit.file;
    $("download").setAttribute("download", hit.path.split("/").pop());
    $("why").textContent = failed ? "The video could not be played here."
      : "This browser cannot play " + (hit.codec ? hit.codec.toUpperCase() + " video" : "this video")
        + (hit.mime === "video/x-msvideo" ? " in AVI" : "") + ".";
    $("cannot-play").hidden = false;
  }

  function stopPlayer() {
    const player = $("player");
    if (player.getAttribute("src")) {
      player.pause();
      player.removeAttribute("src");
      player.load();  // drops the connection and the buffered data
    }
    player.removeAttribute("poster");
  }

  function seek(seconds) {
    const player = $("player");
    if (player.hidden) return;
    if (player.readyState >= HTMLMediaElement.HAVE_METADATA) {
      player.currentTime = seconds;
      player.play().catch(() => { /* no autoplay allowed: the frame is shown, the controls play it */ });
    } else {
      shown.seek = seconds;  // loadedmetadata seeks there
    }
  }

  function showMoments(moments) {
    if (!shown || !moments || moments.length < 2) return;
    shown.moments = moments;
    const list = $("moments");
    list.replaceChildren(...moments.map((m) => {
      const li = document.createElement("li"), button = document.createElement("button"), img = new Image();
      button.type = "button";
      button.className = "moment";
      button.dataset.id = String(m.id);
      button.title = clock(m.start_s) + " – " + clock(m.end_s);
      img.loading = "lazy";
      img.decoding = "async";
      img.alt = "";
      img.src = m.thumbnail;
      const time = document.createElement("span");
      time.textContent = clock(m.start_s);
      button.append(img, time);
      button.addEventListener("click", () => {
        markMoment(m.id);
        if ($("player").hidden) $("large").src = m.preview;
        else seek(m.start_s);
      });
      li.append(button);
      return li;
    }));
    $("moments-box").hidden = false;
    markMoment(shown.moment);
  }

  function markMoment(id) {
    if (!shown) return;
    shown.moment = id;
    momentText(id);
    drawBoxes();
    for (const b of $("moments").querySelectorAll(".moment")) {
      if (b.dataset.id === String(id)) b.setAttribute("aria-current", "true");
      else b.removeAttribute("aria-current");
    }
    const m = shown.moments.find((x) => x.id === id);
    const when = $("facts").querySelector('[data-fact="Moment"]');
    if (m && when) when.textContent = clock(m.start_s) + " – " + clock(m.end_s);
  }

  function clock(seconds) {
    const s = Math.max(0, Math.floor(seconds || 0)), h = Math.floor(s / 3600), m = Math.floor(s / 60) % 60;
    const ss = String(s % 60).padStart(2, "0");
    return h ? h + ":" + String(m).padStart(2, "0") + ":" + ss : m + ":" + ss;
  }

  function showFacts(hit, record) {
    const facts = hit.score == null ? [] : [["Score", hit.score.toFixed(4)]];
    if (hit.kind === "video") facts.push(["Moment", clock(hit.start_s) + " – " + clock(hit.end_s)]);
    if (hit.width && hit.height) facts.push(["Size", hit.width + " × " + hit.height + (record ? " · " + bytes(record.size) : "")]);
    if (record) {
      if (record.duration_s) facts.push(["Length", clock(record.duration_s) + (record.segments ? " · " + record.segments + (record.segments === 1 ? " moment" : " moments") : "")]);
      facts.push(["Date", record.taken_at || new Date(record.mtime).toLocaleString() + " (file)"]);
      if (record.camera) facts.push(["Camera", record.camera]);
      if (record.lens) facts.push(["Lens", record.lens]);
      if (record.format) facts.push(["Format", record.format.toUpperCase() + (record.codec ? " · " + record.codec.toUpperCase() : "")
                                     + (record.fps ? " · " + Math.round(record.fps * 100) / 100 + " fps" : "")]);
      if (record.latitude != null && record.longitude != null) {
        facts.push(["Place", record.latitude.toFixed(5) + ", " + record.longitude.toFixed(5)]);
      }
    }
    const dl = $("facts");
    dl.replaceChildren();
    for (const [name, value] of facts) {
      const dt = document.createElement("dt"), dd = document.createElement("dd");
      dt.textContent = name; dd.textContent = value;
      dd.dataset.fact = name;
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
    stopPlayer();
    shown = null;
    textFor = null;
    $("large").removeAttribute("src");
    current = -1;
    drawBoxes();
    if (tileEl) tileEl.focus({ preventScroll: false });
  }

  // The clipboard where the page may use it (a secure context: localhost), else the selection and execCommand.
  async function copy(text, node, button) {
    try { await navigator.clipboard.writeText(text); }
    catch (err) {
      const range = document.createRange();
      range.selectNodeContents(node);
      getSelection().removeAllRanges(); getSelection().addRange(range);
      document.execCommand("copy");
    }
    button.textContent = "Copied";
  }

  function setWordsMode(on) {
    $("words").checked = on;
    $("q").placeholder = PLACEHOLDERS[on ? "words" : "text"];
  }

  // --- status line -----------------------------------------------------------------------------------------
  async function refreshStatus() {
    try {
      const [status, indexing] = await Promise.all([fetch("/api/status").then((r) => r.json()),
                                                    fetch("/api/indexing").then((r) => r.json())]);
      let line = status.images.toLocaleString() + " images · "
        + (status.videos ? status.videos.toLocaleString() + " videos · " : "") + status.model;
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
    if (q) run({ kind: $("words").checked ? "words" : "text", q }, true);
  });
  $("words").addEventListener("change", () => {  // the search shown, again in the other mode
    setWordsMode($("words").checked);
    const q = $("q").value.trim(), kind = state ? state.query.kind : null;
    if (q && (kind === "text" || kind === "words") && state.query.q === q) $("search").requestSubmit();
  });
  $("pick").addEventListener("change", (event) => { searchFile(event.target.files[0]); event.target.value = ""; });
  $("close").addEventListener("click", closeViewer);
  $("prev").addEventListener("click", () => openViewer(current - 1));
  $("next").addEventListener("click", () => openViewer(current + 1));
  $("copy").addEventListener("click", () => copy($("path").textContent, $("path"), $("copy")));
  $("copy-text").addEventListener("click", () => copy([...$("text").children].map((line) => line.textContent).join("\n"),
                                                      $("text"), $("copy-text")));
  $("large").addEventListener("load", drawBoxes);
  new ResizeObserver(drawBoxes).observe(document.querySelector(".viewer-image"));
  $("similar").addEventListener("click", () => {
    if (current < 0) return;
    const query = { kind: "similar", id: shown ? shown.moment : state.hits[current].id };
    if (state.query.passed) query.passed = state.query.passed;
    run(query, true);
  });
  const player = $("player");
  player.addEventListener("loadedmetadata", () => {
    if (!shown || shown.seek == null) return;
    const start = Math.min(shown.seek, Math.max(0, (player.duration || Infinity) - 0.05));
    shown.seek = null;
    seek(start);
  });
  for (const name of ["loadedmetadata", "play", "pause", "seeked", "resize"]) player.addEventListener(name, drawBoxes);
  player.addEventListener("timeupdate", () => {
    if (!shown || !shown.moments.length || player.seeking) return;
    const t = player.currentTime + 0.1;  // a seek lands on a frame, maybe a hair before the moment's start
    const m = shown.moments.find((x) => x.start_s <= t && t < x.end_s);
    if (m && m.id !== shown.moment) markMoment(m.id);
  });
  player.addEventListener("error", () => {  // a format canPlayType was too hopeful about, or a broken file
    if (shown && player.getAttribute("src")) cannotPlay(shown.hit, true);
  });
  document.addEventListener("keydown", (event) => {
    if (current < 0) return;
    if (event.target === player && event.key !== "Escape") return;  // its own keys seek and pause
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
  // The status line waits for the first page: its counts are no reason to delay the answer.
  run(initial, false).finally(refreshStatus);
})();
