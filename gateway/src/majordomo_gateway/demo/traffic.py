"""A week of an imaginary company's LLM traffic: planned from a seed, then sent through the gateway.

The plan is what a dashboard should make visible: a few features cost most of the money, a few
users account for most of the calls, weekdays are busier than weekends and afternoons busier than
nights, some calls fail or are abandoned, one model has no price, and on one day an agent loop
runs away.  Each workflow run is a session; its calls are its steps, in order, on the models a
team would pick for them.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import orjson

from majordomo_gateway.clock import utc_now
from majordomo_gateway.demo.simulator import OUTCOME_HEADER, USAGE_HEADER, DemoUsage
from majordomo_gateway.proxy.upstream import Origin, UpstreamClient, UpstreamError

__all__ = ["FEATURES", "DriveResult", "PlannedCall", "ReplayClock", "drive", "plan_week"]


@dataclass(frozen=True, slots=True)
class Step:
    name: str
    provider: str  # openai | anthropic | gemini
    model: str
    #: typical input and output tokens (drawn around these)
    input_tokens: int
    output_tokens: int
    stream: bool = False
    embedding: bool = False
    #: share of the input read from the provider's prompt cache
    cached_share: float = 0.0
    reasoning: bool = False


@dataclass(frozen=True, slots=True)
class Feature:
    name: str
    team: str
    key: str
    #: relative number of runs
    weight: float
    steps: tuple[Step, ...]


FEATURES: tuple[Feature, ...] = (
    Feature("support-chat", "support", "web-app", 30, (
        Step("classify-intent", "openai", "gpt-4o-mini", 600, 20),
        Step("retrieve", "openai", "text-embedding-3-small", 200, 0, embedding=True),
        Step("answer", "anthropic", "claude-sonnet-4-5", 3500, 450, stream=True, cached_share=0.6),
    )),
    Feature("search", "search", "web-app", 25, (
        Step("rewrite-query", "gemini", "gemini-2.5-flash", 300, 40),
        Step("embed-query", "openai", "text-embedding-3-small", 60, 0, embedding=True),
        Step("rerank", "openai", "gpt-4o-mini", 2500, 60),
    )),
    Feature("doc-summarize", "docs", "batch-jobs", 12, (
        Step("summarize", "gemini", "gemini-2.5-flash", 12000, 700, stream=True),
        Step("polish", "openai", "gpt-4o", 1500, 500),
    )),
    Feature("code-review", "platform", "dev-tools", 8, (
        Step("read-diff", "anthropic", "claude-sonnet-4-5", 9000, 300, cached_share=0.8),
        Step("suggest-fixes", "openai", "o3-mini", 4000, 900, reasoning=True),
    )),
    Feature("sales-email", "growth", "web-app", 10, (
        Step("draft", "openai", "gpt-4o-mini", 800, 350, stream=True),
        Step("tone-check", "anthropic", "claude-haiku-4-5", 900, 60),
    )),
    Feature("research-agent", "research", "batch-jobs", 4, (
        Step("plan", "openai", "o3-mini", 1200, 600, reasoning=True),
        Step("browse", "gemini", "gemini-2.5-pro", 20000, 1200, stream=True, reasoning=True),
        Step("browse", "gemini", "gemini-2.5-pro", 24000, 1200, stream=True, reasoning=True),
        Step("write-report", "anthropic", "claude-opus-4-1", 15000, 2000, stream=True),
    )),
    # An in-house model with no price in the catalog: its rows are flagged unpriced, never $0.
    Feature("legacy-bot", "support", "dev-tools", 3, (
        Step("reply", "openai", "acme-support-llm-v1", 700, 200),
    )),
)
KEY_NAMES: tuple[str, ...] = tuple(dict.fromkeys(f.key for f in FEATURES))
USERS = 300
#: per call: chance of each provider refusal, and of a streamed answer abandoned by its client
FAILURES: tuple[tuple[str, float], ...] = (("rate_limited", 0.015), ("server_error", 0.005), ("bad_request", 0.003))
ABANDON_SHARE = 0.03


@dataclass(frozen=True, slots=True)
class PlannedCall:
    at: datetime
    key: str
    step: Step
    usage: DemoUsage
    outcome: str  # ok, rate_limited, server_error, bad_request, abandon
    metadata: tuple[tuple[str, str], ...]


def plan_week(requests: int, days: int, end: datetime, seed: int) -> list[PlannedCall]:
    """About ``requests`` calls over the ``days`` days before ``end``, oldest first."""
    rng = random.Random(seed)
    start = end - timedelta(days=days)
    users = [f"u-{n:04d}" for n in range(1, USERS + 1)]
    user_weights = [1 / (rank ** 1.1) for rank in range(1, USERS + 1)]  # a few heavy users
    feature_weights = [f.weight for f in FEATURES]
    runaway = _runaway_day(start, days, rng)
    calls: list[PlannedCall] = []
    run = 0
    while len(calls) < requests:
        moment = _busy_moment(start, days, rng)
        feature = rng.choices(FEATURES, feature_weights)[0]
        if runaway is not None and moment.date() == runaway.date() and rng.random() < 0.35:
            # The runaway: research-agent loops on browse for one afternoon.
            feature = FEATURES[5]
        user = rng.choices(users, user_weights)[0]
        run += 1
        session = f"s-{seed:x}-{run:06d}"
        steps = list(feature.steps)
        if feature.name == "research-agent" and runaway is not None and moment.date() == runaway.date():
            steps = [steps[0], *[steps[1]] * rng.randint(4, 9), steps[-1]]
        for position, step in enumerate(steps):
            at = moment + timedelta(seconds=position * rng.uniform(1.5, 12.0))
            if at >= end:
                break
            calls.append(PlannedCall(at, feature.key, step, _usage(step, rng), _outcome(step, rng), (
                ("Feature", feature.name), ("Step", step.name), ("User-Id", user), ("Session-Id", session),
                ("Team", feature.team), ("Environment", "production" if rng.random() < 0.9 else "staging"),
            )))
    calls.sort(key=lambda c: c.at)
    return calls[:requests]


def _busy_moment(start: datetime, days: int, rng: random.Random) -> datetime:
    """A moment drawn from office-hours traffic: weekdays x3 weekends, a peak at 15:00 UTC, a slow
    rise over the week (a product that is growing)."""
    while True:
        offset = rng.uniform(0, days * 86400)
        moment = start + timedelta(seconds=offset)
        hour = moment.hour + moment.minute / 60
        daily = 0.15 + math.exp(-((hour - 15) ** 2) / 18)
        weekly = 1.0 if moment.weekday() < 5 else 0.33
        growth = 0.8 + 0.4 * offset / (days * 86400)
        if rng.random() < daily * weekly * growth / 1.6:
            return moment


def _runaway_day(start: datetime, days: int, rng: random.Random) -> datetime | None:
    return start + timedelta(days=rng.randint(days // 2, days - 1)) if days >= 3 else None


def _usage(step: Step, rng: random.Random) -> DemoUsage:
    def around(typical: int) -> int:
        return max(1, int(rng.lognormvariate(math.log(typical), 0.45))) if typical else 0

    tokens_in = around(step.input_tokens)
    tokens_out = 0 if step.embedding else around(step.output_tokens)
    cached = int(tokens_in * step.cached_share * rng.uniform(0.6, 1.0)) if step.cached_share else 0
    writes_cache = step.provider == "anthropic" and step.cached_share and rng.random() < 0.15
    cache_write = int(tokens_in * 0.3) if writes_cache else 0
    # Reasoning tokens are part of the output tokens (OpenAI counts them in completion_tokens).
    reasoning = int(tokens_out * rng.uniform(0.3, 0.8)) if step.reasoning else 0
    return DemoUsage(tokens_in, tokens_out, cached, cache_write, reasoning)


def _outcome(step: Step, rng: random.Random) -> str:
    draw = rng.random()
    for outcome, share in FAILURES:
        if draw < share:
            return outcome
        draw -= share
    if step.stream and rng.random() < ABANDON_SHARE:
        return "abandon"
    return "ok"


# -- sending -------------------------------------------------------------------------------------

class ReplayClock:
    """The gateway's clock during a replay: plan time runs ``factor`` times faster than real time
    from the moment drive() starts, so each row is stamped about when its call was planned.  Before
    and after the replay (plan time never passes the present) it is the real clock."""

    def __init__(self) -> None:
        self._first: datetime | None = None
        self._began = 0.0
        self._factor = 1.0

    def start(self, first: datetime, factor: float) -> None:
        self._first, self._began, self._factor = first, time.perf_counter(), factor

    def stop(self) -> None:
        """Back to the real clock.  Needed because plan time need not reach the present when the replay
        ends (a short plan ends days ago), and what happens next (a dashboard login) must be stamped now."""
        self._first = None

    def __call__(self) -> datetime:
        now = utc_now()
        if self._first is None:
            return now
        moment = self._first + timedelta(seconds=(time.perf_counter() - self._began) * self._factor)
        return min(moment, now)


@dataclass(slots=True)
class DriveResult:
    sent: int = 0
    answered: dict[int, int] | None = None
    abandoned: int = 0
    transport_errors: int = 0
    seconds: float = 0.0


def request_for(call: PlannedCall, majordomo_key: str) -> tuple[str, bytes, list[tuple[str, str]]]:
    """The path, body and headers an SDK would send for this call, with the demo's usage header."""
    step = call.step
    headers = [("Content-Type", "application/json"), ("X-Majordomo-Key", majordomo_key),
               (USAGE_HEADER, call.usage.header())]
    if call.outcome not in ("ok", "abandon"):
        headers.append((OUTCOME_HEADER, call.outcome))
    headers += [(f"X-Majordomo-{name}", value) for name, value in call.metadata]
    prompt = [{"role": "user", "content": f"{call.metadata[0][1]}: {call.metadata[1][1]}"}]
    if step.provider == "anthropic":
        headers += [("x-api-key", "sk-ant-demo"), ("anthropic-version", "2023-06-01")]
        body: dict[str, object] = {"model": step.model, "max_tokens": 4096, "messages": prompt, "stream": step.stream}
        return "/v1/messages", orjson.dumps(body), headers
    if step.provider == "gemini":
        headers.append(("x-goog-api-key", "demo-gemini-key"))
        action = "streamGenerateContent?alt=sse" if step.stream else "generateContent"
        body = {"contents": [{"role": "user", "parts": [{"text": prompt[0]["content"]}]}]}
        return f"/v1beta/models/{step.model}:{action}", orjson.dumps(body), headers
    headers.append(("Authorization", "Bearer sk-demo-openai"))
    if step.embedding:
        return "/v1/embeddings", orjson.dumps({"model": step.model, "input": prompt[0]["content"]}), headers
    body = {"model": step.model, "messages": prompt}
    if step.stream:
        body["stream"] = True
    return "/v1/chat/completions", orjson.dumps(body), headers


