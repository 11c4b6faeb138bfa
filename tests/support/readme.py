"""Reading README.md as a newcomer does: its sections, its fenced blocks, and each shell command in them.

Nothing here knows which commands the README shows: the test that follows the README's path parses
them from the code blocks, so a command added to the README is checked without touching the test.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterator
from dataclasses import dataclass, field

FENCE = re.compile(r"^```(\w*)\s*$")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*$")
SHELL_LANGUAGES = frozenset({"bash", "sh", "shell", "console"})
ASSIGNMENT = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)=(.*)$", re.S)
VARIABLE = re.compile(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?")
SUBSTITUTION = re.compile(r"\$\((.*)\)")
CONTROL = frozenset({"|", "&&", "||", ";"})


@dataclass(frozen=True)
class Block:
    """One fenced block: its language, its text, and the headings it sits under (outermost first)."""

    language: str
    text: str
    headings: tuple[str, ...]


@dataclass
class Section:
    """A heading, its prose (code blocks removed) and its blocks."""

    title: str
    level: int
    prose: str = ""
    blocks: list[Block] = field(default_factory=list)


def blocks(markdown: str) -> list[Block]:
    """Every fenced block, in order."""
    return [block for section in sections(markdown) for block in section.blocks]


def sections(markdown: str) -> list[Section]:
    """The document split at every heading outside a code block; text before the first is section ""."""
    found = [Section(title="", level=0)]
    trail: list[tuple[int, str]] = []
    fence: str | None = None
    body: list[str] = []
    prose: list[str] = []
    for line in markdown.splitlines():
        opening = FENCE.match(line)
        if fence is None and opening:
            fence, body = opening.group(1), []
            continue
        if fence is not None:
            if line.strip() == "```":
                titles = tuple(title for _, title in trail)
                found[-1].blocks.append(Block(language=fence, text="\n".join(body), headings=titles))
                fence = None
            else:
                body.append(line)
            continue
        heading = HEADING.match(line)
        if heading:
            found[-1].prose = "\n".join(prose)
            prose = []
            level, title = len(heading.group(1)), heading.group(2)
            trail = [(lvl, t) for lvl, t in trail if lvl < level] + [(level, title)]
            found.append(Section(title=title, level=level))
            continue
        prose.append(line)
    found[-1].prose = "\n".join(prose)
    return found


def shell_lines(block: Block) -> list[str]:
    """The block's command lines: backslash continuations joined, blank and comment-only lines dropped."""
    joined = re.sub(r"\\\n\s*", " ", block.text)
    return [line for line in joined.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def split_commands(line: str) -> Iterator[list[str]]:
    """Each simple command of a shell line (split at pipes and `&&`), comments removed."""
    lexer = shlex.shlex(line, posix=True, punctuation_chars="|&;")
    lexer.whitespace_split = True
    lexer.commenters = "#"
    command: list[str] = []
    for token in lexer:
        if token in CONTROL:
            if command:
                yield command
            command = []
        else:
            command.append(token)
    if command:
        yield command


def slug(title: str) -> str:
    """GitHub's anchor for a heading: lowercase, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*_]", "", title.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def links(section: Section) -> list[str]:
    """Targets of the section's Markdown links (title and prose; code blocks excluded)."""
    return re.findall(r"\]\(([^)\s]+)\)", f"{section.title}\n{section.prose}")
