"""Math of the genbounds site: TeX checked and turned into MathML when the site is built.

The pages and docstrings write math as ``$...$`` (inline) and ``$$...$$`` (display);
pymdownx.arithmatex (generic mode) wraps each in ``<span class="arithmatex">\\(...\\)</span>``
or ``<div class="arithmatex">\\[...\\]</div>``. `convert_html` replaces the TeX inside each with
MathML from latex2mathml, so the pages need no script and no network to show formulas (every
current browser renders MathML). It also reports each formula that is not well-formed:

* unbalanced braces, ``\\left``/``\\right`` or ``\\begin``/``\\end``;
* a command latex2mathml does not know (it would be shown as raw text);
* a conversion error (a subscript with nothing after it, ...);
* TeX outside any formula in the page's text: a ``$``, ``\\(``, ``\\frac``, ``\\|``, ... that
  arithmatex did not take as math, because Markdown split the formula first (a line of a
  formula starting with ``1.`` or ``-`` becomes a list item, a ``|`` in a table cell splits
  the cell, a ``$$`` block inside a paragraph is not a block).

Used by ``docs/_hooks.py`` (the build fails on a broken formula) and by
``tests/test_docs_math.py`` (every page and docstring, without building the site).
"""

from __future__ import annotations

import html
import re

from latex2mathml.converter import convert

# An arithmatex wrapper and its TeX: group 1 the tag, 2 the attributes, 3 the TeX (escaped).
_WRAPPED = re.compile(
    r'<(span|div)( class="arithmatex"[^>]*)>\s*(?:\\\(|\\\[)(.*?)(?:\\\)|\\\])\s*</\1>', re.S)
# Text where TeX has no place to be checked: code, preformatted text, formulas, tags.
_SKIP = re.compile(r"<(pre|code|script|style|math)\b.*?</\1>|<[^>]+>", re.S)
_STRAY = re.compile(
    r"\$|\\\(|\\\)|\\\[|\\\]|\\(?:frac|sum|prod|sqrt|mathrm|mathbb|mathcal|operatorname|left|"
    r"right|le|ge|leq|geq|cdot|lVert|rVert|lvert|rvert|Big|big|top|sigma|gamma|delta|epsilon|"
    r"alpha|beta|lambda|mu|rho|theta|hat|tilde|ln|log|exp|max|min|sup|inf|infty|in|mid|ne|"
    r"approx|sim|quad|text|begin|end)\b|\\\||\\\{|\\\}")


# Standard TeX operators latex2mathml does not know, written with ones it does.
_MACROS = {r"\arg": r"\operatorname{arg}"}
_MACRO = re.compile("|".join(re.escape(k) + r"(?![A-Za-z])" for k in _MACROS))


# Inside \text{...} TeX's escaped characters are characters; latex2mathml keeps the backslash.
_TEXT = re.compile(r"(\\(?:text|mathrm|texttt)\{)([^{}]*)(\})")


# A sizing command before an escaped delimiter (\big\|, \Bigl\{): latex2mathml shows the
# delimiter's TeX; the delimiter as its character is sized.
_SIZED = re.compile(r"(\\[bB]igg?[lrm]?)\s*\\([|{}]|[lr]?[Vv]ert(?![A-Za-z]))")
_DELIMITERS = {"|": "\u2016", "{": "{", "}": "}", "Vert": "\u2016", "lVert": "\u2016",
               "rVert": "\u2016", "vert": "|", "lvert": "|", "rvert": "|"}


def _expand(tex: str) -> str:
    tex = re.sub(r"\\\n", r"\\ ", tex)  # a backslash at the end of a line: a space, as in TeX
    tex = _SIZED.sub(lambda m: f"{m.group(1)}{_DELIMITERS[m.group(2)]}", tex)
    tex = _TEXT.sub(lambda m: m.group(1) + re.sub(r"\\([_&%#$])", r"\1", m.group(2))
                    + m.group(3), tex)
    return _MACRO.sub(lambda m: _MACROS[m.group(0)], tex)