async def drive(calls: Sequence[PlannedCall], gateway_url: str, keys: dict[str, str], *, seconds: float,
                clock: ReplayClock | None = None, concurrency: int = 512,
                on_progress: Callable[[int], None] | None = None) -> DriveResult:
    """Send ``calls`` to the gateway, each at its place in a ``seconds``-long replay of the plan."""
    origin = Origin.from_url(gateway_url)
    client = UpstreamClient(connect_timeout=5, read_timeout=60)
    slots = asyncio.Semaphore(concurrency)
    result = DriveResult(answered={})
    answered = result.answered
    assert answered is not None
    began = time.perf_counter()
    first, span = (calls[0].at, (calls[-1].at - calls[0].at).total_seconds() or 1.0) if calls else (None, 1.0)
    if clock is not None and first is not None:
        clock.start(first, span / seconds)

    async def one(call: PlannedCall) -> None:
        path, body, headers = request_for(call, keys[call.key])
        try:
            async with slots:
                response = await client.request(origin, "POST", path.encode(), headers, body)
                async with response:
                    if call.outcome == "abandon":
                        await response.readany()  # a first piece of the answer, then the client leaves
                        result.abandoned += 1
                    else:
                        await response.read()
                    answered[response.status] = answered.get(response.status, 0) + 1
        except UpstreamError:
            result.transport_errors += 1
        result.sent += 1
        if on_progress is not None:
            on_progress(result.sent)

    tasks = []
    for call in calls:
        assert first is not None
        due = began + (call.at - first).total_seconds() / span * seconds
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(call)))
    await asyncio.gather(*tasks)
    await client.close()
    if clock is not None:
        clock.stop()
    result.seconds = time.perf_counter() - began
    return result
