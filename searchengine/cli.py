"""The `searchengine` command: parse, call the Library, format; domain errors become one-line messages."""
from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import asdict
from typing import Any

# Before numpy loads: its thread pool start-up costs more than it saves for one query (measured ~1 s vs 0.2 s
# on a busy 2-core box). Indexing runs its heavy work in torch, which keeps its own threads.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import click  # noqa: E402

from indexer.errors import SearchEngineError  # noqa: E402
from searchengine.filters import FilterError, SearchFilters  # noqa: E402
from searchengine.library import Library  # noqa: E402

library_option = click.option(
    "--library", "library_dir", type=click.Path(file_okay=False), default=None,
    help="Library folder (default: $SEARCHENGINE_LIBRARY, else the per-user data folder).")
json_option = click.option("--json", "as_json", is_flag=True, help="Machine-readable output on stdout.")
device_option = click.option(
    "--device", default="auto", show_default=True,
    help="Where the image model runs: auto (CUDA, else Apple MPS, else CPU), cpu, cuda, cuda:N or mps.")


class Main(click.Group):
    """Turns domain errors into `Error: ...` and unexpected ones into one line too, unless --debug."""

    def main(self, *args: Any, standalone_mode: bool = True, **kwargs: Any) -> Any:
        """As click's, except that a usage error is one line (click adds the usage and a hint above it)."""
        if not standalone_mode:
            return super().main(*args, standalone_mode=False, **kwargs)
        try:
            return super().main(*args, standalone_mode=False, **kwargs)
        except click.exceptions.NoArgsIsHelpError as exc:
            click.echo(exc.format_message())
            sys.exit(exc.exit_code)
        except click.UsageError as exc:
            where = f" (see `{exc.ctx.command_path} --help`)" if exc.ctx else ""
            click.echo(f"Error: {exc.format_message()}{where}", err=True)
            sys.exit(exc.exit_code)
        except click.ClickException as exc:
            exc.show()
            sys.exit(exc.exit_code)
        except click.Abort:
            click.echo("Aborted!", err=True)
            sys.exit(1)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except SearchEngineError as exc:
            raise click.ClickException(str(exc)) from None
        except (click.ClickException, click.exceptions.Exit, click.Abort, SystemExit):
            raise
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)
        except BrokenPipeError:
            # The reader went away (`... | head`): stop quietly, as other command-line tools do.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            sys.exit(141)
        except Exception as exc:
            if ctx.meta.get("debug"):
                raise
            raise click.ClickException(f"unexpected {type(exc).__name__}: {exc} (run with --debug for details)") from None


@click.group(cls=Main)
@click.option("--debug", is_flag=True, help="Show tracebacks.")
@click.version_option(package_name="searchengine")
@click.pass_context
def main(ctx: click.Context, debug: bool) -> None:
    """Local semantic image search: find photos by describing them, or by showing one."""
    ctx.meta["debug"] = debug


@main.command()
@click.argument("paths", nargs=-1, required=False, type=click.Path())
@library_option
@click.option("--model", default=None, help="open_clip model name, hf-hub:ORG/REPO or local-dir:PATH (first run only).")
@click.option("--pretrained", default=None, help="Pretrained tag or checkpoint file (first run only).")
@click.option("--batch-size", default=32, show_default=True, type=click.IntRange(1, 4096))
@click.option("--workers", default=None, type=click.IntRange(0, 64), help="Decode processes (default: CPU count).")
@click.option("--exclude", multiple=True, help="Glob of file or folder names/paths to leave out (repeatable).")
@click.option("--int8", is_flag=True, default=None,
              help="Opt-in faster CPU image encoder (dynamic int8, checked on your first photos); first run only.")
@click.option("--ray", "ray_address", default=None, is_flag=False, flag_value="auto", metavar="[auto|ADDRESS]",
              help="Run the work on Ray: `auto` starts a local instance; an address joins a cluster (ray extra).")
