"""Every formula of the documentation is well-formed, checked without building the site.

Each page under docs/ and each docstring (split into its sections as mkdocstrings renders them,
read with griffe) is rendered with the site's Markdown extensions; every formula is parsed by
latex2mathml through ``docs/_mathml.py`` (the module the build uses to write the MathML), and
TeX left outside any formula (a formula Markdown split before arithmatex saw it) is a failure.
"""

from __future__ import annotations

import ast
import importlib.util
import inspect
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

for _needed in ("latex2mathml", "markdown", "pymdownx"):
    if importlib.util.find_spec(_needed) is None:
        pytest.skip(f"the docs extra is not installed ({_needed}; pip install -e '.[docs]')",
                    allow_module_level=True)


def _load_mathml():
    spec = importlib.util.spec_from_file_location("genbounds_docs_mathml_test",
                                                  ROOT / "docs" / "_mathml.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


MATHML = _load_mathml()


def _extensions() -> tuple[list[str], dict]:
    """The site's markdown_extensions, read from mkdocs.yml."""
    yaml = pytest.importorskip("yaml")
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    names, options = [], {}
    for entry in config["markdown_extensions"]:
        if isinstance(entry, dict):
            (name, opts), = entry.items()
            names.append(name)
            options[name] = opts or {}
        else:
            names.append(entry)
    return names, options


def render(text: str) -> str:
    import markdown

    names, options = _extensions()
    return markdown.Markdown(extensions=names, extension_configs=options).convert(text)


def problems_of(text: str) -> list[str]:
    return MATHML.convert_html(render(text))[1]


# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("text, what", [
    # a formula's second line starting with "+": a list item, the formula split in two
    ("1. With probability at least $1-\\delta$,\n   $\\Pr[e] \\le a_1\n   + b_1$.\n",
     "TeX outside a formula"),
    # a bar inside a formula in a table row splits the cell
    ("| a | b |\n|---|---|\n| x | $|f(x)|_2 \\le 1$ |\n", "TeX outside a formula"),
    # a display formula inside a paragraph
    ("We have\n$$\\frac{a}{b}$$\nand more.\n", "TeX outside a formula"),
    ("In a list:\n\n1. item\n   $$x_1$$\n   after\n", "TeX outside a formula"),
    ("$\\foo x$ here\n", "unknown command(s) \\foo"),
    ("${a_1 + b$ here\n", "unclosed '{'"),
    ("$a}$ here\n", "closes no '{'"),
    ("$\\left( a$ here\n", "\\left and"),
    ("$a_$ here\n", "latex2mathml"),
    ("$\\text{a\\b}$ here\n", "a backslash shown as text"),
])
def test_the_checker_finds_each_kind_of_break(text, what):
    found = problems_of(text)
    assert any(what in p for p in found), found


@pytest.mark.parametrize("text", [
    "$a_1 + b_{i,j}$ and $\\|A\\|_\\sigma$ inline.\n",
    "Display:\n\n$$\n\\frac{a}{b} \\le \\sqrt{\\ln(2/\\delta)}\n$$\n",
    "1. item\n\n    $$\\Pr[\\arg\\max_j f(x)_j \\ne y] \\le 1$$\n\n    after\n",
    "| a | b |\n|---|---|\n| x | $\\lvert f(x)\\rvert_2 \\le \\lVert W\\rVert$ |\n",
    "`$HOME` and ```$x$``` in code, and\n\n```bash\necho $PATH\n```\n",
    # TeX that latex2mathml would show with its backslash, written for it by docs/_mathml.py
    "$N(\\text{init\\_params}, I)$, $\\big\\|x\\big\\|$, $\\Bigl\\{ x \\Bigr\\}$, $a,\\\nb$\n",
])
def test_well_formed_formulas_pass_and_become_mathml(text):
    html, found = MATHML.convert_html(render(text))
    assert found == []
    if "$" in text.split("`")[0]:
        assert "<math" in html and 'encoding="application/x-tex"' in html
        assert "\\(" not in html and "\\[" not in html
        shown = re.sub(r"<annotation[^>]*>.*?</annotation>", "", html, flags=re.S)
        assert "\\" not in re.sub(r"<(code|pre)\b.*?</\1>", "", shown, flags=re.S)


def _pages() -> list[Path]:
    return sorted((ROOT / "docs").rglob("*.md"))


@pytest.mark.parametrize("page", _pages(), ids=lambda p: str(p.relative_to(ROOT / "docs")))
def test_every_formula_of_every_page_is_well_formed(page):
    found = problems_of(page.read_text())
    assert not found, f"{page.relative_to(ROOT)}:\n" + "\n".join(found)


def _docstring_texts() -> list[tuple[str, str]]:
    """(where, markdown) for every docstring of the package, split as mkdocstrings renders it:
    each text section, each parameter / return / raise description, each admonition; without
    griffe, each whole docstring."""
    out = []
    try:
        import griffe
    except ImportError:
        for p in sorted((ROOT / "genbounds").rglob("*.py")):
            for node in ast.walk(ast.parse(p.read_text())):
                if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef)):
                    doc = ast.get_docstring(node)
                    if doc:
                        out.append((f"{p.relative_to(ROOT)}:{getattr(node, 'name', '')}", doc))
        return out

    def walk(obj):
        for member in obj.members.values():
            if member.is_alias:
                continue
            if member.docstring is not None:
                yield member
            if member.is_module or member.is_class:
                yield from walk(member)

    import logging

    logging.getLogger("griffe").setLevel(logging.ERROR)  # its notes on grouped arguments
    package = griffe.load("genbounds", search_paths=[str(ROOT)])
    objects = [package, *walk(package)]
    for obj in objects:
        if obj.docstring is None:
            continue
        for section in obj.docstring.parse("google", warn_unknown_params=False):
            value = section.value
            texts = []
            if isinstance(value, str):
                texts.append(value)
            elif isinstance(value, list):
                for item in value:
                    desc = getattr(item, "description", None)
                    if isinstance(desc, str):
                        texts.append(desc)
                    elif isinstance(item, tuple) and len(item) == 2:
                        texts.append(str(item[1]) if str(item[0]).endswith("text") else "")
            elif hasattr(value, "contents"):
                texts.append(value.contents)
            for text in texts:
                if text:
                    out.append((f"{obj.path} ({section.kind.value})", inspect.cleandoc(text)))
    return out


def test_every_formula_of_every_docstring_is_well_formed():
    texts = _docstring_texts()
    assert len(texts) > 200  # the walk reached the package
    bad = []
    for where, text in texts:
        if "$" not in text and "\\(" not in text:
            continue
        bad += [f"{where}: {p}" for p in problems_of(text)]
    assert not bad, "\n".join(bad)


def test_a_formula_split_over_list_lines_stays_one_list():
    """docs/bounds/spectral.md: BFT's Lemma 3.1 is item 1 of five, its formula whole."""
    html = render((ROOT / "docs" / "bounds" / "spectral.md").read_text())
    steps = re.search(r"<ol>(.*?)</ol>", html, re.S).group(1)
    assert steps.count("<li>") == 5
    assert "Rademacher margin bound" in steps and "Together" in steps
    assert "<em>" not in re.sub(r"<em>empirical</em>", "", steps)  # no subscript as italics
