"""Errors the gateway answers itself reach each official SDK in its provider's own shape, so the SDK
raises its usual exception with our message and our code (providers/*.py: ``error_body``)."""

from __future__ import annotations

import anthropic
import openai
import pytest
from google import genai
from google.genai import errors as genai_errors
from google.genai import types as genai_types

from tests.support import GatewayProcess

MESSAGES = [{"role": "user", "content": "Hi"}]


async def test_openai_sdk_gets_openai_error_objects(gateway: GatewayProcess) -> None:
    client = openai.AsyncOpenAI(base_url=gateway.url + "/v1", api_key="sk-test-0123456789", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as caught:
        await client.chat.completions.create(model="gpt-4.1", messages=MESSAGES)  # type: ignore[arg-type]
    error = caught.value
    assert error.code == "missing_majordomo_key"
    assert "Missing X-Majordomo-Key" in error.message
    assert set(error.response.json()) == {"error"}
    assert error.response.json()["error"]["type"] == "authentication_error"


async def test_anthropic_sdk_gets_anthropic_error_objects(gateway: GatewayProcess) -> None:
    client = anthropic.AsyncAnthropic(base_url=gateway.url, api_key="sk-ant-test-0123456789", max_retries=0,
                                      default_headers={"X-Majordomo-Key": "mdm_sk_not_a_key"})
    with pytest.raises(anthropic.AuthenticationError) as caught:
        await client.messages.create(model="claude-sonnet-4-20250514", max_tokens=16,
                                     messages=MESSAGES)  # type: ignore[arg-type]
    body = caught.value.response.json()
    assert body["type"] == "error"
    assert body["error"]["type"] == "authentication_error"
    assert body["error"]["code"] == "invalid_majordomo_key"
    assert "no such Majordomo API key" in caught.value.message


async def test_gemini_sdk_gets_google_error_objects(gateway: GatewayProcess) -> None:
    client = genai.Client(api_key="AIza-test-0123456789", http_options=genai_types.HttpOptions(
        base_url=gateway.url, headers={"X-Majordomo-Feature": "x" * 5000, "X-Majordomo-Key": gateway.key}))
    with pytest.raises(genai_errors.ClientError) as caught:
        await client.aio.models.generate_content(model="gemini-2.5-flash", contents="Hello!")
    error = caught.value
    assert (error.code, error.status) == (400, "INVALID_ARGUMENT")
    assert error.message is not None and "X-Majordomo-Feature" in error.message
    [detail] = error.details["error"]["details"]
    assert (detail["reason"], detail["domain"]) == ("invalid_metadata", "majordomo")


async def test_gemini_sdk_without_majordomo_key(gateway: GatewayProcess) -> None:
    client = genai.Client(api_key="AIza-test-0123456789", http_options=genai_types.HttpOptions(base_url=gateway.url))
    with pytest.raises(genai_errors.ClientError) as caught:
        await client.aio.models.generate_content(model="gemini-2.5-flash", contents="Hello!")
    assert (caught.value.code, caught.value.status) == (401, "UNAUTHENTICATED")


async def test_translation_route_answers_in_the_clients_shape(gateway: GatewayProcess) -> None:
    # anthropic-openai speaks OpenAI's format to the client, so its errors are OpenAI's too.
    client = openai.AsyncOpenAI(base_url=gateway.url + "/v1", api_key="sk-ant-test-0123456789", max_retries=0,
                                default_headers={"X-Majordomo-Provider": "anthropic-openai"})
    with pytest.raises(openai.AuthenticationError) as caught:
        await client.chat.completions.create(model="claude-sonnet-4-20250514", messages=MESSAGES)  # type: ignore[arg-type]
    assert caught.value.code == "missing_majordomo_key"
    assert set(caught.value.response.json()) == {"error"}


async def test_unknown_route_still_gets_an_error_every_sdk_reads(gateway: GatewayProcess) -> None:
    client = openai.AsyncOpenAI(base_url=gateway.url + "/nowhere", api_key="sk-test-0123456789", max_retries=0,
                                default_headers={"X-Majordomo-Key": gateway.key})
    with pytest.raises(openai.BadRequestError) as caught:
        await client.chat.completions.create(model="gpt-4.1", messages=MESSAGES)  # type: ignore[arg-type]
    assert caught.value.code == "unknown_route"
    assert "supported paths" in caught.value.message


async def test_gemini_sdk_through_the_gateway_is_metered(gateway: GatewayProcess) -> None:
    # The happy path with the same client, plain and streamed, so the error tests above are not
    # the only proof that google-genai talks to the gateway at all.
    client = genai.Client(api_key="AIza-test-0123456789", http_options=genai_types.HttpOptions(
        base_url=gateway.url, headers={"X-Majordomo-Key": gateway.key, "X-Majordomo-Feature": "genai-sdk"}))
    reply = await client.aio.models.generate_content(model="gemini-2.5-flash", contents="Hello!")
    assert reply.usage_metadata is not None and reply.usage_metadata.prompt_token_count
    request_id = reply.sdk_http_response.headers["x-majordomo-request-id"]  # type: ignore[union-attr,index]
    row = await gateway.row(request_id)
    assert (row["provider"], row["model"], row["streamed"]) == ("gemini", "gemini-2.5-flash", False)
    assert row["input_tokens"] == reply.usage_metadata.prompt_token_count
    assert row["total_cost"] is not None

    chunks = [chunk async for chunk in await client.aio.models.generate_content_stream(
        model="gemini-2.5-flash", contents="Hello!")]
    last = chunks[-1].usage_metadata
    assert last is not None and last.candidates_token_count
    stream_id = chunks[0].sdk_http_response.headers["x-majordomo-request-id"]  # type: ignore[union-attr,index]
    row = await gateway.row(stream_id)
    assert (row["streamed"], row["aborted"], row["output_tokens"]) == (
        True, False, last.candidates_token_count + (last.thoughts_token_count or 0))
