"""majordomo_frameworks.tag / instrument: the headers real clients send to the fake gateway, and to a fake
provider called directly (which must get none)."""

from __future__ import annotations

import asyncio
import contextvars
import importlib
import importlib.util
import threading
from collections.abc import Iterator
from typing import Any

import majordomo_frameworks as mf
import pytest
from frameworks_fake_gateway import FakeGateway
from frameworks_test_env import MAJORDOMO_KEY
from majordomo_frameworks import current_tags, instrument, tag, uninstrument

HTTP_MODULES = [name for name in ("httpx", "httpx2") if importlib.util.find_spec(name) is not None]
CHAT = {"model": "gpt-4o", "messages": [{"role": "user", "content": "Hello!"}]}


@pytest.fixture(scope="module")
def provider_server() -> Iterator[FakeGateway]:
    """Stands in for a provider called directly, not through the gateway."""
    server = FakeGateway().start()
    yield server
    server.stop()


@pytest.fixture
def provider(provider_server: FakeGateway) -> FakeGateway:
    provider_server.clear()
    return provider_server


@pytest.fixture
def instrumented(gateway_env: FakeGateway) -> Iterator[FakeGateway]:
    instrument()
    yield gateway_env
    uninstrument()


@pytest.fixture(autouse=True)
def _always_uninstrument() -> Iterator[None]:
    yield
    uninstrument()


# --- tag() on its own ----------------------------------------------------------------------------------


def test_header_names() -> None:
    with tag("chat", "answer", "u-1", 42, team="search", request_kind="rerank"):
        assert current_tags() == {
            "X-Majordomo-Feature": "chat",
            "X-Majordomo-Step": "answer",
            "X-Majordomo-User-Id": "u-1",
            "X-Majordomo-Session-Id": "42",
            "X-Majordomo-Team": "search",
            "X-Majordomo-Request-Kind": "rerank",
        }
    assert current_tags() == {}


def test_nested_tags_merge_inner_wins() -> None:
    with tag(feature="outer", user_id="u-1"):
        with tag(feature="inner", step="s"):
            assert current_tags() == {
                "X-Majordomo-Feature": "inner", "X-Majordomo-User-Id": "u-1", "X-Majordomo-Step": "s"}
        assert current_tags() == {"X-Majordomo-Feature": "outer", "X-Majordomo-User-Id": "u-1"}


def test_decorator_sync_and_async() -> None:
    @tag(feature="sync-feature")
    def sync_call(extra: str) -> dict[str, str]:
        with tag(step=extra):
            return current_tags()

    @tag(user_id="async-user")
    async def async_call() -> dict[str, str]:
        await asyncio.sleep(0)
        return current_tags()

    assert sync_call("s") == {"X-Majordomo-Feature": "sync-feature", "X-Majordomo-Step": "s"}
    assert asyncio.run(async_call()) == {"X-Majordomo-User-Id": "async-user"}
    assert current_tags() == {}
    assert sync_call.__name__ == "sync_call"


async def test_async_with_and_reused_tag_object_in_concurrent_tasks() -> None:
    shared = tag(feature="shared")

    async def task(user: str) -> dict[str, str]:
        async with shared, tag(user_id=user):
            await asyncio.sleep(0.01)
            return current_tags()

    first, second = await asyncio.gather(task("u-1"), task("u-2"))
    assert first == {"X-Majordomo-Feature": "shared", "X-Majordomo-User-Id": "u-1"}
    assert second == {"X-Majordomo-Feature": "shared", "X-Majordomo-User-Id": "u-2"}


def test_decorated_async_callable_that_is_not_async_def() -> None:
    class Call:
        async def __call__(self) -> dict[str, str]:
            await asyncio.sleep(0)
            return current_tags()

    tagged = tag(user_id="u-1")(Call())
    assert asyncio.run(tagged()) == {"X-Majordomo-User-Id": "u-1"}


def test_threads_see_tags_only_with_a_copied_context() -> None:
    seen: dict[str, dict[str, str]] = {}
    with tag(user_id="u-1"):
        context = contextvars.copy_context()
        copied = threading.Thread(target=context.run, args=(lambda: seen.update(copied=current_tags()),))
        plain = threading.Thread(target=lambda: seen.update(plain=current_tags()))
        for thread in (copied, plain):
            thread.start()
            thread.join()
    assert seen == {"copied": {"X-Majordomo-User-Id": "u-1"}, "plain": {}}


