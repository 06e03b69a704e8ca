"""The `searchengine` command group, its shared options and output helpers; the commands live in index.py and
search.py."""
from __future__ import annotations

import os
import sys
import time
from typing import Any

# Before numpy loads (every command module imports this one first): one BLAS thread for a query
# (indexer/cpu.py says why).
from indexer.cpu import pin_blas_to_one_thread

pin_blas_to_one_thread()

import click  # noqa: E402

from indexer.errors import SearchEngineError  # noqa: E402
from searchengine.query import steps  # noqa: E402

library_option = click.option(
    "--library", "library_dir", type=click.Path(file_okay=False), default=None,
    help="Library folder (default: $SEARCHENGINE_LIBRARY, else the per-user data folder).")
json_option = click.option("--json", "as_json", is_flag=True, help="Machine-readable output on stdout.")
device_option = click.option(
    "--device", default="auto", show_default=True,
    help="Where the image model runs: auto (CUDA, else Apple MPS, else CPU), cpu, cuda, cuda:N or mps.")


_quick_exit = [False]


def quick_exit_when_done() -> None:
    """A read-only command's promise: once it has returned, nothing is left to write or release but memory."""
    _quick_exit[0] = True


def entry() -> None:
    """The `searchengine` program (console script and `python -m searchengine`): `main`, then, after a read-only
    command that finished without error, an exit that skips the interpreter's teardown: freeing every module and
    object and joining idle helper threads cost a query ~50-70 ms here, a quarter of its time, for nothing."""
    _quick_exit[0] = False
    main()
    if _quick_exit[0]:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        except BrokenPipeError:
            os._exit(141)
        os._exit(0)


class Main(click.Group):
    """Turns domain errors into `Error: ...` and unexpected ones into one line too, unless --debug."""

    def main(self, *args: Any, standalone_mode: bool = True, **kwargs: Any) -> Any:
        """As click's, except that a usage error is one line (click adds the usage and a hint above it)."""
        if not standalone_mode:
            return super().main(*args, standalone_mode=False, **kwargs)
        steps.begin()
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
        finally:
            steps.report()

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


_ESCAPES = {b"\\": b"\\\\", b"\t": b"\\t", b"\n": b"\\n", b"\r": b"\\r"}


def escape_path(path: bytes) -> bytes:
    """A path fit for one tab-separated line: backslash, tab, newline and carriage return written as escapes."""
    for raw, escaped in _ESCAPES.items():  # backslash first, so the escapes' own backslashes stay as they are
        path = path.replace(raw, escaped)
    return path


def write_out(data: bytes) -> None:
    """Paths go out as the file system's bytes, so names that are not UTF-8 survive a pipe."""
    sys.stdout.flush()
    sys.stdout.buffer.write(data)
    sys.stdout.buffer.flush()


class Progress:
    """Progress bar with rate and ETA on stderr when it is a terminal; skip messages always."""

    def __init__(self) -> None:
        self.tty = sys.stderr.isatty()
        self.bar = None
        self.started = time.monotonic()
        self.done = 0

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.render_finish()

    def start_phase(self, label: str, total: int) -> None:
        """A later phase of the run (the words), on a progress line of its own."""
        if self.bar is not None:
            self.bar.render_finish()
            self.bar = None
        self.done = 0
        self.start(total, label)

    def start(self, total: int, label: str = "indexing") -> None:
        if self.tty and total:
            self.started = time.monotonic()
            self.bar = click.progressbar(length=total, label=label, file=sys.stderr, show_eta=True,
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
