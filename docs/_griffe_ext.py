"""A griffe extension for the genbounds site (referenced from mkdocs.yml; not a page).

genbounds' docstrings document arguments that go together on one line, as in
``X_train, y_train: the training set``. Google style wants one name per entry, so before the
docstring is parsed each such entry becomes one entry per name (the first names point to the
last, which keeps the description and its continuation lines).
"""

from __future__ import annotations

import re

import griffe

_SECTION = re.compile(r"^(\s*)(Args|Arguments|Parameters|Attributes|Keyword Args):\s*$")
_ENTRY = re.compile(r"^(\s+)(\**[A-Za-z_]\w*(?:\s*,\s*\**[A-Za-z_]\w*)+)\s*(\([^)]*\))?:\s*(.*)$")


def split_grouped_entries(text: str) -> str:
    """Rewrites ``a, b: text`` entries of Args-like sections into one entry per name."""
    out: list[str] = []
    section_indent: int | None = None
    lines = text.splitlines()
    # A list of names too long for one line continues on the next: join it first.
    joined: list[str] = []
    for line in lines:
        if joined and re.fullmatch(r"\s+[\w*]+(\s*,\s*[\w*]+)*,", joined[-1]) and ":" in line:
            joined[-1] = joined[-1] + " " + line.strip()
        else:
            joined.append(line)
    for line in joined:
        m = _SECTION.match(line)
        if m:
            section_indent = len(m.group(1))
            out.append(line)
            continue
        if section_indent is not None and line.strip() and (
                len(line) - len(line.lstrip()) <= section_indent):
            section_indent = None
        e = _ENTRY.match(line) if section_indent is not None else None
        if e and len(e.group(1)) == section_indent + 2:
            indent, names = e.group(1), [n.strip() for n in e.group(2).split(",")]
            kind = e.group(3) or ""
            last = names[-1].lstrip("*")
            out += [f"{indent}{n}{kind}: see `{last}`." for n in names[:-1]]
            out.append(f"{indent}{names[-1]}{kind}: {e.group(4)}")
        else:
            out.append(line)
    return "\n".join(out)


class SplitGroupedArgs(griffe.Extension):
    """Applies `split_grouped_entries` to every docstring."""

    def on_instance(self, *, obj: griffe.Object, **kwargs) -> None:  # noqa: ARG002
        if obj.docstring is not None:
            obj.docstring.value = split_grouped_entries(obj.docstring.value)
