"""`index`, `repair`, `status`, `export`, `import`, `serve`: the commands that build and keep a library."""
from __future__ import annotations

import json
import os
import sys
from dataclasses import asdict
from typing import Any

import click

# base comes first: it pins BLAS to one thread before anything loads numpy.
from searchengine.cli.base import Progress, device_option, escape_path, json_option, library_option, main, write_out
from searchengine.library.api import Library


@main.command()
@click.argument("paths", nargs=-1, required=False, type=click.Path())
@library_option
@click.option("--model", default=None, help="open_clip model name, hf-hub:ORG/REPO or local-dir:PATH (first run only).")
@click.option("--pretrained", default=None, help="Pretrained tag or checkpoint file (first run only).")
@click.option("--batch-size", default=32, show_default=True, type=click.IntRange(1, 4096))
@click.option("--workers", default=None, type=click.IntRange(0, 64), help="Decode and OCR processes (default: CPU count).")
@click.option("--exclude", multiple=True, help="Glob of file or folder names/paths to leave out (repeatable).")
@click.option("--int8", is_flag=True, default=None,
              help="Opt-in faster CPU image encoder (dynamic int8, checked on your first photos); first run only.")
@click.option("--ray", "ray_address", default=None, is_flag=False, flag_value="auto", metavar="[auto|ADDRESS]",
              help="Run the work on Ray: `auto` starts a local instance; an address joins a cluster (ray extra).")
@click.option("--video-interval", default=None, type=click.FloatRange(0.1, 3600), metavar="S",
              help="Sample a video's frames at most every S seconds (default 2; remembered).")
@click.option("--video-max-segments", default=None, type=click.IntRange(1, 100_000), metavar="N",
              help="At most N segments per video, spread over its length (default 500; remembered).")
@click.option("--ocr/--no-ocr", "ocr", default=None,
              help="Read the text in pictures, for --words search (remembered; needs the ocr extra).")
@device_option
@json_option
def index(paths, library_dir, model, pretrained, batch_size, workers, exclude, int8, ray_address, video_interval,
          video_max_segments, ocr, device, as_json) -> None:
    """Index photos and videos under PATHS (none: the folders earlier runs were given): new and changed files
    are embedded, vanished ones removed; a video is cut into moments (segments), each embedded."""
    from indexer.cpu import yield_to_queries
    from indexer.pipeline.local import IndexOptions

    if ray_address is None:  # a local run; Ray's processes keep their own priorities
        yield_to_queries()  # a `search` or a server's requests come first when they compete for the cores
    library = Library.open(library_dir)
    options = IndexOptions(batch_size=batch_size, workers=workers, video_interval_s=video_interval,
                           video_max_segments=video_max_segments, ocr=ocr)
    with Progress() as progress:
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
                   f"unchanged {summary.unchanged}, failed {summary.failed}{_videos(summary)} "
                   f"({summary.reused} reused by content, {summary.moved} moved, {summary.images_per_s:.1f} images/s, "
                   f"{summary.seconds:.1f} s{_on_device(summary)})", err=True)
        if summary.words_read or summary.words_note:
            click.echo(summary.words_note or f"read the words of {summary.words_read} pictures: "
                       f"{summary.words_with_text} with text, {summary.words_failed} failed "
                       f"({summary.words_seconds:.1f} s)", err=True)


def _videos(summary: Any) -> str:
    return f", {summary.videos} videos in {summary.segments} segments" if summary.videos else ""


def _on_device(summary: Any) -> str:
    return f", on {summary.device} in {summary.compute_precision}" if summary.device else ""


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
        write_out(b"failed\t" + escape_path(os.fsencode(item["path"])) + b"\t" + item["reason"].encode() + b"\n")


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