@device_option
@json_option
def index(paths, library_dir, model, pretrained, batch_size, workers, exclude, int8, ray_address, device,
          as_json) -> None:
    """Index image files under PATHS (none: the folders earlier runs were given): new and changed files are
    embedded, vanished ones removed."""
    from indexer.pipeline import IndexOptions

    library = Library.open(library_dir)
    options = IndexOptions(batch_size=batch_size, workers=workers)
    with _Progress() as progress:
        if not paths:
            if exclude or model or pretrained or int8:
                raise click.UsageError("--exclude, --model, --pretrained and --int8 need PATHs")
            summary = library.reindex(options=options, reporter=progress, ray=ray_address, device=device)
        else:
            summary = library.index(paths, model=model, pretrained=pretrained, exclude=exclude, reporter=progress,
                                    options=options, image_precision="int8" if int8 else None, ray=ray_address,
                                    device=device)
    figures = asdict(summary) | {"images_per_s": round(summary.images_per_s, 2), "library": str(library.folder)}
    if as_json:
        click.echo(json.dumps(figures))
    else:
        click.echo(f"added {summary.added}, updated {summary.updated}, removed {summary.removed}, "
                   f"unchanged {summary.unchanged}, failed {summary.failed} "
                   f"({summary.reused} reused by content, {summary.moved} moved, {summary.images_per_s:.1f} images/s, "
                   f"{summary.seconds:.1f} s{_on_device(summary)})", err=True)


def _on_device(summary: Any) -> str:
    return f", on {summary.device} in {summary.compute_precision}" if summary.device else ""


