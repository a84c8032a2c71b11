"""The README's family tables say what the family tests cover (regenerate with `python tests/family_tables.py
--write`)."""

from family_tables import README, readme_block, render


def test_readme_family_tables_match_the_tests():
    block = readme_block(README.read_text())
    assert block is not None, "README.md lost its generated family-table markers"
    assert block == render(), "README.md's family tables are stale: run `python tests/family_tables.py --write`"
