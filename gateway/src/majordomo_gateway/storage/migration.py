"""The schema migrations shipped with the package (``migrations/<dialect>/NNNN_name.sql``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

MIGRATIONS_DIR = Path(__file__).parent / "migrations"


@dataclass(slots=True, frozen=True)
class Migration:
    version: int
    name: str
    sql: str


def load_migrations(dialect: str) -> list[Migration]:
    migrations = []
    for path in sorted((MIGRATIONS_DIR / dialect).glob("*.sql")):
        version_text, _, name = path.stem.partition("_")
        migrations.append(Migration(int(version_text), name, path.read_text(encoding="utf-8")))
    return migrations


def split_statements(sql: str) -> list[str]:
    """Split a migration into statements (our migrations have no semicolons inside literals)."""
    lines = [line for line in sql.splitlines() if not line.strip().startswith("--")]
    return [part.strip() for part in "\n".join(lines).split(";") if part.strip()]
