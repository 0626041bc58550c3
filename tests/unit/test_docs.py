"""The docs match the code (issue 15): the options table is the settings table, the matrix page lists every cell
key with its default, the site builds with ``mkdocs build --strict``, the README stays short, and no link points
outside the repository.

Regenerate the options table after changing config/settings.py:
``python -m pytest_wsgi502.config.docs --write docs/options.md``.
"""

from __future__ import annotations

import dataclasses
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pytest_wsgi502.config import docs
from pytest_wsgi502.config.matrix import Cell
from pytest_wsgi502.config.settings import SETTINGS, Setting
from pytest_wsgi502.config.values import ConfigError

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
OPTIONS_PAGE = DOCS / "options.md"
PAGES = sorted(DOCS.rglob("*.md"))
REGENERATE = "python -m pytest_wsgi502.config.docs --write docs/options.md"


def _tracked_files() -> list[Path]:
    out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    return [ROOT / name for name in out.decode().split("\0") if name]


# --- the options table --------------------------------------------------------------------------------------------

def test_options_page_holds_the_table_the_settings_render() -> None:
    _, table, _ = docs.split(OPTIONS_PAGE.read_text(encoding="utf-8"))
    assert table == docs.options_table(), f"docs/options.md and config/settings.py disagree; run: {REGENERATE}"


def test_every_setting_has_one_row_with_its_option_ini_and_env() -> None:
    _, table, _ = docs.split(OPTIONS_PAGE.read_text(encoding="utf-8"))
    rows = table.splitlines()[2:]
    assert len(rows) == len(SETTINGS)
    for s, row in zip(SETTINGS, rows, strict=True):
        assert row.startswith(f"| `{s.option}"), row
        assert f"`{s.ini}`" in row and f"`{s.env}`" in row


def test_a_new_or_changed_setting_is_drift() -> None:
    """What the page test compares: a setting added (as the lead's ``isolation`` was) or a default changed
    renders a different table, so the page test above fails until the page is regenerated."""
    page_table = docs.split(OPTIONS_PAGE.read_text(encoding="utf-8"))[1]
    added = (*SETTINGS, Setting("db", "the database: mysql or none", "mysql"))
    assert docs.options_table(added) != page_table
    changed = tuple(dataclasses.replace(s, default="20s") if s.name == "duration" else s for s in SETTINGS)
    assert docs.options_table(changed) != page_table
    assert docs.options_table(SETTINGS[:-1]) != page_table


