"""The documentation: it builds strictly, and it stands alone (no reference outside the repo)."""

from __future__ import annotations

import ast
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# Material that is not in the repository, and private module paths, have no place in what users
# read. Each pattern is matched case-insensitively.
FORBIDDEN = {
    "formulas.md": r"formulas\.md",
    "'the brief'": r"\bthe brief\b|\bbrief's\b",
    "'the issue'": r"\bthe issue\b|\bissue's\b|\bissue\s+#?\d+",
    "an addendum": r"\baddendum\b",
    "a shared folder": r"\.\./shared|/work/|\bshared/reference\b",
    "a session": r"\bsession\b",
    "a private module path": r"\bgenbounds(?:\.[a-z]\w*)*\._\w+",
}


def _user_texts() -> list[tuple[str, str]]:
    """(where, text) for every page under docs/, README.md, and every package docstring."""
    out = []
    for p in sorted((ROOT / "docs").rglob("*")):
        if p.suffix in (".md", ".py", ".yml") and p.is_file():
            out.append((str(p.relative_to(ROOT)), p.read_text()))
    out.append(("README.md", (ROOT / "README.md").read_text()))
    out.append(("mkdocs.yml", (ROOT / "mkdocs.yml").read_text()))
    for p in sorted((ROOT / "genbounds").rglob("*.py")):
        tree = ast.parse(p.read_text())
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                doc = ast.get_docstring(node, clean=False)
                if doc:
                    name = getattr(node, "name", "<module>")
                    out.append((f"{p.relative_to(ROOT)}:{name}", doc))
    return out


def find_forbidden(texts: list[tuple[str, str]]) -> list[str]:
    hits = []
    for where, text in texts:
        for line_no, line in enumerate(text.splitlines(), 1):
            for what, pattern in FORBIDDEN.items():
                for m in re.finditer(pattern, line, re.IGNORECASE):
                    hits.append(f"{where}:{line_no}: {what}: {m.group(0)!r} in {line.strip()!r}")
    return hits


def test_the_checker_finds_each_kind_of_reference():
    samples = ["see formulas.md §2", "as in the brief", "the issue's target", "issue 5",
               "addendum §7", "../shared/x", "this session", "`genbounds.linalg._spectral_norm.norm`"]
    for s in samples:
        assert find_forbidden([("x", s)]), s
    assert find_forbidden([("x", "Bartlett et al. 2017, Theorem 1.1; docs/bounds/vc.md")]) == []


def test_docs_and_docstrings_stand_alone():
    hits = find_forbidden(_user_texts())
    assert not hits, "references outside the repository or to private modules:\n" + "\n".join(
        hits)


@pytest.mark.skipif(importlib.util.find_spec("mkdocs") is None
                    or importlib.util.find_spec("mkdocstrings") is None
                    or importlib.util.find_spec("material") is None
                    or importlib.util.find_spec("latex2mathml") is None,
                    reason="the docs extra is not installed (pip install -e '.[docs]')")
def test_site_builds_strictly(tmp_path):
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # Every page of the navigation was rendered, the API reference holds the public names, and
    # the math went through arithmatex.
    api = (tmp_path / "api" / "genbounds" / "index.html").read_text()
    for name in ("report", "spectral", "vc", "pac_bayes", "golowich", "dziugaite_roy", "Bound"):
        assert f'id="genbounds.{name}"' in api, name
    assert 'class="arithmatex"' in api
    # The formulas are MathML written at build time: no TeX left for a script, no script from
    # another site (the pages read offline as online).
    assert api.count("<math") > 50
    for page in tmp_path.rglob("*.html"):
        html = page.read_text()
        assert not re.search(r'<script[^>]+src="(https?:)?//', html), page
        assert "mathjax" not in html.lower(), page
        for m in re.finditer(r'<(span|div) class="arithmatex">(.*?)</\1>', html, re.S):
            assert m.group(2).lstrip().startswith("<math"), (page, m.group(2)[:80])
    for page in ("quickstart", "your_network", "which_bound", "cli", "benchmarks", "tutorial",
                 "bounds/spectral", "measures/norms"):
        assert (tmp_path / page / "index.html").is_file(), page
