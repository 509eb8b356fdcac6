"""The README's configuration table names every setting the code reads, and nothing else:
an operator reads that table, so a new setting without a row (or a row for a setting that
was removed) fails here."""

from __future__ import annotations

import re

from server.settings import Settings
from tests.conftest import repo_root

# Settings an operator never sets by hand: `securechat demo` sets DEMO itself.
UNDOCUMENTED = {"demo"}


def documented_settings() -> set[str]:
    readme = (repo_root() / "README.md").read_text()
    section = readme.split("## Configuration", 1)[1].split("\n## ", 1)[0]
    names: set[str] = set()
    for line in section.splitlines():
        if line.startswith("| `"):
            first_cell = line.split("|")[1]
            names.update(name.lower() for name in re.findall(r"`([A-Z0-9_]+)`", first_cell))
        names.update(name.lower() for name in re.findall(r"\(with `([A-Z0-9_]+)`", line))
        for cell in re.findall(r"\(with ([^)]*)\)", line):
            names.update(name.lower() for name in re.findall(r"`([A-Z0-9_]+)`", cell))
    return names


def test_the_readme_table_lists_every_setting() -> None:
    fields = set(Settings.__struct_fields__) - UNDOCUMENTED
    documented = documented_settings()
    assert fields - documented == set(), "settings missing from README's Configuration table"
    assert documented - fields == set(), "README names settings the code does not read"
