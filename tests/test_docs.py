"""README.md is the bot's manual: keep it true.

- README's Configuration tables and config.example.toml are exactly what `python -m bot.config_docs`
  generates from the settings models, and the example loads with every default;
- every registered application command, subcommand and context menu, with every option, has a row in
  README's Commands reference, ⏱ marks exactly the commands decorated with `@calls_horde`, and every row
  there is a real command;
- every relative link and anchor in README.md and docs/**/*.md resolves;
- the Docker image's config keeps everything the bot writes on the /data volume.

Failures name exactly what to add, remove or change, and where.
"""

from __future__ import annotations

import asyncio
import difflib
import re
import shlex
import subprocess
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from cryptography.fernet import Fernet
from discord import app_commands

from bot import config_docs
from bot.app import create_bot
from bot.bot import CALLS_HORDE, discover_cogs
from bot.config import SECTIONS, load_settings
from tests.conftest import make_settings

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
EXAMPLE = ROOT / "config.example.toml"
DOCKERFILE = ROOT / "Dockerfile"
TIMER = "⏱"

CODE_SPAN = re.compile(r"`([^`]+)`")
BOLD = re.compile(r"\*\*([^*]+)\*\*")
HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$")
CELL_SPLIT = re.compile(r"(?<!\\)\|")
# [text](target), where the text may hold one level of brackets: [`[safety]`](#safety).
LINK = re.compile(r"\[((?:[^\[\]]|\[[^\[\]]*\])*)\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


# --- markdown helpers ----------------------------------------------------------------------------------


def without_fences(text: str) -> list[str]:
    """The lines of `text` with fenced code blocks blanked (line numbers kept)."""
    lines, fenced = [], False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
            lines.append("")
            continue
        lines.append("" if fenced else line)
    return lines


def chapter(text: str, title: str) -> list[tuple[int, str]]:
    """(line number, line) of the level-2 section `## title`, up to the next level-2 heading."""
    found: list[tuple[int, str]] = []
    inside = False
    for number, line in enumerate(without_fences(text), start=1):
        if line.startswith("## "):
            inside = line[3:].strip() == title
            continue
        if inside:
            found.append((number, line))
    assert found, f"README.md has no '## {title}' section"
    return found


@dataclass
class Row:
    line: int
    heading: str  # the nearest heading above the table
    header: list[str]  # the table's header cells, lower case
    cells: list[str]

    def cell(self, name: str) -> str:
        return self.cells[self.header.index(name)] if name in self.header else ""


def table_rows(lines: list[tuple[int, str]]) -> list[Row]:
    rows: list[Row] = []
    heading = ""
    header: list[str] | None = None
    previous: list[str] | None = None
    for number, line in lines:
        match = HEADING.match(line)
        if match:
            heading, header, previous = line, None, None
            continue
        if not line.lstrip().startswith("|"):
            header, previous = None, None
            continue
        cells = [c.strip() for c in CELL_SPLIT.split(line.strip().strip("|"))]
        if all(re.fullmatch(r":?-{3,}:?", c) for c in cells):
            header = [c.lower() for c in previous or []]
            continue
        previous = cells
        if header is not None:
            rows.append(Row(number, heading, header, cells))
    return rows


def slug(heading: str) -> str:
    """GitHub's anchor for a heading's text."""
    text = LINK.sub(lambda m: m.group(1), heading).strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    found: set[str] = set()
    for line in without_fences(path.read_text(encoding="utf-8")):
        match = HEADING.match(line)
        if not match:
            continue
        base = slug(match.group(2))
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


# --- (a) configuration ---------------------------------------------------------------------------------


def test_config_reference_and_example_are_generated_from_the_settings_models() -> None:
    """README's configuration tables and config.example.toml are what `python -m bot.config_docs` writes
    from the settings models (bot/config.py): change a key there, then run it."""
    problems: list[str] = []
    for path, want in config_docs.outputs().items():
        have = path.read_text(encoding="utf-8")
        if have != want:
            diff = difflib.unified_diff(
                have.splitlines(),
                want.splitlines(),
                f"{path.name} (now)",
                f"{path.name} (generated)",
                lineterm="",
            )
            problems.append("\n".join(list(diff)[:40]))
    assert not problems, (
        f"README.md or config.example.toml differ from the settings models: run `{config_docs.COMMAND}` "
        "and commit the result.\n" + "\n".join(problems)
    )


def test_the_generated_example_loads_with_every_default(tmp_path: Path) -> None:
    """Every key of config.example.toml is a real key set to its default (sync_on_start, turned on for the
    first run, is the one exception the model declares); keys without a default are shown commented out."""
    env = {"DISCORD_TOKEN": "tok", "HORDEBOT_SECRET_KEY": Fernet.generate_key().decode()}
    settings = load_settings(EXAMPLE, env)
    text = EXAMPLE.read_text(encoding="utf-8")
    for model in SECTIONS:
        loaded = getattr(settings, model.name)
        for name, info in config_docs.keys(model):
            extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
            written = name in settings.section(model.name)
            key = f"config.example.toml: {model.name}.{name}"
            assert written == (info.default is not None and not extra.get("commented")), key
            assert written or f"# {name} = " in text, f"{key} is neither set nor shown commented out"
            want = extra.get("example", info.default) if written else info.default
            assert getattr(loaded, name) == (tuple(want) if isinstance(want, list) else want), key


# --- (b) commands --------------------------------------------------------------------------------------


@dataclass
class Registered:
    name: str  # "/config channels add", or a context menu's name
    menu: str  # "" for slash commands, else "message" or "user"
    calls_horde: bool
    options: dict[str, bool] = field(default_factory=dict)  # name -> required

    def row_hint(self) -> str:
        command = f"**{self.name}** ({self.menu} menu)" if self.menu else f"`{self.name}`"
        opts = ", ".join(f"`{n}`" if req else f"`[{n}]`" for n, req in self.options.items())
        return f"| {command}{' ' + TIMER if self.calls_horde else ''} | {opts} | <who> | <what> |"


async def _registered(tmp_path: Path) -> dict[str, Registered]:
    # Built by the factory as the harness does; the Horde URL is a closed port (nothing is called).
    bot = create_bot(make_settings(tmp_path, "http://127.0.0.1:9/api"))
    try:
        await bot.services.start()
        for name in discover_cogs():
            await bot.load_feature(name)
        found: dict[str, Registered] = {}

        def walk(command: Any) -> None:
            if isinstance(command, app_commands.Group):
                for sub in command.commands:
                    walk(sub)
            elif isinstance(command, app_commands.ContextMenu):
                found[command.name] = Registered(
                    command.name, command.type.name, bool(command.extras.get(CALLS_HORDE))
                )
            else:
                found[f"/{command.qualified_name}"] = Registered(
                    f"/{command.qualified_name}",
                    "",
                    bool(command.extras.get(CALLS_HORDE)),
                    {p.name: p.required for p in command.parameters},
                )

        for command in bot.tree.get_commands():
            walk(command)
        return found
    finally:
        await bot.services.close()


@pytest.fixture(scope="module")
def registered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Registered]:
    return asyncio.run(_registered(tmp_path_factory.mktemp("docs")))