def filter_options(command: Any) -> Any:
    """The search filters, shared by every command that narrows a search."""
    options = [
        click.option("--after", metavar="DATE", help="Taken on or after DATE (2023, 2023-06, 2023-06-14 or a full timestamp)."),
        click.option("--before", metavar="DATE", help="Taken before DATE (same forms; exclusive)."),
        click.option("--in", "folder", metavar="FOLDER", help="In FOLDER or below it."),
        click.option("--camera", metavar="TEXT", help="Camera make or model contains TEXT (any case)."),
        click.option("--near", metavar="LAT,LON[,KM]", help="Taken within KM (default 1) of a place."),
        click.option("--format", "image_format", metavar="FORMAT", help="jpeg, png, webp, gif, bmp, tiff, heic, avif."),
        click.option("--orientation", metavar="landscape|portrait|square", help="Shape as displayed."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def parse_filters(after, before, folder, camera, near, image_format, orientation) -> SearchFilters:
    try:
        return SearchFilters.parse(after=after, before=before, folder=folder, camera=camera, near=near,
                                   format=image_format, orientation=orientation)
    except FilterError as exc:
        raise click.UsageError(str(exc)) from None


@main.command()
@click.argument("query", nargs=-1, metavar="[TEXT | FILE] [+|- TERM]...")
@click.option("--image", type=click.Path(dir_okay=False), default=None, help="Find images like this image file.")
@click.option("--add", "-a", multiple=True, metavar="TERM", help="A text or image file to add (repeatable).")
@click.option("--subtract", "--sub", "-s", multiple=True, metavar="TERM",
              help="A text or image file to subtract (repeatable).")
@click.option("--text", "force_text", is_flag=True, help="Read every term as text, even one naming a file.")
@click.option("--limit", default=20, show_default=True, type=click.IntRange(1, 100000))
@click.option("--exact", is_flag=True, help="Exhaustive search over every stored embedding.")
@click.option("--null", "null", is_flag=True,
              help="Print only paths, each ended by a NUL byte (for xargs -0), instead of score<TAB>path lines.")
@click.option("--min-score", type=float, default=None, help="Drop results scoring below this cosine similarity.")
@click.option("--cutoff", type=click.Choice(["off", "auto"]), default="off", show_default=True,
              help="auto: keep only results that stand out from the library's scores for this query.")
@click.option("--copy-to", type=click.Path(file_okay=False), default=None, help="Copy the results into this folder.")
@click.option("--link-to", type=click.Path(file_okay=False), default=None,
              help="Put symbolic links to the results into this folder.")
@filter_options
@library_option
@json_option
def search(query, image, add, subtract, force_text, limit, exact, null, min_score, cutoff, copy_to, link_to,
           after, before, folder, camera, near, image_format, orientation, library_dir, as_json) -> None:
    """Search by TEXT, by an image FILE (or --image), or by terms joined with + and - (rclip's syntax).

    A term is a text or an existing image file, optionally weighted: "./racing car.jpg" - "2:sports car" + snow.
    Filters narrow the search; alone, they list the matching images newest first.
    """
    filters = parse_filters(after, before, folder, camera, near, image_format, orientation)
    if query and image is not None:
        raise click.UsageError("give TEXT or --image, not both")
    if not query and image is None and not add and not subtract and not filters:
        raise click.UsageError("give a TEXT to search for, --image FILE, or a filter")
    if copy_to is not None and link_to is not None:
        raise click.UsageError("give --copy-to or --link-to, not both")
    library = Library.open(library_dir)
    terms = _query_terms(query, image, add, subtract, force_text)
    if not terms:  # filters alone: newest first
        hits = library.search(limit=limit, filters=filters)
    elif len(terms) == 1 and terms[0].weight > 0:  # one term: the plain text or image search, as before
        single = str(terms[0].value)
        hits = library.search(text=single if terms[0].kind == "text" else None,
                              image=single if terms[0].kind == "image" else None,
                              limit=limit, exact=exact, min_score=min_score, cutoff=cutoff, filters=filters)
    else:
        hits = library.search(terms=terms, limit=limit, exact=exact, min_score=min_score, cutoff=cutoff,
                              filters=filters)
    if as_json:
        click.echo(json.dumps([_hit_json(h) for h in hits]))
    else:
        for hit in hits:
            if null:
                _write(os.fsencode(hit.path) + b"\0")
            else:
                first = f"{hit.score:.4f}" if hit.score is not None else (hit.taken_at or "-")
                _write(f"{first}\t".encode() + escape_path(os.fsencode(hit.path)) + b"\n")
    if copy_to is not None or link_to is not None:
        from searchengine.export import export

        target = copy_to if copy_to is not None else link_to
        written = export([h.path for h in hits], target, "copy" if copy_to is not None else "link")
        verb = "copied" if copy_to is not None else "linked"
        click.echo(f"{verb} {len(written)} files into {os.path.abspath(target)}", err=True)


def _hit_json(hit: Any) -> dict:
    fields = asdict(hit)
    if hit.score is not None:
        fields["score"] = round(hit.score, 6)
    return fields


def _query_terms(query: tuple[str, ...], image: str | None, add: tuple[str, ...], subtract: tuple[str, ...],
                 force_text: bool) -> list:
    """The query's terms: --image FILE first, then the + / - expression, then --add and --subtract."""
    from searchengine.expression import IMAGE, Term, parse_expression

    terms = parse_expression(query, add, subtract, force_text)
    return ([Term(IMAGE, image)] if image is not None else []) + terms


@main.command()
@library_option
@json_option
def repair(library_dir, as_json) -> None:
    """Rebuild the vector index from the catalog (a damaged or missing index file, or one to retrain)."""
    summary = Library.open(library_dir).repair()
    if as_json:
        click.echo(json.dumps(asdict(summary)))
    else:
        click.echo(f"rebuilt the {summary.index} vector index of {summary.images} images in {summary.seconds:.1f} s",
                   err=True)


@main.command()
@click.argument("path_or_id")
@library_option
@json_option
def show(path_or_id, library_dir, as_json) -> None:
    """One image's record: path, size, dates, content hash, dimensions, camera, place."""
    details = asdict(Library.open(library_dir).show(path_or_id))
    if as_json:
        click.echo(json.dumps(details))
        return
    for key, value in details.items():
        text = "" if value is None else value
        if key == "path":
            _write(b"path: " + escape_path(os.fsencode(value)) + b"\n")
        else:
            _write(f"{key}: {text}\n".encode())


@main.command()
@library_option
@click.option("--failures", is_flag=True, help="Also list the files that could not be indexed, with why.")
@json_option
def status(library_dir, failures, as_json) -> None:
    """What the library holds."""
    library = Library.open(library_dir)
    figures = asdict(library.status())
    if failures:
        figures["failures"] = [{"path": p, "reason": r} for p, r in library.failures()]
    if as_json:
        click.echo(json.dumps(figures))
        return
    for key, value in figures.items():
        if key != "failures":
            click.echo(f"{key}: {value}")
    for item in figures.get("failures", []):
        _write(b"failed\t" + escape_path(os.fsencode(item["path"])) + b"\t" + item["reason"].encode() + b"\n")


@main.command()
@click.argument("query", nargs=-1, metavar="[TEXT | FILE] [+|- TERM]...")
@click.option("--image", "images", multiple=True, type=click.Path(dir_okay=False), help="Image file (repeatable).")
@click.option("--add", "-a", multiple=True, metavar="TERM", help="A text or image file to add (repeatable).")
@click.option("--subtract", "--sub", "-s", multiple=True, metavar="TERM",
              help="A text or image file to subtract (repeatable).")
@click.option("--text", "force_text", is_flag=True, help="Read every term as text, even one naming a file.")
@click.option("--model", default=None, help="Model when there is no library (default ViT-B-32).")
@click.option("--pretrained", default=None, help="Pretrained tag or checkpoint file when there is no library.")
@device_option
@library_option
@json_option
def embed(query, images, add, subtract, force_text, model, pretrained, device, library_dir, as_json) -> None:
    """Print embeddings, computed exactly as index and search compute them (one JSON list per line).

    A query with + / - terms (or --add / --subtract) prints its one combined, normalised query vector.
    """
    if not query and not images and not add and not subtract:
        raise click.UsageError("give a TEXT and/or --image FILE")
    library = Library.open(library_dir)
    if len(query) > 1 or add or subtract:
        from searchengine.expression import parse_expression

        if images:
            raise click.UsageError("--image lists separate embeddings; put the image in the query as + FILE")
        terms = parse_expression(query, add, subtract, force_text)
        vector = library.embed_terms(terms, model=model, pretrained=pretrained)
        if as_json:
            click.echo(json.dumps([{"terms": [t.describe() for t in terms], "embedding": vector.tolist()}]))
        else:
            click.echo(json.dumps(vector.tolist()))
        return
    texts, files = _single_term(query[0] if query else None, force_text)
    files += list(images)
    vectors = library.embed(texts, files, model=model, pretrained=pretrained, device=device)
    inputs = [{"text": t} for t in texts] + [{"image": os.path.abspath(p)} for p in files]
    if as_json:
        click.echo(json.dumps([dict(i, embedding=v.tolist()) for i, v in zip(inputs, vectors)]))
        return
    for vector in vectors:
        click.echo(json.dumps(vector.tolist()))


def _single_term(raw: str | None, force_text: bool) -> tuple[list[str], list[str]]:
    """A lone TEXT: ([text], []) or, when it names an image file, ([], [file]); a weight changes nothing alone."""
    from searchengine.expression import IMAGE, resolve_term

    if raw is None:
        return [], []
    term = resolve_term(raw, 1.0, force_text)
    return ([], [str(term.value)]) if term.kind == IMAGE else ([str(term.value)], [])


@main.command()
@click.option("--threshold", type=click.FloatRange(0, 1, min_open=True), default=None,
              help="Cosine similarity from which two images are near-duplicates (default 0.95).")
@library_option
@json_option
def duplicates(threshold, library_dir, as_json) -> None:
    """Groups of identical or near-identical images (resized, re-encoded, lightly cropped copies), most first."""
    groups = Library.open(library_dir).duplicates(threshold)
    if as_json:
        click.echo(json.dumps([asdict(g) for g in groups]))
        return
    for n, group in enumerate(groups, 1):
        how = "identical files" if group.identical else f"similarity >= {group.similarity:.4f}"
        click.echo(f"{'' if n == 1 else chr(10)}# group {n}: {len(group.images)} images, {how}")
        for image in group.images:
            size = f"{image.width}x{image.height}" if image.width and image.height else "-"
            _write(f"{image.size}\t{size}\t{image.taken_at or image.modified}\t".encode()
                   + escape_path(os.fsencode(image.path)) + b"\n")
    click.echo(f"{len(groups)} groups, {sum(len(g.images) for g in groups)} images", err=True)


@main.command(name="export")
@click.argument("folder", type=click.Path(file_okay=False))
@click.option("--format", "fmt", type=click.Choice(["parquet"]), default="parquet", show_default=True)
@library_option
@json_option
def export_command(folder, fmt, library_dir, as_json) -> None:
    """Write every image's path, size, mtime, content hash and embedding to FOLDER (images.parquet)."""
    summary = Library.open(library_dir).export(folder, fmt)
    if as_json:
        click.echo(json.dumps(asdict(summary)))
    else:
        click.echo(f"exported {summary.rows} images to {summary.file}", err=True)


@main.command(name="import")
@click.argument("sources", nargs=-1, required=True, type=click.Path(exists=True))
@click.option("--model", default=None, help="Model that made the embeddings, when the source does not say.")
@click.option("--pretrained", default=None, help="Its pretrained tag or checkpoint file.")
@click.option("--require-files", is_flag=True, help="Leave out rows whose file is not on this machine.")
@library_option
@json_option
def import_command(sources, model, pretrained, require_files, library_dir, as_json) -> None:
    """Add embeddings from our export or clip-retrieval output (img_emb/ + metadata/) to the library."""
    summary = Library.open(library_dir).import_embeddings(list(sources), model, pretrained, require_files)
    if as_json:
        click.echo(json.dumps(asdict(summary) | {"seconds": round(summary.seconds, 3)}))
    else:
        click.echo(f"added {summary.added}, already held {summary.already}, without a local file "
                   f"{summary.without_file}, left out {summary.refused} ({summary.seconds:.1f} s)", err=True)


_ESCAPES = {b"\\": b"\\\\", b"\t": b"\\t", b"\n": b"\\n", b"\r": b"\\r"}


def escape_path(path: bytes) -> bytes:
    """A path fit for one tab-separated line: backslash, tab, newline and carriage return written as escapes."""
    for raw, escaped in _ESCAPES.items():  # backslash first, so the escapes' own backslashes stay as they are
        path = path.replace(raw, escaped)
    return path


@main.command()
@library_option
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on; anything but loopback requires a token.")
@click.option("--port", default=8765, show_default=True, type=click.IntRange(0, 65535), help="0: any free port.")
@click.option("--token", default=None, help="Access token (default: $SEARCHENGINE_TOKEN; generated off loopback).")
@click.option("--max-upload-mb", default=20, show_default=True, type=click.IntRange(1, 1024),
              help="Largest image accepted for search by image.")
@click.option("--watch", is_flag=True, help="Re-index the library's folders when files change.")
def serve(library_dir, host, port, token, max_upload_mb, watch) -> None:
    """Serve the web app and JSON API until Ctrl-C (prints the URL to open)."""
    from searchengine.server.run import ServeOptions
    from searchengine.server.run import serve as run_server

    def announce(line: str) -> None:
        click.echo(line)
        sys.stdout.flush()

    run_server(Library.open(library_dir), ServeOptions(host, port, token, max_upload_mb, watch), announce)


def _write(data: bytes) -> None:
    """Paths go out as the file system's bytes, so names that are not UTF-8 survive a pipe."""
    sys.stdout.flush()
    sys.stdout.buffer.write(data)
    sys.stdout.buffer.flush()


class _Progress:
    """Progress bar with rate and ETA on stderr when it is a terminal; skip messages always."""

    def __init__(self) -> None:
        self.tty = sys.stderr.isatty()
        self.bar = None
        self.started = time.monotonic()
        self.done = 0

    def __enter__(self) -> "_Progress":
        return self

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.render_finish()

    def start(self, total: int) -> None:
        if self.tty and total:
            self.started = time.monotonic()
            self.bar = click.progressbar(length=total, label="indexing", file=sys.stderr, show_eta=True,
                                         show_pos=True, item_show_func=self._rate)
            self.bar.__enter__()

    def _rate(self, _item: Any) -> str:
        elapsed = time.monotonic() - self.started
        return f"{self.done / elapsed:.1f} images/s" if elapsed > 0 and self.done else ""

    def advance(self, n: int) -> None:
        self.done += n
        if self.bar is not None:
            self.bar.update(n, current_item=True)

    def skipped(self, path: bytes, reason: str) -> None:
        line = b"skipped " + path + b": " + reason.encode("utf-8", "replace") + b"\n"
        sys.stderr.flush()
        sys.stderr.buffer.write(line)
        sys.stderr.buffer.flush()


if __name__ == "__main__":
    main()