def tex_problems(tex: str) -> list[str]:
    """What is wrong with one formula's TeX (empty when it is well-formed)."""
    problems = []
    depth = 0
    plain = re.sub(r"\\[{}]", "", tex)  # escaped braces are characters, not groups
    for ch in plain:
        depth += (ch == "{") - (ch == "}")
        if depth < 0:
            problems.append("a '}' closes no '{'")
            break
    if depth > 0:
        problems.append(f"{depth} unclosed '{{'")
    lefts, rights = len(re.findall(r"\\left\b", tex)), len(re.findall(r"\\right\b", tex))
    if lefts != rights:
        problems.append(f"{lefts} \\left and {rights} \\right")
    begins = re.findall(r"\\begin\{(\w+\*?)\}", tex)
    ends = re.findall(r"\\end\{(\w+\*?)\}", tex)
    if begins != ends[::-1] and sorted(begins) != sorted(ends):
        problems.append(f"\\begin{{{begins}}} and \\end{{{ends}}} do not match")
    if problems:
        return problems
    try:
        mathml = convert(_expand(tex))
    except Exception as e:  # noqa: BLE001 - every failure of the converter is a broken formula
        return [f"latex2mathml: {type(e).__name__} {e}".strip()]
    unknown = sorted(set(re.findall(r">\s*(\\[A-Za-z]+)", mathml)))
    if unknown:
        problems.append(f"unknown command(s) {', '.join(unknown)}")
    shown = [t for t in re.findall(r">([^<]*\\[^<]*)<", mathml) if t.strip()]
    if shown and not unknown:
        problems.append(f"a backslash shown as text: {', '.join(sorted(set(shown)))}")
    return problems


def to_mathml(tex: str, display: bool) -> str:
    """The MathML of one formula (``display="block"`` for a display formula)."""
    return convert(_expand(tex), display="block" if display else "inline")


def stray_tex(page_html: str) -> list[str]:
    """TeX left in the text of a rendered page outside any formula, code or tag."""
    text = _SKIP.sub(" ", _WRAPPED.sub(" ", page_html))
    text = html.unescape(text)
    out = []
    for m in _STRAY.finditer(text):
        start, end = max(0, m.start() - 40), min(len(text), m.end() + 40)
        out.append(" ".join(text[start:end].split()))
    return out


# Elements whose text is not prose: left alone by the conversion of bare formulas.
_PROTECTED = re.compile(r"<(pre|code|script|style|title|textarea|math)\b.*?</\1>|<[^>]+>", re.S)
_BARE = re.compile(r"\\\((.+?)\\\)", re.S)


def _mathml_or_problem(tex: str, display: bool, problems: list[str]) -> str | None:
    bad = tex_problems(tex)
    if bad:
        problems.append(f"{' '.join(tex.split())[:120]!r}: {'; '.join(bad)}")
        return None
    mathml = to_mathml(tex, display=display)
    note = f'<annotation encoding="application/x-tex">{html.escape(tex)}</annotation>'
    return re.sub(r"^(<math[^>]*>)(.*)(</math>)$",
                  lambda k: f"{k.group(1)}<semantics><mrow>{k.group(2)}</mrow>{note}"
                            f"</semantics>{k.group(3)}", mathml, flags=re.S)


def convert_html(page_html: str) -> tuple[str, list[str]]:
    """The page with every formula as MathML, and the list of its problems.

    The formulas are the arithmatex wrappers, and bare ``\\(...\\)`` in the text outside
    code (a heading's formula copied into the table of contents). Each problem reads
    ``FORMULA: WHAT``; TeX found outside formulas afterwards reads ``TeX outside a formula:
    ...CONTEXT...``. The TeX source stays in an ``<annotation>``, so copying a formula still
    gives its TeX.
    """
    problems: list[str] = []

    def wrapped(m: re.Match) -> str:
        tag, attrs = m.group(1), m.group(2)
        mathml = _mathml_or_problem(html.unescape(m.group(3)), tag == "div", problems)
        return m.group(0) if mathml is None else f"<{tag}{attrs}>{mathml}</{tag}>"

    def bare(m: re.Match) -> str:
        mathml = _mathml_or_problem(html.unescape(m.group(1)), False, problems)
        return m.group(0) if mathml is None else mathml

    out, pos = [], 0
    page_html = _WRAPPED.sub(wrapped, page_html)
    for m in _PROTECTED.finditer(page_html):
        out.append(_BARE.sub(bare, page_html[pos:m.start()]))
        out.append(m.group(0))
        pos = m.end()
    out.append(_BARE.sub(bare, page_html[pos:]))
    result = "".join(out)
    problems += [f"TeX outside a formula: ...{s}..." for s in stray_tex(result)]
    return result, problems