def readme_commands() -> Iterator[tuple[Row, str, bool]]:
    """(row, command name, is a context menu) for every row of README's Commands tables."""
    for row in table_rows(chapter(README.read_text(encoding="utf-8"), "Commands")):
        if not row.header or row.header[0] != "command":
            continue
        first = row.cells[0]
        slash = [s for s in CODE_SPAN.findall(first) if s.startswith("/")]
        bold = BOLD.findall(first)
        assert len(slash) + len(bold) == 1, (
            f"README.md line {row.line}: the first cell names one command, `/name sub` or "
            f"**Menu name** (context menu): {first!r}"
        )
        yield row, (slash or bold)[0].strip(), bool(bold)


def test_every_command_and_option_is_in_readme(registered: dict[str, Registered]) -> None:
    problems: list[str] = []
    documented: set[str] = set()
    for row, name, _menu in readme_commands():
        assert "options" in row.header, f"README.md line {row.line}: Commands tables need an options column"
        if name in documented:
            problems.append(f"README.md line {row.line}: `{name}` has two rows")
        documented.add(name)
        command = registered.get(name)
        if command is None:
            problems.append(
                f"README.md line {row.line}: `{name}` is not a registered command (renamed or removed?)"
            )
            continue
        shown: dict[str, bool] = {}
        for span in CODE_SPAN.findall(row.cell("options")):
            optional = span.startswith("[") and span.endswith("]")
            shown[span.strip("[]")] = not optional
        for option, required in command.options.items():
            written = f"`{option}`" if required else f"`[{option}]`"
            if option not in shown:
                problems.append(f"README.md line {row.line}: `{name}` is missing option {written}")
            elif shown[option] != required:
                problems.append(
                    f"README.md line {row.line}: `{name}` option `{option}` is "
                    f"{'required' if required else 'optional'}: write {written}"
                )
        for option in shown.keys() - command.options.keys():
            problems.append(f"README.md line {row.line}: `{name}` has no option `{option}` (remove it)")
    for name in sorted(registered.keys() - documented):
        problems.append(f"README Commands has no row for `{name}`; add: {registered[name].row_hint()}")
    assert not problems, "README.md's Commands reference is out of date:\n" + "\n".join(problems)