@pytest.mark.parametrize("keyword", ["key", "provider", "provider_alias"])
def test_routing_and_key_headers_are_not_tags(keyword: str) -> None:
    with pytest.raises(ValueError, match="authentication or routing"):
        tag(**{keyword: "x"})


@pytest.mark.parametrize(("keyword", "value", "message"), [
    ("bad__name", "x", "cannot become a header name"),
    ("team", "a\r\nb", "line breaks"),
    ("team", "équipe", "must be ASCII"),
])
def test_bad_tags_fail_when_made(keyword: str, value: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        tag(**{keyword: value})


def test_generator_functions_are_refused() -> None:
    def generate() -> Iterator[int]:
        yield 1

    with pytest.raises(TypeError, match="generator function"):
        tag(feature="x")(generate)


def test_leaving_out_of_order_says_so() -> None:
    outer, inner = tag(feature="a"), tag(feature="b")
    outer.__enter__()
    inner.__enter__()
    with pytest.raises(RuntimeError, match="out of order"):
        outer.__exit__(None, None, None)
    inner.__exit__(None, None, None)
    outer.__exit__(None, None, None)


# --- instrument(): raw HTTP clients -------------------------------------------------------------------


@pytest.mark.parametrize("module_name", HTTP_MODULES)
def test_sync_client_gateway_gets_tags_and_key_provider_gets_nothing(
        instrumented: FakeGateway, provider: FakeGateway, module_name: str) -> None:
    http = importlib.import_module(module_name)
    with http.Client() as client, tag(feature="raw", user_id="u-1"):
        client.post(f"{instrumented.url}/v1/chat/completions", json=CHAT)
        client.post(f"{provider.url}/v1/chat/completions", json=CHAT)
    assert instrumented.last().majordomo_headers() == {
        "x-majordomo-feature": "raw", "x-majordomo-user-id": "u-1", "x-majordomo-key": MAJORDOMO_KEY}
    assert provider.last().majordomo_headers() == {}


@pytest.mark.parametrize("module_name", HTTP_MODULES)
async def test_async_client_concurrent_tasks_keep_their_tags(
        instrumented: FakeGateway, provider: FakeGateway, module_name: str) -> None:
    http = importlib.import_module(module_name)
    async with http.AsyncClient() as client:
        async def call(user: str) -> None:
            with tag(user_id=user):
                await asyncio.sleep(0.01)
                await client.post(f"{instrumented.url}/v1/chat/completions", json={**CHAT, "user": user})
                await client.post(f"{provider.url}/v1/chat/completions", json=CHAT)

        await asyncio.gather(call("u-1"), call("u-2"))
    by_user = {r.body["user"]: r.header("X-Majordomo-User-Id") for r in instrumented.snapshot()}
    assert by_user == {"u-1": "u-1", "u-2": "u-2"}
    assert [r.majordomo_headers() for r in provider.snapshot()] == [{}, {}]


def test_request_headers_win_and_existing_key_is_kept(instrumented: FakeGateway) -> None:
    http = importlib.import_module(HTTP_MODULES[-1])
    headers = {"X-Majordomo-Feature": "explicit", "X-Majordomo-Key": "mdm_sk_other"}
    with http.Client() as client, tag(feature="tagged", step="s"):
        client.post(f"{instrumented.url}/v1/chat/completions", json=CHAT, headers=headers)
    request = instrumented.last()
    assert request.majordomo_headers() == {
        "x-majordomo-feature": "explicit", "x-majordomo-key": "mdm_sk_other", "x-majordomo-step": "s"}
    assert request.header_count("X-Majordomo-Feature") == 1


async def test_aiohttp_session(instrumented: FakeGateway, provider: FakeGateway) -> None:
    aiohttp = pytest.importorskip("aiohttp")
    async with aiohttp.ClientSession(headers={"X-Majordomo-Step": "session-default"}) as session:
        with tag(feature="aio", step="tagged"):
            for url in (instrumented.url, provider.url):
                async with session.post(f"{url}/v1/chat/completions", json=CHAT) as response:
                    await response.read()
    assert instrumented.last().majordomo_headers() == {
        "x-majordomo-step": "session-default", "x-majordomo-feature": "aio", "x-majordomo-key": MAJORDOMO_KEY}
    assert provider.last().majordomo_headers() == {"x-majordomo-step": "session-default"}


def test_gateway_urls_given_to_instrument(gateway_env: FakeGateway, provider: FakeGateway) -> None:
    """Only the URLs passed are the gateway's; MAJORDOMO_GATEWAY_URL is then not consulted."""
    instrument(f"{provider.url}/")
    http = importlib.import_module(HTTP_MODULES[-1])
    with http.Client() as client, tag(feature="f"):
        client.post(f"{gateway_env.url}/v1/chat/completions", json=CHAT)
        client.post(f"{provider.url}/v1/chat/completions", json=CHAT)
    assert gateway_env.last().majordomo_headers() == {}
    assert provider.last().header("X-Majordomo-Feature") == "f"


def test_path_prefix_must_match(gateway_env: FakeGateway) -> None:
    instrument(f"{gateway_env.url}/majordomo")
    http = importlib.import_module(HTTP_MODULES[-1])
    with http.Client() as client, tag(feature="f"):
        client.post(f"{gateway_env.url}/majordomo-other/v1/chat/completions", json=CHAT)
        client.post(f"{gateway_env.url}/majordomo/v1/chat/completions", json=CHAT)
    first, second = gateway_env.snapshot()
    assert first.majordomo_headers() == {}
    assert second.header("X-Majordomo-Feature") == "f"


def test_idempotent_reversible_and_thread_safe(gateway_env: FakeGateway) -> None:
    http = importlib.import_module(HTTP_MODULES[-1])
    original = http.Client.send
    threads = [threading.Thread(target=instrument) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    instrument()
    patched = http.Client.send
    assert patched is not original and patched.__wrapped__ is original
    uninstrument()
    uninstrument()
    assert http.Client.send is original
    with http.Client() as client, tag(feature="f"):
        client.post(f"{gateway_env.url}/v1/chat/completions", json=CHAT)
    assert gateway_env.last().majordomo_headers() == {}


def test_bad_gateway_url() -> None:
    with pytest.raises(ValueError, match="gateway URLs like http://localhost:7680"):
        instrument("localhost:7680")


def test_public_names() -> None:
    assert {"tag", "instrument", "uninstrument", "current_tags", "Tag"} <= set(mf.__all__)


# --- instrument(): SDK clients ---------------------------------------------------------------------


def _openai_client(url: str, **options: Any) -> Any:
    openai = pytest.importorskip("openai")
    return openai.OpenAI(base_url=f"{url}/v1", api_key="sk-openai-test", max_retries=0, **options)


def test_openai_sdk_precedence_call_over_tag_over_client_default(
        instrumented: FakeGateway, provider: FakeGateway) -> None:
    client = _openai_client(instrumented.url, default_headers={
        "X-Majordomo-Feature": "client-default", "X-Majordomo-Step": "client-default",
        "X-Majordomo-Team": "client-default"})
    with tag(feature="tagged", step="tagged"):
        client.chat.completions.create(**CHAT, extra_headers={"X-Majordomo-Step": "call"})  # type: ignore[arg-type]
        _openai_client(provider.url).chat.completions.create(**CHAT)  # type: ignore[arg-type]
    assert instrumented.last().majordomo_headers() == {
        "x-majordomo-feature": "tagged", "x-majordomo-step": "call", "x-majordomo-team": "client-default",
        "x-majordomo-key": MAJORDOMO_KEY}
    assert provider.last().majordomo_headers() == {}


async def test_anthropic_async_sdk(instrumented: FakeGateway) -> None:
    anthropic = pytest.importorskip("anthropic")
    client = anthropic.AsyncAnthropic(base_url=instrumented.url, api_key="sk-ant-test", max_retries=0)
    with tag(feature="claude", session_id="s-1"):
        await client.messages.create(model="claude-sonnet-4-20250514", max_tokens=10,
                                     messages=[{"role": "user", "content": "Hi"}])
    assert instrumented.last().majordomo_headers() == {
        "x-majordomo-feature": "claude", "x-majordomo-session-id": "s-1", "x-majordomo-key": MAJORDOMO_KEY}


def test_no_key_in_environment_sends_none(gateway_env: FakeGateway, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MAJORDOMO_API_KEY")
    instrument()
    with tag(feature="f"):
        _openai_client(gateway_env.url).chat.completions.create(**CHAT)  # type: ignore[arg-type]
    assert gateway_env.last().majordomo_headers() == {"x-majordomo-feature": "f"}
