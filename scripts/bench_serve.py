"""Benchmark `searchengine serve`: latency through HTTP, load while indexing, first page in a real browser,
and indexing throughput with thumbnails against without. The last line printed is one JSON object.

- warm text query (limit 50, distinct texts), `similar`, cached thumbnail: p50/p95 over keep-alive HTTP, on a
  ViT-B-32 library grown to --images with synthetic embeddings (as bench_search does: query cost does not
  depend on where the vectors came from) whose paths are empty stub files;
- --clients concurrent clients for --seconds (text / similar / thumbnail mix, every text asked once) while
  `searchengine index` adds --add photos to the same library: errors, p50/p95 overall and by kind, whether
  every added photo is found by the end, the CPU seconds of server (with its text encoder process) and clients,
  and the indexer's images/s under the load and alone (--add other photos just before, no queries);
- first page in Chromium (Playwright, /usr/bin/chromium): from navigation to the paint of the last thumbnail on
  the screen (Element Timing), on a library of --browser-images real photos indexed with the same model;
- `index` throughput with thumbnails / without (SEARCHENGINE_THUMBNAILS=0), bench_index's steady-state
  measure (4N - N images), runs interleaved to share the noise.

    .venv/bin/python scripts/bench_serve.py [--images 100000] [--seconds 60] [--browser-images 2000] [--n 24]
                                            [--baseline CHECKOUT]

--baseline: the server and indexer of another checkout, measured right before this tree's on the same library
(latency and load figures prefixed baseline_).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import threading
import time
from pathlib import Path

import benchlib
from benchlib import Server, query_texts

CHROMIUM = "/usr/bin/chromium"


def get(conn, path: str) -> tuple[int, bytes]:
    conn.request("GET", path)
    response = conn.getresponse()
    return response.status, response.read()


def timed(conn, path: str) -> float:
    started = time.perf_counter()
    status, _ = get(conn, path)
    if status != 200:
        raise RuntimeError(f"{path}: HTTP {status}")
    return (time.perf_counter() - started) * 1000


def percentiles(times: list[float]) -> dict:
    return {**benchlib.percentiles(times), "max_ms": round(max(times), 2), "n": len(times)}


def latencies(server: Server, queries: int) -> dict:
    """HTTP and in-process text queries interleaved (same texts, same moment), then similar and thumbnails."""
    from searchengine import Library

    conn = server.connection()
    first = json.loads(get(conn, "/api/search?q=warm-up&limit=50")[1])["results"]
    lib = Library.open(server.library)
    lib.search(text="warm-up", limit=50)
    text, local = [], []
    for t in query_texts(2 * queries, seed=int(time.time())):
        text.append(timed(conn, f"/api/search?q={t.replace(' ', '%20')}&limit=50"))
        started = time.perf_counter()
        lib.search(text=t + " again", limit=50)
        local.append((time.perf_counter() - started) * 1000)
    ids = [h["id"] for h in first]
    similar = [timed(conn, f"/api/images/{ids[k % len(ids)]}/similar?limit=50") for k in range(queries)]
    real = real_thumbnails(conn)
    for url in real:
        get(conn, url)  # made (or found) once: the figure is for cached ones
    thumbs = [timed(conn, real[k % len(real)]) for k in range(queries * 4)]
    conn.close()
    return {"text": percentiles(text), "similar": percentiles(similar), "thumbnail": percentiles(thumbs),
            "in_process_text": percentiles(local)}


def real_thumbnails(conn) -> list[str]:
    """Thumbnail URLs of the library's real photos (the first ids; the synthetic rows have no files)."""
    urls = []
    for image_id in range(1, 40):
        status, body = get(conn, f"/api/images/{image_id}")
        if status == 200:
            urls.append(json.loads(body)["thumbnail"])
    return urls