def test_timer_marks_exactly_the_commands_that_call_the_horde(registered: dict[str, Registered]) -> None:
    problems: list[str] = []
    for row, name, _menu in readme_commands():
        command = registered.get(name)
        if command is None:
            continue  # reported by the test above
        marked = TIMER in row.cells[0]
        if command.calls_horde and not marked:
            problems.append(
                f"README.md line {row.line}: `{name}` is decorated with @calls_horde (rate-limited): "
                f"add {TIMER} after the command in the first cell"
            )
        elif marked and not command.calls_horde:
            problems.append(
                f"README.md line {row.line}: `{name}` is marked {TIMER} but is not decorated with "
                "@calls_horde: remove the mark (or decorate the command if it calls the Horde)"
            )
    assert not problems, "README.md's ⏱ marks are wrong:\n" + "\n".join(problems)


# --- (c) links -----------------------------------------------------------------------------------------


def markdown_files() -> list[Path]:
    return [README, *sorted((ROOT / "docs").rglob("*.md"))]


def test_every_relative_link_and_anchor_resolves() -> None:
    problems: list[str] = []
    cache: dict[Path, set[str]] = {}
    for source in markdown_files():
        for number, line in enumerate(without_fences(source.read_text(encoding="utf-8")), start=1):
            for match in LINK.finditer(line):
                target = match.group(2)
                if re.match(r"^[a-z][a-z0-9+.\-]*:", target, re.IGNORECASE):
                    continue  # https:, mailto:...
                path_part, _, anchor = target.partition("#")
                where = f"{source.relative_to(ROOT)} line {number}: link {target!r}"
                dest = (source.parent / path_part).resolve() if path_part else source
                if not dest.exists():
                    problems.append(
                        f"{where}: {dest.relative_to(ROOT) if dest.is_relative_to(ROOT) else dest} "
                        "does not exist"
                    )
                    continue
                if anchor:
                    if dest.suffix != ".md":
                        problems.append(f"{where}: anchors only resolve in Markdown files")
                        continue
                    if dest not in cache:
                        cache[dest] = anchors(dest)
                    if anchor not in cache[dest]:
                        problems.append(
                            f"{where}: {dest.relative_to(ROOT)} has no heading with anchor #{anchor}"
                        )
    assert not problems, "broken links in the documentation:\n" + "\n".join(problems)


# --- Docker --------------------------------------------------------------------------------------------


def test_docker_config_keeps_written_files_on_the_data_volume(tmp_path: Path) -> None:
    """The image's config.toml is config.example.toml rewritten by a `sed` in the Dockerfile: every file
    the bot writes must end up under /data (the only place the unprivileged user can write)."""
    dockerfile = DOCKERFILE.read_text(encoding="utf-8").replace("\\\n", " ")
    match = re.search(r"sed -i (.+?) /app/config\.toml", dockerfile)
    assert match, "Dockerfile: expected `sed -i '<script>' /app/config.toml` rewriting the shipped config"
    script = shlex.split(match.group(1))
    config = tmp_path / "config.toml"
    config.write_text(EXAMPLE.read_text(encoding="utf-8"), encoding="utf-8")
    subprocess.run(["sed", "-i", *script, str(config)], check=True)
    data = tomllib.loads(config.read_text(encoding="utf-8"))

    problems: dict[str, str] = {}  # key -> its value in the image

    def walk(prefix: str, table: dict[str, Any]) -> None:
        for key, value in table.items():
            name = f"{prefix}.{key}" if prefix else key
            if isinstance(value, dict):
                walk(name, value)
            elif isinstance(value, str) and (
                re.match(r"^(\./)?data/", value) or value.startswith("sqlite+aiosqlite:///data/")
            ):
                problems[name] = f"{name} = {value!r}"

    walk("", data)
    for section, key, prefix in (
        ("database", "url", "sqlite+aiosqlite:////data/"),
        ("security", "secret_key_file", "/data/"),
        ("safety", "review_file", "/data/"),
    ):
        value = data.get(section, {}).get(key, "")
        if not value.startswith(prefix):
            problems.setdefault(f"{section}.{key}", f"{section}.{key} = {value!r} (expected {prefix}...)")
    assert not problems, (
        "the Docker image's config.toml writes outside the /data volume, where the unprivileged user can't "
        "write (extend the sed in Dockerfile): " + ", ".join(problems.values())
    )
