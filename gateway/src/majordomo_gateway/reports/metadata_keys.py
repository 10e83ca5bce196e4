"""The metadata keys clients have sent (``X-Majordomo-Team`` -> ``Team``), from the raw rows.

Read from llm_requests over a time range, so it costs a scan of that range; a registry kept by the
writer (issue 13, rollups) can answer the same question from one small table later.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from majordomo_gateway.reports.usage import ReportDatabase, Statement, filter_clauses


@dataclass(frozen=True, slots=True)
class MetadataKey:
    key: str
    #: requests in the range that carried it
    requests: int


async def metadata_keys(database: ReportDatabase, *, since: datetime | None, until: datetime | None,
                        owner_user_id: str | None = None) -> list[MetadataKey]:
    """Every key seen in the range, most used first."""
    statement = Statement(numbered=database.dialect == "postgres")
    clauses = filter_clauses(statement, since=since, until=until, where=(), owner_user_id=owner_user_id)
    source = ("jsonb_object_keys(r.raw_metadata) AS m(key)" if statement.numbered
              else "json_each(r.raw_metadata) AS m")
    sql = f"SELECT m.key AS key, COUNT(*) AS requests FROM llm_requests r, {source}"
    if clauses:
        sql += " WHERE " + " AND ".join(clauses)
    sql += " GROUP BY m.key ORDER BY 2 DESC, 1"
    return [MetadataKey(str(row["key"]), int(row["requests"])) for row in await database.aggregate(sql, statement.args)]
