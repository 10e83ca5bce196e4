"""The schema migrations shipped with the package (``migrations/<dialect>/NNNN_name.sql``)."""

from __future__ import annotations

import re
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


_TRIGGER_WITH_BODY = re.compile(r"(?is)^create\s+trigger\b.*\bbegin\b")
_BODY_END = re.compile(r"(?is)\bend$")


def split_statements(sql: str) -> list[str]:
    """Split a migration into statements (our migrations have no semicolons inside literals).

    A trigger's ``BEGIN ... END`` body holds semicolons of its own: such a statement runs to its
    ``END;``, not to the first semicolon."""
    lines = [line for line in sql.splitlines() if not line.strip().startswith("--")]
    statements: list[str] = []
    current = ""
    for part in "\n".join(lines).split(";"):
        current = f"{current};{part}" if current else part
        text = current.strip()
        if _TRIGGER_WITH_BODY.match(text) and not _BODY_END.search(text):
            continue
        if text:
            statements.append(text)
        current = ""
    if current.strip():
        statements.append(current.strip())
    return statements
