"""Code cites docs/protocol.md, a document in the repository, never the external contract
(a file outside it), and every section a citation names exists."""

from __future__ import annotations

import re
import subprocess

from tests.support.processes import ROOT

CITATION = re.compile(r'docs/protocol\.md, ((?:"[^"]+"(?: and )?)+)')


def _tracked(*patterns: str) -> list[str]:
    return subprocess.run(["git", "ls-files", *patterns], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()


def test_no_code_cites_a_document_outside_the_repository():
    offenders = [
        f"{path}:{number}"
        for path in _tracked("*.py", "*.js", "*.html", "*.md")
        for number, line in enumerate((ROOT / path).read_text().splitlines(), 1)
        if re.search(r"CONTRACT(\.md)? ?(§|section)", line)
    ]
    assert offenders == []


def test_every_cited_section_of_the_protocol_exists():
    headings = {
        line.lstrip("#").strip() for line in (ROOT / "docs" / "protocol.md").read_text().splitlines() if line.startswith("#")
    }
    cited: set[str] = set()
    for path in _tracked("*.py", "*.js", "*.html"):
        for match in CITATION.finditer((ROOT / path).read_text()):
            cited |= {" ".join(name.split()) for name in re.findall(r'"([^"]+)"', match.group(1))}
    assert cited, "the code cites the protocol's sections"
    assert cited - headings == set()
