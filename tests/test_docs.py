"""House checks on the documentation: it stands alone, links resolve, and generated pages are current.

* README.md, CONTRIBUTING.md and every Markdown file under docs/ refer to nothing outside the
  repository: no ``../``, no absolute paths (``/work/...``, ``/shared/...``), no "shared folder" or
  "beside the checkout". Per-user locations that exist on every machine (``~/.cache/losslab``,
  ``$LOSSLAB_CACHE``) and URLs are fine.
* Relative links in those files point at files that exist in the repository.
* docs/findings.md equals :func:`losslab.experiments.findings_markdown` (``make docs`` rewrites it).
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from losslab.experiments import EXPERIMENTS, ROWS, findings_markdown
from losslab.experiments._findings import escape_markdown

ROOT = Path(__file__).resolve().parents[1]


def doc_files() -> list[Path]:
    files = [ROOT / "README.md", ROOT / "CONTRIBUTING.md", *sorted((ROOT / "docs").rglob("*.md"))]
    return [f for f in files if f.is_file()]


def _rel(p: Path) -> str:
    return p.relative_to(ROOT).as_posix()


# An absolute POSIX path: a "/" that starts a token (line start, space, bracket, quote, backtick, "=")
# and is followed by a name, as in "/work/x" or "(/shared/runs)". "train/test", "1/3", "Tr(H)/||H||"
# and URLs ("https://host/path") do not match.
_ABSOLUTE = re.compile(r"(?:^|(?<=[\s(`\"'=\[]))/[A-Za-z_][\w.-]*")
_FORBIDDEN = (
    (re.compile(r"\.\./"), "a path above the repository (../)"),
    (re.compile(r"/work/"), "a machine-specific path (/work/)"),
    (re.compile(r"shared[ -]folder", re.I), "a 'shared folder' outside the repository"),
    (re.compile(r"beside the checkout", re.I), "a path 'beside the checkout'"),
)


def outside_references(text: str) -> list[str]:
    """Every place in ``text`` that refers to a path outside the repository, as 'line N: why: text'."""
    found = []
    for n, line in enumerate(text.splitlines(), 1):
        for rx, why in _FORBIDDEN:
            if rx.search(line):
                found.append(f"line {n}: {why}: {line.strip()}")
        for m in _ABSOLUTE.finditer(line):
            found.append(f"line {n}: an absolute path {m.group(0)!r}: {line.strip()}")
    return found


def test_the_outside_reference_check_catches_what_it_should():
    bad = ["see /work/main/.venv for the venv", "the data lives in ../shared/data", "copy it to the shared folder",
           "a folder beside the checkout", "torchrun ... surface /shared/runs/train-x", "(`/tmp/x`)"]
    for line in bad:
        assert outside_references(line), line
    good = ["train/test error", "a ratio 1/3", "Tr(H)/||H||", "see https://example.org/a/b", "`docs/findings.md`",
            "cached under `~/.cache/losslab` or `$LOSSLAB_CACHE`", "runs/train-<hash>", "[x](docs/x.md)"]
    for line in good:
        assert not outside_references(line), line


@pytest.mark.parametrize("path", doc_files(), ids=_rel)
def test_docs_refer_to_nothing_outside_the_repository(path):
    problems = outside_references(path.read_text(encoding="utf-8"))
    assert not problems, f"{_rel(path)} refers outside the repository:\n" + "\n".join(problems)


_LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


@pytest.mark.parametrize("path", doc_files(), ids=_rel)
def test_relative_links_resolve_inside_the_repository(path):
    text = re.sub(r"```.*?```", "", path.read_text(encoding="utf-8"), flags=re.S)  # code is not links
    broken = []
    for target in _LINK.findall(text):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
            continue  # URL or in-page anchor
        file_part = target.split("#", 1)[0]
        dest = (path.parent / file_part).resolve()
        if not dest.is_relative_to(ROOT) or not dest.exists():
            broken.append(target)
    assert not broken, f"{_rel(path)}: links to missing files: {broken}"


def test_contributing_guide_replaces_the_helper_notes():
    assert (ROOT / "CONTRIBUTING.md").is_file()
    assert not (ROOT / "docs" / "CONTRIBUTING-helpers.md").exists()
    text = (ROOT / "CONTRIBUTING.md").read_text(encoding="utf-8")
    for topic in ("make setup", "make test", "float64", "seed", "atomic", "weights_only", "bench/RESULTS.md",
                  "CRITERIA", "make docs"):
        assert topic in text, topic


def test_readme_lists_the_documentation():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = re.search(r"^## Documentation\n(.*?)(?=^## |\Z)", text, re.S | re.M)
    assert section, "README.md has no '## Documentation' section"
    for target in ("CONTRIBUTING.md", "docs/architecture.md", "docs/findings.md", "docs/distributed.md"):
        assert f"]({target})" in section.group(1), target


# ---- docs/findings.md ---------------------------------------------------------------------------

def _unescape(text: str) -> str:
    return re.sub(r"\\(.)", r"\1", text)


def test_findings_md_is_current():
    committed = (ROOT / "docs" / "findings.md").read_text(encoding="utf-8")
    assert committed == findings_markdown(), "docs/findings.md is stale: run `make docs` and commit it"


def _row_block(text: str, row_id: str) -> str:
    m = re.search(rf"^### {row_id} — .*?(?=^##|\Z)", text, re.S | re.M)
    assert m, f"no section for {row_id}"
    return m.group(0)


def test_findings_give_every_row_its_claim_reference_and_criteria_verbatim():
    text = findings_markdown()
    assert set(EXPERIMENTS) <= set(ROWS)
    for row_id, row in ROWS.items():
        block = _row_block(text, row_id)
        assert _unescape(block.splitlines()[0]) == f"### {row_id} — {row.title}"
        assert f"**Claim.** {escape_markdown(row.claim)}\n" in block
        assert f"**Reference.** {escape_markdown(row.reference)}\n" in block
        bullets = [_unescape(line[2:]) for line in block.splitlines() if line.startswith("- ")]
        if row_id in EXPERIMENTS:
            assert bullets == EXPERIMENTS[row_id].CRITERIA.lines(), row_id
        else:
            assert bullets == [], row_id


def test_findings_name_rows_without_a_working_module():
    text = findings_markdown(experiments={k: v for k, v in EXPERIMENTS.items() if k not in ("A2", "C3")},
                             broken={"C3": "cannot import c3_instability: ValueError: x"})
    assert "**Experiment.** not yet implemented" in _row_block(text, "A2")
    assert "**Experiment.** broken: cannot import c3\\_instability: ValueError: x" in _row_block(text, "C3")
    assert "| [A2](#a2--zero-training-error) | Zero training error | not yet implemented |" in text
    assert not [line for line in _row_block(text, "A2").splitlines() if line.startswith("- ")]


@pytest.mark.parametrize("raw", [
    "max_a (L(a) - min_{a'<=a} L(a')) / L(0) < 0.001",
    "*bold* and `code` and ~strike~ and a\\b and <hash> and <= 1",
    "|statistic| < 0.01 (equivalence, TOST at 0.05: 90% interval inside ±margin)",
])
def test_escape_markdown_keeps_the_text_and_neutralises_markup(raw):
    esc = escape_markdown(raw)
    assert _unescape(esc) == raw
    assert not re.search(r"(?<!\\)[*_~`]", esc)  # every emphasis/code/strike character is escaped
    assert not re.search(r"(?<!\\)<[A-Za-z]", esc)  # no HTML tag can open


# ---- packaging ----------------------------------------------------------------------------------

def test_package_ships_py_typed():
    assert (ROOT / "src" / "losslab" / "py.typed").is_file()
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert "py.typed" in cfg["tool"]["setuptools"]["package-data"]["losslab"]
