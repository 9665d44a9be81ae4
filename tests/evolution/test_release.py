"""Releasing a contract: until a release marks its steps `contract_released = True`, "head"
stops below them, also when a later revision is stacked on top; once marked, "head" is the top
again and a run to it applies nothing to schemas the contract phase already took there."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from migrations_sqla import scripts

VERSIONS = Path(scripts.__file__).parent / "versions"
CONTRACT_FILES = ("0007_due_at_contract_indexes.py", "0007_due_at_contract.py")
LATER = '''"""A later release's revision."""

revision = "0009"
down_revision = "0007c"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
'''


def copy_versions(tmp_path: Path, *, released: tuple[str, ...] = (), later: bool = False) -> str:
    """A script directory like migrations_sqla's, `released` contract files marked released."""
    location = tmp_path / "scripts"
    shutil.copytree(VERSIONS, location / "versions", ignore=shutil.ignore_patterns("__pycache__"))
    for name in released:
        path = location / "versions" / name
        text = path.read_text()
        assert "contract_step = True\n" in text
        path.write_text(
            text.replace(
                "contract_step = True\n", "contract_step = True\ncontract_released = True\n"
            )
        )
    if later:
        (location / "versions" / "0009_later.py").write_text(LATER)
    return str(location)


def pending(location: str) -> list[str]:
    return [step.revision for step in scripts.pending_contract_steps(location)]


def test_head_stays_below_a_pending_contract(tmp_path: Path) -> None:
    location = copy_versions(tmp_path)
    assert scripts.released_head(location) == "0008"
    assert scripts.resolve_revision(location, "head") == "0008"
    assert pending(location) == ["0007d", "0007c"]


def test_a_later_revision_on_a_pending_contract_does_not_pull_the_contract_into_head(
    tmp_path: Path,
) -> None:
    location = copy_versions(tmp_path, later=True)
    assert scripts.released_head(location) == "0008"
    assert pending(location) == ["0007d", "0007c", "0009"]


@pytest.mark.parametrize("marked", [CONTRACT_FILES[:1], CONTRACT_FILES[1:]])
def test_a_contract_released_in_part_is_still_pending(tmp_path: Path, marked) -> None:
    location = copy_versions(tmp_path, released=marked, later=True)
    assert scripts.released_head(location) == (
        "0008" if "0007_due_at_contract_indexes.py" not in marked else "0007d"
    )


def test_a_released_contract_is_part_of_head_with_what_follows(tmp_path: Path) -> None:
    location = copy_versions(tmp_path, released=CONTRACT_FILES)
    assert scripts.released_head(location) == "0007c"
    assert pending(location) == []
    later = copy_versions(tmp_path / "later", released=CONTRACT_FILES, later=True)
    assert scripts.released_head(later) == "0009"
    assert scripts.resolve_revision(later, "head") == "0009"
    assert pending(later) == []