def load_while_indexing(server: Server, library: Path, work: Path, clients: int, seconds: float, add: int,
                        tree: Path | None = None) -> dict:
    folder = work / f"added-{int(time.time())}"
    added = benchlib.write_photos(folder, add, seed=int(time.time()) % 10000, size=benchlib.SMALL_PHOTO)
    conn = server.connection()
    ids = [h["id"] for h in json.loads(get(conn, "/api/search?q=a&limit=50")[1])["results"]]
    thumbs = real_thumbnails(conn)
    before = json.loads(get(conn, "/api/status")[1])["images"]
    # Every text request asks a text no one asked before (the server keeps recent texts' vectors for paging).
    texts = benchlib.many_query_texts(clients * 1500, seed=int(time.time()))
    times: list[float] = []
    by_kind: dict[str, list[float]] = {"text": [], "similar": [], "thumbnail": []}
    errors: list[str] = []
    stop = time.monotonic() + seconds

    def client(k: int) -> None:
        c = server.connection()
        n = 0
        while time.monotonic() < stop:
            kind = (k + n) % 3
            path = (f"/api/search?q={texts[k * 1500 + n // 3 % 1500].replace(' ', '%20')}&limit=50" if kind == 0
                    else f"/api/images/{ids[n % len(ids)]}/similar?limit=50" if kind == 1 else thumbs[n % len(thumbs)])
            try:
                times.append(timed(c, path))
                by_kind[("text", "similar", "thumbnail")[kind]].append(times[-1])
            except Exception as exc:  # noqa: BLE001 - counted and reported
                errors.append(f"{path}: {exc}")
                c.close()
                c = server.connection()
            n += 1
        c.close()

    alone = index_alone(library, work, add, tree)
    server_cpu, bench_cpu = cpu_seconds(server.proc.pid), sum(os.times()[:2])
    indexer = subprocess.Popen([*benchlib.SEARCHENGINE, "index", str(folder), "--library", str(library), "--json"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=benchlib.cli_env(),
                               cwd=tree or benchlib.ROOT)
    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    server_cpu, bench_cpu = cpu_seconds(server.proc.pid) - server_cpu, sum(os.times()[:2]) - bench_cpu
    out, err = indexer.communicate(timeout=1800)
    conn.close()
    conn = server.connection()  # the first one idled past the keep-alive timeout
    found = 0
    for path in added:  # by the end every added photo answers a search by itself, first
        body, boundary = _multipart(path.read_bytes())
        conn.request("POST", "/api/search", body, {"Content-Type": f"multipart/form-data; boundary={boundary}"})
        hits = json.loads(conn.getresponse().read())["results"]
        found += bool(hits) and hits[0]["path"] == str(path)
    after = json.loads(get(conn, "/api/status")[1])["images"]
    conn.close()
    return {"clients": clients, "seconds": seconds, "requests": len(times), "errors": len(errors),
            "error_samples": errors[:3], **percentiles(times),
            "by_kind": {kind: percentiles(values) for kind, values in by_kind.items() if values},
            "cpu_s": {"server": round(server_cpu, 1), "clients": round(bench_cpu, 1),
                      "of": round(seconds * os.cpu_count())},
            "index_alone_images_per_s": alone,
            "index_rc": indexer.returncode,
            "index_report": json.loads(out.strip().splitlines()[-1]) if indexer.returncode == 0 else err[-300:],
            "added": add, "found_by_end": found, "images_before": before, "images_after": after}


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process and its running children (the server's text encoder) have used so far
    (/proc; 0 where there is none)."""
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if stat.parent.name == str(pid) or fields[1] == str(pid):  # fields[1]: the parent's pid
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def index_alone(library: Path, work: Path, add: int, tree: Path | None) -> float | None:
    """The indexer's images/s adding `add` photos with no queries arriving (the bar the load run is held to)."""
    if not add:
        return None
    folder = work / f"alone-{int(time.time())}"
    benchlib.write_photos(folder, add, seed=int(time.time()) % 10000 + 1, size=benchlib.SMALL_PHOTO)
    done = subprocess.run([*benchlib.SEARCHENGINE, "index", str(folder), "--library", str(library), "--json"],
                          capture_output=True, text=True, env=benchlib.cli_env(), cwd=tree or benchlib.ROOT)
    return json.loads(done.stdout.strip().splitlines()[-1])["images_per_s"] if done.returncode == 0 else None


def _multipart(data: bytes) -> tuple[bytes, str]:
    boundary = "benchboundary7d1"
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"q.jpg\"\r\n"
            f"Content-Type: image/jpeg\r\n\r\n").encode()
    return head + data + f"\r\n--{boundary}--\r\n".encode(), boundary


# Every thumbnail's paint, as the browser reports it (Element Timing: the page marks its thumbnails).
OBSERVE_PAINTS = """window.__paints = new Map();
new PerformanceObserver((list) => {
  for (const e of list.getEntries())
    if (e.identifier === "thumbnail" && e.element) window.__paints.set(e.element, e.renderTime || e.loadTime);
}).observe({ type: "element", buffered: true });"""
# Once the first page (50 tiles) is in the grid and every thumbnail on the screen has been painted: the paint time
# of the last of them (ms since navigation start), and the moment all 50 were decoded (the earlier figure).
FIRST_PAGE = """() => {
  const imgs = [...document.querySelectorAll("#grid img")];
  if (imgs.length < 50 || !window.__paints) return null;
  const visible = imgs.filter((i) => { const r = i.getBoundingClientRect();
    return r.bottom > 0 && r.top < innerHeight && r.right > 0 && r.left < innerWidth; });
  if (!visible.every((i) => window.__paints.has(i))) return null;
  if (!imgs.slice(0, 50).every((i) => i.complete && i.naturalWidth > 0)) return null;
  return { last_visible_paint: Math.max(...visible.map((i) => window.__paints.get(i))), visible: visible.length,
           decoded_50: performance.now() };
}"""


def browser_first_page(server: Server, runs: int) -> dict:
    """Headless Chromium at 1920x1200 opens `/?q=TEXT`: the paint of the last thumbnail on the screen (Element
    Timing renderTime) and when all 50 of the first page were decoded, each from navigation start; median of
    `runs` distinct texts after one warm-up run."""
    from playwright.sync_api import sync_playwright

    paints, decoded, visible = [], [], 0
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                                    args=["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                                          "--disable-component-update", "--disable-sync", "--no-first-run"])
        for k, text in enumerate(query_texts(runs + 1, seed=int(time.time()))):
            context = browser.new_context(viewport={"width": 1920, "height": 1200})
            context.add_init_script(OBSERVE_PAINTS)
            page = context.new_page()
            page.goto(server.url + "?q=" + text.replace(" ", "%20"))
            done = page.wait_for_function(FIRST_PAGE, timeout=60_000, polling=10).json_value()
            if k:  # the first run warms the browser's own start-up paths
                paints.append(done["last_visible_paint"])
                decoded.append(done["decoded_50"])
                visible = done["visible"]
            context.close()
        browser.close()
    return {"median_ms": round(statistics.median(paints), 1), "runs_ms": [round(t, 1) for t in paints],
            "visible_thumbnails": visible, "all_50_decoded_median_ms": round(statistics.median(decoded), 1)}


def thumbnail_throughput(n: int, rounds: int, work: Path) -> dict:
    """bench_index's steady-state `index` rate with and without thumbnails, interleaved."""
    photos = benchlib.write_photos(work / "photos", 4 * n)
    model_dir = benchlib.random_model(work)
    rates: dict[str, list[float]] = {"with": [], "without": []}
    for _ in range(rounds):
        for label, value in (("without", "0"), ("with", "1")):
            os.environ["SEARCHENGINE_THUMBNAILS"] = value
            rate, _, _ = benchlib.index_steady_ips(photos, n, model_dir, work / "work")
            rates[label].append(round(rate, 2))
    os.environ.pop("SEARCHENGINE_THUMBNAILS", None)
    ratio = statistics.median(rates["with"]) / statistics.median(rates["without"])
    return {"n": n, "with_ips": rates["with"], "without_ips": rates["without"], "ratio": round(ratio, 3)}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=100_000, help="library size for latencies and load (0 skips)")
    parser.add_argument("--queries", type=int, default=50)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=60.0, help="load duration (0 skips the load test)")
    parser.add_argument("--add", type=int, default=48, help="photos `index` adds during the load test")
    parser.add_argument("--browser-images", type=int, default=2000, help="library for the browser figure (0 skips)")
    parser.add_argument("--browser-runs", type=int, default=5)
    parser.add_argument("--n", type=int, default=24, help="bench_index N for the thumbnail A/B (0 skips)")
    parser.add_argument("--rounds", type=int, default=2, help="A/B rounds")
    parser.add_argument("--work", type=Path, default=benchlib.WORK)
    parser.add_argument("--baseline", type=Path, default=None,
                        help="a checkout of an earlier commit (`git worktree add /tmp/before COMMIT`): its server (and "
                             "indexer) measured right before this tree's on the same library, for the HTTP figures")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    result: dict = {"machine": f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at start"}
    if args.images:
        library, _ = benchlib.grown_library(args.work, args.images, "serve", seed=1)
        result["library_images"] = args.images
        for prefix, tree in ([("baseline_", args.baseline)] if args.baseline else []) + [("", None)]:
            server = Server(library, tree)
            try:
                result[prefix + "latency"] = latencies(server, args.queries)
                print(prefix + "latency", json.dumps(result[prefix + "latency"]), flush=True)
                if args.seconds:
                    result[prefix + "load"] = load_while_indexing(server, library, args.work, args.clients,
                                                                  args.seconds, args.add, tree)
                    print(prefix + "load", json.dumps(result[prefix + "load"]), flush=True)
            finally:
                server.stop()
    if args.browser_images:
        library = benchlib.photo_library(args.work, args.browser_images)
        server = Server(library)
        try:
            result["browser_first_page"] = {"library_images": args.browser_images,
                                            **browser_first_page(server, args.browser_runs)}
            print("browser", json.dumps(result["browser_first_page"]), flush=True)
        finally:
            server.stop()
    if args.n:
        result["thumbnails_ab"] = thumbnail_throughput(args.n, args.rounds, args.work)
        print("thumbnails", json.dumps(result["thumbnails_ab"]), flush=True)
    return benchlib.emit(result)


if __name__ == "__main__":
    main()
