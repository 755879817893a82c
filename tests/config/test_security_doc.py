"""docs/security.md names the test that proves each point: every name it gives must exist."""

from __future__ import annotations

import re

from tests.support.processes import ROOT

REFERENCE = re.compile(r"`(tests/[\w/]+\.py)((?:::\w+)+)`")


def test_every_test_the_security_review_names_exists():
    text = (ROOT / "docs" / "security.md").read_text()
    references = REFERENCE.findall(text)
    assert len(references) > 50, "the review names its proofs as `file::test`"
    missing = []
    for path, names in references:
        source = ROOT / path
        *classes, test = names.strip(":").split("::")
        found = source.exists() and re.search(rf"^\s*(async )?def {test}\(", source.read_text(), re.MULTILINE)
        found = found and all(f"class {name}" in source.read_text() for name in classes)
        if not found:
            missing.append(f"{path}{names}")
    assert missing == []
