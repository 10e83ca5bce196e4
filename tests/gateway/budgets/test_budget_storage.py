"""The budget tables on both backends: the ledger counts each inserted row once, from the row's own
data, whatever the writer replays; creation counts the current period; reprice moves it by the delta."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
import uuid_utils
from majordomo_gateway.auth.keys import display_prefix, generate_key, hash_secret
from majordomo_gateway.budgets.scope import parse_scope
from majordomo_gateway.periods import TOTAL_START, next_start, period_start
from majordomo_gateway.storage.database import Database, open_database
from majordomo_gateway.storage.errors import ConstraintViolation
from majordomo_gateway.storage.records import BudgetHold, BudgetRecord, CostUpdate, RateLimitRecord

from tests.support import PostgresServer
from tests.support.records import NOW, make_record

COST = Decimal("0.0032850000")  # make_record's total_cost
PLACES = Decimal("1e-10")


@pytest.fixture(params=["sqlite", "postgres"])
async def database(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Database]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'b.db'}"
    else:
        server: PostgresServer = request.getfixturevalue("postgres")
        url = server.create()
    db = open_database(url)
    await db.connect()
    await db.migrate()
    yield db
    await db.close()


def budget(scope: str, *, limit: str = "1", period: str = "day", tz: str = "UTC", soft: bool = False,
           created: datetime = NOW) -> BudgetRecord:
    parsed = parse_scope(scope)
    return BudgetRecord(id=str(uuid_utils.uuid7()), scope=parsed.text, scope_kind=parsed.kind,
                        scope_key=parsed.key, scope_value=parsed.value, limit_usd=Decimal(limit), period=period,
                        time_zone=tz, soft=soft, alert_at=(50, 100), webhook=None, created_at=created,
                        updated_at=created)


async def create(db: Database, record: BudgetRecord, at: datetime = NOW) -> BudgetRecord:
    return await db.budgets.create(record, current_start=period_start(at, record.period, record.time_zone))


async def spent(db: Database, record: BudgetRecord, at: datetime = NOW) -> dict[str, tuple[Decimal, int]]:
    rows = await db.budgets.spend_of(record.id, period_start(at, record.period, record.time_zone))
    # SQLite sums costs as REAL: compare at the cost columns' ten places
    return {r.scope_value: (r.spent.quantize(PLACES), r.requests) for r in rows}


async def make_key(db: Database, name: str = "k") -> str:
    key = generate_key()
    created = await db.create_key(str(uuid_utils.uuid7()), name, None, hash_secret(key), display_prefix(key), NOW)
    return created.id


def test_periods_are_calendar_periods_in_the_time_zone() -> None:
    at = datetime(2026, 3, 29, 23, 30, tzinfo=UTC)  # a Sunday; Paris is already on Monday 30 (summer time)
    assert period_start(at, "day", "UTC") == datetime(2026, 3, 29, tzinfo=UTC)
    assert period_start(at, "day", "Europe/Paris") == datetime(2026, 3, 29, 22, tzinfo=UTC)
    assert period_start(at, "week", "UTC") == datetime(2026, 3, 23, tzinfo=UTC)
    assert period_start(at, "week", "Europe/Paris") == datetime(2026, 3, 29, 22, tzinfo=UTC)
    assert period_start(at, "month", "UTC") == datetime(2026, 3, 1, tzinfo=UTC)
    assert period_start(at, "total", "UTC") == TOTAL_START
    # Paris changed to summer time on 29 March: that day lasted 23 hours
    day = period_start(datetime(2026, 3, 29, 12, tzinfo=UTC), "day", "Europe/Paris")
    assert next_start(day, "day", "Europe/Paris") - day == timedelta(hours=23)
    assert next_start(datetime(2026, 12, 1, tzinfo=UTC), "month", "UTC") == datetime(2027, 1, 1, tzinfo=UTC)
    assert next_start(TOTAL_START, "total", "UTC") is None


async def test_rows_are_counted_once_per_matching_budget(database: Database) -> None:
    key_id = await make_key(database)
    other_key = await make_key(database, "other")
    everything = await create(database, budget("global"))
    per_key = await create(database, budget(f"key:{key_id}"))
    per_model = await create(database, budget("model:claude-sonnet-4-20250514"))
    feature = await create(database, budget("metadata:Feature=chat"))
    per_user = await create(database, budget("metadata:user-id=*"))
    monthly = await create(database, budget("global", period="month"))
    rows = [make_record(key_id), make_record(key_id, raw_metadata={"User-Id": "u2", "Feature": "other"}),
            make_record(other_key, model="gpt-4o", raw_metadata={}),
            make_record(key_id, at=NOW - timedelta(days=1)),  # yesterday: another day, the same month
            make_record(key_id, total_cost=None, usage_source="none", status_code=429)]
    first = await database.insert_requests(rows)
    assert first.inserted == 5
    # A spool replay, and a batch that repeats some rows: nothing more is counted.
    assert (await database.insert_requests(rows)).inserted == 0
    assert (await database.insert_requests([rows[0], make_record(key_id)])).inserted == 1
    # today: rows 0, 1, 2, the 429 (no cost) and the new one
    assert await spent(database, everything) == {"": (4 * COST, 5)}
    assert await spent(database, per_key) == {"": (3 * COST, 4)}
    assert await spent(database, per_model) == {"": (3 * COST, 4)}
    assert await spent(database, feature) == {"": (2 * COST, 3)}
    assert await spent(database, per_user) == {"u1": (2 * COST, 3), "u2": (COST, 1)}
    assert await spent(database, monthly) == {"": (5 * COST, 6)}
    assert await spent(database, everything, NOW - timedelta(days=1)) == {"": (COST, 1)}


async def test_creation_counts_the_current_period_already_stored(database: Database) -> None:
    await database.insert_requests([make_record(None), make_record(None, raw_metadata={"User-Id": "u9"}),
                                    make_record(None, at=NOW - timedelta(days=2))])
    daily = await create(database, budget("metadata:User-Id=*"))
    total = await create(database, budget("global", period="total"))
    assert await spent(database, daily) == {"u1": (COST, 1), "u9": (COST, 1)}
    assert await spent(database, total) == {"": (3 * COST, 3)}
    with pytest.raises(ConstraintViolation):
        await create(database, budget("global", period="total"))


async def test_reprice_moves_the_ledger_by_the_difference(database: Database) -> None:
    daily = await create(database, budget("metadata:User-Id=*"))
    rows = [make_record(None), make_record(None, total_cost=None, usage_source="reported")]
    await database.insert_requests(rows)
    assert await spent(database, daily) == {"u1": (COST, 2)}
    updates = [CostUpdate(rows[0].id, None, None, Decimal("0.01"), True),
               CostUpdate(rows[1].id, None, None, Decimal("0.002"), True)]
    assert await database.update_costs(updates) == 2
    assert await spent(database, daily) == {"u1": (Decimal("0.0120000000"), 2)}
    assert await database.update_costs(updates) == 2  # the same prices again: no change
    assert await spent(database, daily) == {"u1": (Decimal("0.0120000000"), 2)}


async def test_reset_update_delete(database: Database) -> None:
    daily = await create(database, budget("metadata:User-Id=*"))
    await database.insert_requests([make_record(None), make_record(None, raw_metadata={"User-Id": "u2"})])
    start = period_start(NOW, "day", "UTC")
    assert await database.budgets.reset(daily.id, start, "u2") == 1
    assert await spent(database, daily) == {"u1": (COST, 1)}
    assert await database.budgets.reset(daily.id, start) == 1
    assert await spent(database, daily) == {}
    version = await database.budgets.version()
    updated = await database.budgets.update(daily.id, limit_usd=Decimal("7.5"), soft=True, alert_at=(80,),
                                            webhook="http://127.0.0.1:9/hook", now=NOW)
    assert updated is not None and (updated.limit_usd, updated.soft, updated.alert_at) == (Decimal("7.5"), True, (80,))
    assert await database.budgets.version() > version  # other processes reload the definitions
    await database.insert_requests([make_record(None)])
    assert await database.budgets.delete(daily.id) is not None
    assert await database.budgets.get(daily.id) is None
    assert await database.budgets.spend_since(start) == []  # the ledger went with it
    assert await database.budgets.get("not-an-id") is None


async def test_holds_are_shared_and_expire(database: Database) -> None:
    daily = await create(database, budget("global"))
    start = period_start(NOW, "day", "UTC")
    hold = BudgetHold("p1", daily.id, "", start, Decimal("0.5"), NOW + timedelta(seconds=2))
    await database.budgets.publish_holds("p1", [hold], now=NOW)
    assert await database.budgets.holds_of_others("p1", NOW) == []
    [seen] = await database.budgets.holds_of_others("p2", NOW)
    assert (seen.process_id, seen.amount) == ("p1", Decimal("0.5"))
    assert await database.budgets.holds_of_others("p2", NOW + timedelta(seconds=3)) == []  # p1 died
    await database.budgets.publish_holds("p1", [], now=NOW)
    assert await database.budgets.holds_of_others("p2", NOW) == []


async def test_rate_limits_and_their_shared_counters(database: Database) -> None:
    scope = parse_scope("metadata:User-Id=*")
    limit = await database.budgets.create_limit(RateLimitRecord(
        str(uuid_utils.uuid7()), scope.text, scope.kind, scope.key, scope.value, 60, None, NOW, NOW))
    assert [x.id for x in await database.budgets.limits()] == [limit.id]
    minute = NOW.replace(second=0)
    await database.budgets.add_rate_usage([(limit.id, "u1", minute, 3, 30)], older_than=minute)
    await database.budgets.add_rate_usage([(limit.id, "u1", minute, 2, 5), (limit.id, "u2", minute, 1, 1)],
                                          older_than=minute)
    usage = sorted(await database.budgets.rate_usage_since(minute))
    assert usage == [(limit.id, "u1", minute, 5, 35), (limit.id, "u2", minute, 1, 1)]
    await database.budgets.add_rate_usage([], older_than=minute + timedelta(minutes=1))
    assert await database.budgets.rate_usage_since(minute) == []
    changed = await database.budgets.update_limit(limit.id, rpm=None, tpm=1000, now=NOW)
    assert changed is not None and (changed.rpm, changed.tpm) == (None, 1000)
    with pytest.raises(ConstraintViolation):
        await database.budgets.create_limit(RateLimitRecord(
            str(uuid_utils.uuid7()), scope.text, scope.kind, scope.key, scope.value, 1, None, NOW, NOW))
    assert await database.budgets.delete_limit(limit.id) is not None


async def test_alerts_are_recorded_once_and_claimed_by_one_caller(database: Database) -> None:
    record = await create(database, budget("metadata:User-Id=*", limit="0.004"))
    start = period_start(NOW, "day", "UTC")
    crossing = [(record.id, "u-1", start, 50, COST), (record.id, "u-1", start, 100, COST)]
    await database.budgets.add_alerts(crossing, now=NOW)
    await database.budgets.add_alerts(crossing, now=NOW)  # another process saw the same: no new rows
    later = NOW + timedelta(minutes=1)
    claims = await asyncio.gather(*(database.budgets.claim_alerts(now=NOW, lease_until=later) for _ in range(4)))
    assert sorted(len(c) for c in claims) == [0, 0, 0, 2]  # one claimer got both
    [claimed] = [c for c in claims if c]
    assert {(a.threshold, a.attempts, a.spent.quantize(PLACES)) for a in claimed} == {(50, 1, COST), (100, 1, COST)}
    fifty, hundred = sorted(claimed, key=lambda a: a.threshold)
    await database.budgets.alert_failed(fifty, error="HTTP 500 Internal Server Error", retry_at=NOW)
    await database.budgets.alert_sent(hundred, now=NOW)
    [again] = await database.budgets.claim_alerts(now=NOW, lease_until=later)  # due again; the sent one is done
    assert (again.threshold, again.attempts, again.last_error) == (50, 2, "HTTP 500 Internal Server Error")
    assert await database.budgets.claim_alerts(now=later - timedelta(seconds=1), lease_until=later) == []  # leased
    sent = [a for a in await database.budgets.alerts_since(start) if a.sent_at is not None]
    assert [a.threshold for a in sent] == [100]
