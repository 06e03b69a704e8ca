"""`search`, `show`, `embed`, `duplicates`: the commands that answer."""
from __future__ import annotations

import json
import os
from dataclasses import asdict
from typing import Any

import click

# base comes first: it pins BLAS to one thread before anything loads numpy.
from searchengine.cli.base import (device_option, escape_path, json_option, library_option, main, quick_exit_when_done,
                                    write_out)
from searchengine.library.api import Library
from searchengine.query import steps
from searchengine.query.filters import FilterError, SearchFilters


def filter_options(command: Any) -> Any:
    """The search filters, shared by every command that narrows a search."""
    options = [
        click.option("--after", metavar="DATE", help="Taken on or after DATE (2023, 2023-06, 2023-06-14 or a full timestamp)."),
        click.option("--before", metavar="DATE", help="Taken before DATE (same forms; exclusive)."),
        click.option("--in", "folder", metavar="FOLDER", help="In FOLDER or below it."),
        click.option("--camera", metavar="TEXT", help="Camera make or model contains TEXT (any case)."),
        click.option("--near", metavar="LAT,LON[,KM]", help="Taken within KM (default 1) of a place."),
        click.option("--format", "image_format", metavar="FORMAT",
                     help="jpeg, png, webp, gif, bmp, tiff, heic, avif; mp4, m4v, mov, 3gp, mkv, webm, avi."),
        click.option("--orientation", metavar="landscape|portrait|square", help="Shape as displayed."),
        click.option("--kind", metavar="image|video", help="Photos only, or videos only."),
        click.option("--words", metavar="WORDS",
                     help='The text read in it (index --ocr) holds WORDS: all of them, "a phrase", prefix*.'),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def parse_filters(after, before, folder, camera, near, image_format, orientation, kind, words=None) -> SearchFilters:
    try:
        return SearchFilters.parse(after=after, before=before, folder=folder, camera=camera, near=near,
                                   format=image_format, orientation=orientation, kind=kind, words=words)
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
@click.option("--moments", is_flag=True, help="List every matching moment of a video, not only its best one.")
@click.option("--no-words", "no_words", is_flag=True,
              help="Rank a text query by CLIP alone, not also by the words read in the pictures.")
@filter_options
@library_option
@json_option
def search(query, image, add, subtract, force_text, limit, exact, null, min_score, cutoff, copy_to, link_to,
           moments, no_words, after, before, folder, camera, near, image_format, orientation, kind, words,
           library_dir, as_json) -> None:
    """Search by TEXT, by an image FILE (or --image), or by terms joined with + and - (rclip's syntax).

    A term is a text or an existing image file, optionally weighted: "./racing car.jpg" - "2:sports car" + snow.
    Filters narrow the search; alone, they list the matching images newest first. --words finds the words
    read in the pictures (index --ocr); a text query also ranks pictures holding its words higher (--no-words:
    CLIP alone).
    """
    steps.since_begin("argument parsing")
    quick_exit_when_done()
    filters = parse_filters(after, before, folder, camera, near, image_format, orientation, kind, words)
    if query and image is not None:
        raise click.UsageError("give TEXT or --image, not both")
    if not query and image is None and not add and not subtract and not filters:
        raise click.UsageError("give a TEXT to search for, --image FILE, or a filter")
    if copy_to is not None and link_to is not None:
        raise click.UsageError("give --copy-to or --link-to, not both")
    library = Library.open(library_dir)
    terms = _query_terms(query, image, add, subtract, force_text)
    if not terms:  # filters alone: newest first
        hits = library.search(limit=limit, filters=filters, moments=moments)
    elif len(terms) == 1 and terms[0].weight > 0:  # one term: the plain text or image search, as before
        single = str(terms[0].value)
        hits = library.search(text=single if terms[0].kind == "text" else None,
                              image=single if terms[0].kind == "image" else None,
                              limit=limit, exact=exact, min_score=min_score, cutoff=cutoff, filters=filters,
                              moments=moments, words=not no_words)
    else:
        hits = library.search(terms=terms, limit=limit, exact=exact, min_score=min_score, cutoff=cutoff,
                              filters=filters, moments=moments)
    with steps.step("output"):
        if as_json:
            click.echo(json.dumps([_hit_json(h) for h in hits]))
        else:
            for hit in hits:
                if null:
                    write_out(os.fsencode(hit.path) + b"\0")
                else:
                    first = f"{hit.score:.4f}" if hit.score is not None else (hit.taken_at or "-")
                    moment = f"\t@{clock(hit.start_s)}".encode() if hit.start_s is not None else b""
                    write_out(f"{first}\t".encode() + escape_path(os.fsencode(hit.path)) + moment + b"\n")
    if copy_to is not None or link_to is not None:
        from searchengine.cli.copy_out import export

        target = copy_to if copy_to is not None else link_to
        written = export(list(dict.fromkeys(h.path for h in hits)), target, "copy" if copy_to is not None else "link")
        verb = "copied" if copy_to is not None else "linked"
        click.echo(f"{verb} {len(written)} files into {os.path.abspath(target)}", err=True)


def clock(seconds: float) -> str:
    """A moment as people read it: m:ss, or h:mm:ss from an hour on (whole seconds, rounded down)."""
    whole = max(0, int(seconds))
    hours, rest = divmod(whole, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


def _hit_json(hit: Any) -> dict:
    fields = asdict(hit)
    if hit.kind != "video":
        for key in ("start_s", "end_s", "frame_s"):
            fields.pop(key)
    if hit.words is None:
        fields.pop("words")
    if hit.score is not None:
        fields["score"] = round(hit.score, 6)
    return fields


def _query_terms(query: tuple[str, ...], image: str | None, add: tuple[str, ...], subtract: tuple[str, ...],
                 force_text: bool) -> list:
    """The query's terms: --image FILE first, then the + / - expression, then --add and --subtract."""
    from searchengine.query.expression import IMAGE, Term, parse_expression

    terms = parse_expression(query, add, subtract, force_text)
    return ([Term(IMAGE, image)] if image is not None else []) + terms


@main.command()
@click.argument("path_or_id")
@library_option
@json_option
def show(path_or_id, library_dir, as_json) -> None:
    """One image's record: path, size, dates, content hash, dimensions, camera, place."""
    quick_exit_when_done()
    details = asdict(Library.open(library_dir).show(path_or_id))
    if as_json:
        click.echo(json.dumps(details))
        return
    for key, value in details.items():
        text = "" if value is None else value
        if key == "path":
            write_out(b"path: " + escape_path(os.fsencode(value)) + b"\n")
        elif key == "text_lines":
            continue  # their text is `text`; boxes and confidences are in --json
        elif key == "text" and value:
            write_out(("text:\n" + "".join(f"  {line}\n" for line in value.splitlines())).encode())
        else:
            write_out(f"{key}: {text}\n".encode())


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
        from searchengine.query.expression import parse_expression

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
    from searchengine.query.expression import IMAGE, resolve_term

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
            write_out(f"{image.size}\t{size}\t{image.taken_at or image.modified}\t".encode()
                   + escape_path(os.fsencode(image.path)) + b"\n")
    click.echo(f"{len(groups)} groups, {sum(len(g.images) for g in groups)} images", err=True)
