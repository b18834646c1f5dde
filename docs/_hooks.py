"""MkDocs hooks for the genbounds site (referenced from mkdocs.yml; not a page).

* ``tutorial.md`` is generated from ``docs/tutorial.py`` (the test suite runs that script), so
  the page always shows the code that is tested.
* ``benchmarks.md``: when the repository has no hand-written page, a page is generated that lists
  the scripts under ``benchmarks/`` with their own descriptions and how to run them.
* ``cli.md`` ends with the ``--help`` of every command, generated from the parser.
* The API pages list the public names by topic; a public name that no page lists yet is added
  at the end of its namespace's page, so the reference never silently misses one.
* Math: every formula of every built page (the docstrings of the API pages included) is
  checked and turned into MathML by ``docs/_mathml.py`` (latex2mathml), so the site shows
  formulas with no script and no network; a formula that is not well-formed, or TeX left
  outside any formula, fails the build naming the page and the formula.
"""

from __future__ import annotations

import ast
import importlib.util
import re
from pathlib import Path

from mkdocs.exceptions import PluginError
from mkdocs.structure.files import File

ROOT = Path(__file__).resolve().parent.parent


def _load_mathml():
    spec = importlib.util.spec_from_file_location("genbounds_docs_mathml",
                                                  ROOT / "docs" / "_mathml.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_MATHML = _load_mathml()

API_PAGES = {
    "api/genbounds.md": ("genbounds", ROOT / "genbounds" / "__init__.py"),
    "api/data.md": ("genbounds.data", ROOT / "genbounds" / "data" / "__init__.py"),
    "api/train.md": ("genbounds.train", ROOT / "genbounds" / "train" / "__init__.py"),
}


def public_names(init: Path) -> list[str]:
    """The names a package's ``__init__.py`` re-exports (``from ._x import f as f``)."""
    names = []
    for node in ast.parse(init.read_text()).body:
        if isinstance(node, ast.ImportFrom) and node.level >= 1:
            for alias in node.names:
                if alias.asname and alias.asname == alias.name and not alias.name.startswith("_"):
                    names.append(alias.name)
    return names


def _docstring(path: Path) -> str:
    doc = ast.get_docstring(ast.parse(path.read_text())) or ""
    return doc.strip()


def _benchmarks_page() -> str:
    lines = [
        "# Benchmarks",
        "",
        "The scripts under `benchmarks/` time the library against a baseline measured in the same",
        "run and print the ratio; they are not part of the default test run. Run one as a plain",
        "script, or through pytest-benchmark:",
        "",
        "```bash",
    ]
    scripts = sorted((ROOT / "benchmarks").glob("bench_*.py"))
    lines += [f".venv/bin/python benchmarks/{p.name}" for p in scripts]
    lines += ["pytest benchmarks/ --benchmark-only -s", "```", ""]
    for p in scripts:
        lines += [f"## `benchmarks/{p.name}`", "", "```text", _docstring(p), "```", ""]
    return "\n".join(lines)


def _tutorial_page() -> str:
    code = (ROOT / "docs" / "tutorial.py").read_text()
    return "\n".join([
        "# Tutorial",
        "",
        "Train a small net, compute its bounds, compare them with the measured test error and draw",
        "the plot. The script is `docs/tutorial.py`; the test suite runs it.",
        "",
        "```python",
        code.rstrip(),
        "```",
        "",
    ])


def on_files(files, config):
    if files.get_file_from_path("benchmarks.md") is None:
        files.append(File.generated(config, "benchmarks.md", content=_benchmarks_page()))
    if files.get_file_from_path("tutorial.md") is None:
        files.append(File.generated(config, "tutorial.md", content=_tutorial_page()))
    return files


def _cli_help() -> str:
    """The ``--help`` of every subcommand, from the parser itself."""
    import argparse
    import os

    os.environ["COLUMNS"] = "100"
    from genbounds.experiments.cli import build_parser

    parser = build_parser()
    parts = ["```text", parser.format_help().rstrip(), "```", ""]
    subs = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, sub in subs.choices.items():
        parts += [f"### `genbounds {name}`", "", "```text", sub.format_help().rstrip(), "```", ""]
    return "\n".join(parts)


def on_page_markdown(markdown, page, config, files):
    if page.file.src_uri == "cli.md":
        return markdown.replace("<!-- cli-help -->", _cli_help())
    entry = API_PAGES.get(page.file.src_uri)
    if entry is None:
        return markdown
    namespace, init = entry
    listed = set(re.findall(r"^::: " + re.escape(namespace) + r"\.(\w+)\s*$", markdown, re.M))
    missing = [n for n in public_names(init) if n not in listed]
    if missing:
        markdown += "\n\n## Other public names\n\n"
        markdown += "\n\n".join(f"::: {namespace}.{n}" for n in missing) + "\n"
    return markdown


def on_post_page(output, page, config):
    html, problems = _MATHML.convert_html(output)
    if problems:
        raise PluginError(f"{page.file.src_uri}: {len(problems)} broken formula(s): "
                          + " | ".join(problems[:5]))
    return html