def test_write_rewrites_a_stale_page_between_the_markers(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    page = tmp_path / "options.md"
    page.write_text(f"# Options\n\nbefore\n\n{docs.BEGIN}\n| stale |\n{docs.END}\n\nafter\n", encoding="utf-8")
    assert docs.main(["--write", str(page)]) == 0
    text = page.read_text(encoding="utf-8")
    assert "| stale |" not in text and text.startswith("# Options\n\nbefore\n\n") and text.endswith("\n\nafter\n")
    assert docs.split(text)[1] == docs.options_table()
    assert docs.main(["--write", str(page)]) == 0  # idempotent
    assert page.read_text(encoding="utf-8") == text
    assert "already up to date" in capsys.readouterr().out


def test_write_refuses_a_page_without_markers(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    page = tmp_path / "options.md"
    page.write_text("# Options\n", encoding="utf-8")
    assert docs.main(["--write", str(page)]) == 1
    assert page.read_text(encoding="utf-8") == "# Options\n"
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "BEGIN options table" in err
    with pytest.raises(ConfigError):
        docs.split(f"{docs.END}\n{docs.BEGIN}\n")


def test_printing_the_table_and_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert docs.main([]) == 0
    assert capsys.readouterr().out == docs.options_table()
    assert docs.main(["--bogus"]) == 2
    assert "usage:" in capsys.readouterr().err


def test_markdown_in_help_text_stays_literal_and_one_cell() -> None:
    row = docs.options_table([Setting("x", "a|b *c* WSGI502_DB_* <b> [x](y) `z`", "p|q")]).splitlines()[2]
    cells = re.split(r"(?<!\\)\|", row)[1:-1]
    assert len(cells) == 5, row
    assert "&lt;b>" in row and "\\*c\\*" in row and "\\[x\\](y)" in row and "\\`z\\`" in row


def test_the_base_image_default_does_not_depend_on_the_python_that_renders_it() -> None:
    base = next(s for s in SETTINGS if s.name == "base_image")
    major, minor = sys.version_info[:2]
    assert docs.shown_default(base) == "`python:X.Y-slim-bookworm`"
    assert docs.shown_default(dataclasses.replace(base, default="python:3.99-slim"), (3, 99)) == "`python:X.Y-slim`"
    assert docs.shown_default(dataclasses.replace(base, default=f"python:{major}.{minor}-x"), (3, 0)) \
        == f"`python:{major}.{minor}-x`"


def test_every_option_the_docs_mention_exists() -> None:
    """A page may not describe an option the code does not have (nor a misspelt one)."""
    known = {s.option for s in SETTINGS} | {"--wsgi-matrix"}
    for path in [ROOT / "README.md", *PAGES]:
        mentioned = set(re.findall(r"--wsgi-[a-z][a-z-]*[a-z]", path.read_text(encoding="utf-8")))
        assert mentioned <= known, f"{path.relative_to(ROOT)}: unknown option(s) {sorted(mentioned - known)}"


# --- the matrix reference -----------------------------------------------------------------------------------------

def _matrix_rows() -> dict[str, str]:
    text = (DOCS / "matrix.md").read_text(encoding="utf-8")
    section = text.split("## Every cell key", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        m = re.match(r"\| `([a-z_]+)` \| ([^|]*) \|", line)
        if m:
            rows[m[1]] = m[2].strip()
    return rows


def test_matrix_page_lists_every_cell_key_with_its_default() -> None:
    rows = _matrix_rows()
    keys = {f.name for f in dataclasses.fields(Cell)} - {"name", "origin"} | {"extends"}
    assert set(rows) == keys, f"missing: {sorted(keys - set(rows))}, unknown: {sorted(set(rows) - keys)}"
    for f in dataclasses.fields(Cell):
        if f.name in rows and isinstance(f.default, int | str):
            shown = f"`{f.default}`" if isinstance(f.default, int) else f'`"{f.default}"`'
            assert rows[f.name] == shown, f"{f.name}: the page says {rows[f.name]}, the code {f.default!r}"
        elif f.default is None:
            assert rows[f.name] == "unset", f"{f.name}: the page says {rows[f.name]}, the code None"
    assert rows["max_requests"] == "`0`"  # issue 15: the default of max_requests was undocumented


# --- the site -----------------------------------------------------------------------------------------------------

def _mkdocs(config: Path, site: Path) -> subprocess.CompletedProcess[str]:
    """mkdocs is a dev dependency: missing, this fails (no skip)."""
    return subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(config), "-d",
                           str(site)], capture_output=True, text=True, timeout=300,
                          env={"PATH": "/usr/bin:/bin", "NO_MKDOCS_2_WARNING": "1"})


def test_the_site_builds_with_strict(tmp_path: Path) -> None:
    r = _mkdocs(ROOT / "mkdocs.yml", tmp_path / "site")
    assert r.returncode == 0, r.stdout + r.stderr
    assert (tmp_path / "site" / "options" / "index.html").is_file()
    assert "--wsgi-verify-contains" in (tmp_path / "site" / "options" / "index.html").read_text(encoding="utf-8")


def test_strict_build_fails_on_a_broken_link(tmp_path: Path) -> None:
    """The strict build is a real gate: a link to a page or an anchor that does not exist fails it."""
    for bad in ("[gone](nowhere.md)", "[gone](matrix.md#no-such-section)"):
        copy = tmp_path / bad.split("(")[1][:4]
        shutil.copytree(DOCS, copy / "docs")
        shutil.copy(ROOT / "mkdocs.yml", copy / "mkdocs.yml")
        with open(copy / "docs" / "index.md", "a", encoding="utf-8") as fh:
            fh.write(f"\n{bad}\n")
        r = _mkdocs(copy / "mkdocs.yml", copy / "site")
        assert r.returncode != 0, bad


def test_every_page_is_in_the_nav() -> None:
    nav = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    for page in PAGES:
        assert f" {page.relative_to(DOCS).as_posix()}" in nav, page


# --- README and links ---------------------------------------------------------------------------------------------

def test_readme_is_short() -> None:
    lines = (ROOT / "README.md").read_text(encoding="utf-8").count("\n")
    assert lines < 200, f"README.md has {lines} lines; move sections to docs/"


def test_readme_keeps_the_two_commands() -> None:
    """.ci/run and the CI workflow run the README's commands."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "bash bin/dev matrix" in readme and "bash bin/dev test" in readme


# a path that climbs out of the checkout: "../<name>/" where <name> is no top-level entry of this repository
# (sample_project's "../.venv/bin/pytest" stays inside), or an absolute path into the machine's workspace
_PARENT = re.compile(r"(?<![\w.])\.\./([A-Za-z_][\w-]*)/")
_WORKSPACE = re.compile(r"(?<![\w.])/work/")


def _points_outside(line: str) -> bool:
    return bool(_WORKSPACE.search(line)) or any(not (ROOT / name).exists() for name in _PARENT.findall(line))


def test_nothing_in_the_repository_points_outside_it() -> None:
    """Users have only this checkout: no tracked file may point to a sibling directory or the workspace."""
    me = Path(__file__).resolve()
    bad = []
    for path in _tracked_files():
        if path.resolve() == me or not path.is_file():
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        bad += [f"{path.relative_to(ROOT)}:{n}: {line.strip()}" for n, line in enumerate(text.splitlines(), 1)
                if _points_outside(line)]
    assert not bad, "\n".join(bad)


_LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def _relative_links(path: Path) -> list[str]:
    text = re.sub(r"```.*?```", "", path.read_text(encoding="utf-8"), flags=re.S)  # not in code blocks
    return [t for t in _LINK.findall(text) if not re.match(r"[a-z]+:|#", t)]


def test_every_relative_link_resolves() -> None:
    bad = []
    for path in [ROOT / "README.md", *PAGES]:
        for target in _relative_links(path):
            file = target.split("#", 1)[0]
            resolved = (path.parent / file).resolve()
            if not resolved.exists() or not resolved.is_relative_to(ROOT):
                bad.append(f"{path.relative_to(ROOT)}: {target}")
            elif path.is_relative_to(DOCS) and not resolved.is_relative_to(DOCS):
                bad.append(f"{path.relative_to(ROOT)}: {target} (outside docs/: the site cannot serve it)")
    assert not bad, "\n".join(bad)


def test_the_link_check_sees_a_broken_link(tmp_path: Path) -> None:
    page = tmp_path / "p.md"
    page.write_text("[a](gone.md) [b](https://example.org) [c](#here)\n```\n[d](in-code.md)\n```\n")
    assert _relative_links(page) == ["gone.md"]
