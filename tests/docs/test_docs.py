"""The documentation keeps up with the code: every flag of every command is in docs/cli.md, with a heading per
command, and every relative link in README.md and docs/*.md leads to a file (and heading) that exists."""
from __future__ import annotations

import re
from pathlib import Path

import click
import pytest

ROOT = Path(__file__).resolve().parents[2]
CLI_DOC = ROOT / "docs" / "cli.md"


# --- flags -------------------------------------------------------------------------------------------------------

def commands(group: click.Group, prefix: str = "searchengine") -> dict[str, click.Command]:
    """Every command under the group, subcommands included, by its full name ("searchengine index")."""
    found: dict[str, click.Command] = {}
    for name, command in group.commands.items():
        full = f"{prefix} {name}"
        found[full] = command
        if isinstance(command, click.Group):
            found |= commands(command, full)
    return found


def flags_of(command: click.Command) -> set[str]:
    """Every flag `--help` shows for the command: each option's names and secondary names, and the help option."""
    flags: set[str] = set()
    for param in command.params:
        if isinstance(param, click.Option):
            flags |= set(param.opts) | set(param.secondary_opts)
    help_option = command.get_help_option(click.Context(command))
    if help_option is not None:
        flags |= set(help_option.opts)
    return flags


def mentions(text: str, flag: str) -> bool:
    """The flag as a whole token: `--json` is not found in `--json-lines`, nor `-a` in `-ab` or `--add`."""
    return re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", text) is not None


def headings(text: str) -> list[str]:
    return [match[2] for match in re.finditer(r"^(#{1,6})[ \t]+(.+?)[ \t]*#*[ \t]*$", strip_fences(text), re.M)]


def missing_flags(doc: str, flags_by_command: dict[str, set[str]]) -> list[str]:
    return sorted(f"{name}: {flag}" for name, flags in flags_by_command.items() for flag in flags
                  if not mentions(doc, flag))


def missing_headings(doc: str, names: list[str]) -> list[str]:
    """Commands that no heading names as a whole token (e.g. "## `searchengine index`")."""
    titles = [title.replace("`", "") for title in headings(doc)]
    return [name for name in names
            if not any(re.search(rf"(?<![\w-]){re.escape(name)}(?![\w-])", title) for title in titles)]


def cli_group() -> click.Group:
    from searchengine.cli.main import main
    assert isinstance(main, click.Group)
    return main


def test_every_flag_and_command_is_in_cli_doc():
    group = cli_group()
    found = commands(group)
    assert len(found) >= 10, sorted(found)
    flags = {"searchengine": flags_of(group)} | {name: flags_of(command) for name, command in found.items()}
    assert {"--json", "-a", "--sub", "--debug", "--version", "--help"} <= set().union(*flags.values())
    doc = CLI_DOC.read_text()
    assert missing_flags(doc, flags) == [], "document these flags in docs/cli.md"
    assert missing_headings(doc, sorted(found)) == [], "give each command a heading in docs/cli.md"


def test_flag_checker_catches_a_missing_flag():
    doc = "## `searchengine index`\nTakes `--json-lines`, `--addition`, -ab and --limit N.\n"
    flags = {"searchengine index": {"--json", "-a", "--add", "--limit"}}
    assert missing_flags(doc, flags) == ["searchengine index: --add", "searchengine index: --json",
                                         "searchengine index: -a"]
    assert missing_headings(doc, ["searchengine index", "searchengine indexes", "searchengine search"]) == [
        "searchengine indexes", "searchengine search"]
    # and the real group's flags are really read: a flag no command has is reported
    assert missing_flags(CLI_DOC.read_text(), {"searchengine": {"--no-such-flag"}}) == [
        "searchengine: --no-such-flag"]


# --- links -------------------------------------------------------------------------------------------------------

FENCE = re.compile(r"^[ \t]*(```|~~~).*?^[ \t]*\1[ \t]*$", re.M | re.S)
INLINE_CODE = re.compile(r"(`+)(?!`).+?(?<!`)\1(?!`)", re.S)
INLINE_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE_LINK = re.compile(r"^[ \t]{0,3}\[[^\]]+\]:[ \t]*<?(\S+?)>?(?:[ \t]+.*)?$", re.M)
EXTERNAL = re.compile(r"^(?:[a-zA-Z][a-zA-Z0-9+.-]*:|//)")  # http:, https:, mailto:, ...


def strip_fences(text: str) -> str:
    return FENCE.sub(lambda m: "\n" * m[0].count("\n"), text)


def link_targets(text: str) -> list[str]:
    text = INLINE_CODE.sub("", strip_fences(text))
    return [m[1] for m in INLINE_LINK.finditer(text)] + [m[1] for m in REFERENCE_LINK.finditer(text)]


def slug(heading: str) -> str:
    """GitHub's heading anchor: link text for links, lower case, punctuation but - and _ dropped, spaces -> -."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)
    text = re.sub(r"<[^>]+>", "", text).strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(text: str) -> set[str]:
    """Every heading's anchor, repeated headings numbered as GitHub does (`name`, `name-1`, ...)."""
    seen: dict[str, int] = {}
    found = set()
    for heading in headings(text):
        base = slug(heading)
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


def broken_links(files: list[Path]) -> list[str]:
    broken = []
    for page in files:
        for target in link_targets(page.read_text()):
            if EXTERNAL.match(target):
                continue
            path, _, anchor = target.partition("#")
            resolved = (page.parent / path).resolve() if path else page
            where = f"{page.relative_to(ROOT) if page.is_relative_to(ROOT) else page.name}: {target}"
            if not resolved.exists():
                broken.append(f"{where} (no such file)")
            elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved.read_text()):
                broken.append(f"{where} (no such heading)")
    return broken


def doc_pages() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def test_every_relative_link_resolves():
    pages = doc_pages()
    assert {"cli.md", "api.md", "design.md", "performance.md", "security.md", "scale-out.md"} <= {
        page.name for page in pages}
    assert sum(len(link_targets(page.read_text())) for page in pages) > 50
    assert broken_links(pages) == []


def test_link_checker_catches_broken_links(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.md").write_text("# A page\n\n## The `index` command, again!\n\n## Twice\n\n## Twice\n")
    (tmp_path / "README.md").write_text(
        "See [a](docs/a.md), [cmd](docs/a.md#the-index-command-again), [second](docs/a.md#twice-1),\n"
        "[self](#top), [gone](docs/missing.md), [bad anchor](docs/a.md#nope), ![img](docs/none.png),\n"
        "[web](https://example.com/x.md), [mail](mailto:a@b.c), `[code](docs/code.md)`.\n\n"
        "```\n[fenced](docs/fenced.md)\n```\n\n# Top\n\n[ref]: docs/also-missing.md\n")
    assert slug("`searchengine index`") == "searchengine-index"
    assert slug("Guarantees after a crash, and with several processes") == (
        "guarantees-after-a-crash-and-with-several-processes")
    assert slug("GPU (CUDA, Apple MPS): not measured") == "gpu-cuda-apple-mps-not-measured"
    assert sorted(broken_links([tmp_path / "README.md"])) == [
        "README.md: docs/a.md#nope (no such heading)",
        "README.md: docs/also-missing.md (no such file)",
        "README.md: docs/missing.md (no such file)",
        "README.md: docs/none.png (no such file)",
    ]


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(pytest.main([__file__, "-q"]))
