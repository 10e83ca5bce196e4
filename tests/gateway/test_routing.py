import pytest
from majordomo_gateway.config import ProxySettings, load_settings
from majordomo_gateway.proxy.headers import MetadataError, canonical_name, response_headers, split_headers
from majordomo_gateway.proxy.routing import Router, RoutingError, normalise_path

ENDPOINTS = load_settings(environ={
    "MAJORDOMO_PROVIDERS_OPENAI_BASE_URL": "http://openai.test",
    "MAJORDOMO_PROVIDERS_ANTHROPIC_BASE_URL": "http://anthropic.test",
    "MAJORDOMO_PROVIDERS_GEMINI_BASE_URL": "http://gemini.test",
    "MAJORDOMO_PROVIDERS_GEMINI_OPENAI_BASE_URL": "http://gemini.test/v1beta/openai",
}).providers


@pytest.fixture
def router() -> Router:
    return Router(ENDPOINTS)


def resolve(router: Router, path: str, provider: str | None = None, query: bytes = b"") -> tuple[str, str]:
    route = router.resolve(path, path.encode(), provider)
    return route.name, route.upstream_url(path.encode(), query)


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/v1/chat/completions", ("openai", "http://openai.test/v1/chat/completions")),
        ("/v1/completions", ("openai", "http://openai.test/v1/completions")),
        ("/v1/embeddings", ("openai", "http://openai.test/v1/embeddings")),
        ("/v1/responses", ("openai", "http://openai.test/v1/responses")),
        ("/v1/models", ("openai", "http://openai.test/v1/models")),
        ("/v1/messages", ("anthropic", "http://anthropic.test/v1/messages")),
        ("/v1/messages/count_tokens", ("anthropic", "http://anthropic.test/v1/messages/count_tokens")),
        ("/v1beta/models/gemini-2.0-flash:generateContent",
         ("gemini", "http://gemini.test/v1beta/models/gemini-2.0-flash:generateContent")),
        ("/v1beta/models/gemini-2.0-flash:streamGenerateContent",
         ("gemini", "http://gemini.test/v1beta/models/gemini-2.0-flash:streamGenerateContent")),
    ],
)
def test_routes_by_path(router: Router, path: str, expected: tuple[str, str]) -> None:
    assert resolve(router, path) == expected


def test_query_is_kept(router: Router) -> None:
    assert resolve(router, "/v1beta/models/g:streamGenerateContent", query=b"alt=sse&key=k")[1] == (
        "http://gemini.test/v1beta/models/g:streamGenerateContent?alt=sse&key=k"
    )


@pytest.mark.parametrize("header", ["gemini-openai", "Gemini-OpenAI", "GEMINI-OPENAI"])
def test_gemini_openai_header_strips_v1(router: Router, header: str) -> None:
    assert resolve(router, "/v1/chat/completions", header) == (
        "gemini-openai", "http://gemini.test/v1beta/openai/chat/completions"
    )


def test_provider_header_wins_over_path(router: Router) -> None:
    assert resolve(router, "/v1/messages", "openai") == ("openai", "http://openai.test/v1/messages")


def test_unknown_provider_lists_the_supported_ones(router: Router) -> None:
    with pytest.raises(RoutingError) as info:
        resolve(router, "/v1/chat/completions", "bedrock")
    assert "openai, anthropic, gemini, gemini-openai" in info.value.message


def test_unknown_path_is_refused_not_guessed(router: Router) -> None:
    with pytest.raises(RoutingError) as info:
        resolve(router, "/api/generate")
    assert info.value.code == "unknown_route"
    assert "/v1/messages" in info.value.message


@pytest.mark.parametrize(
    "raw_path",
    [b"//evil.com/v1/chat/completions", b"/v1/../../etc", b"/v1/%2e%2e/x", b"/v1/%2E%2e/x", b"/./v1/x",
     b"http://evil.com/v1/chat/completions", b"/v1\\..\\x", b"/v1/a%2fb", b"/v1/\x00x"],
)
def test_paths_that_could_change_the_upstream_are_refused(router: Router, raw_path: bytes) -> None:
    with pytest.raises(RoutingError):
        router.resolve(raw_path.decode("latin-1"), raw_path, None)


@pytest.mark.parametrize(
    ("raw_path", "normalised"),
    [
        (b"/v1/chat/completion%73", b"/v1/chat/completions"),
        (b"/v1/mess%61ges", b"/v1/messages"),
        (b"/v1/embedding%73", b"/v1/embeddings"),
        (b"/%76%31/%63hat/completions", b"/v1/chat/completions"),
        (b"/v1/chat%2Dx%5f%7e%2E", b"/v1/chat-x_~."),
        # Escapes of reserved and other characters mean something: kept as the client wrote them.
        (b"/v1beta/models/gemini-2.0-flash%3AgenerateContent", b"/v1beta/models/gemini-2.0-flash%3AgenerateContent"),
        (b"/v1/a%2Fb%20c%25%C3%A9", b"/v1/a%2Fb%20c%25%C3%A9"),
        (b"/v1/x%7", b"/v1/x%7"),
        (b"/v1/chat/completions", b"/v1/chat/completions"),
    ],
)
def test_percent_encoded_unreserved_characters_are_decoded(raw_path: bytes, normalised: bytes) -> None:
    assert normalise_path(raw_path) == normalised


def test_encoded_dot_segments_are_refused_once_decoded(router: Router) -> None:
    raw_path = normalise_path(b"/v1/%2e%2E/x")
    assert raw_path == b"/v1/../x"
    with pytest.raises(RoutingError):
        router.resolve(raw_path.decode(), raw_path, None)


def test_provider_header_cannot_choose_a_host(router: Router) -> None:
    with pytest.raises(RoutingError):
        resolve(router, "/v1/chat/completions", "http://evil.com")


def test_metadata_names_are_canonical_and_secrets_split_out() -> None:
    headers = split_headers(
        [
            (b"x-majordomo-key", b"mdm_sk_abc"),
            (b"x-majordomo-user-id", b"u1"),
            (b"x-majordomo-feature", b"chat"),
            (b"x-majordomo-provider", b"openai"),
            (b"x-majordomo-provider-alias", b"team-a"),
            (b"x-majordomo-custom-thing", b"v"),
            (b"authorization", b"Bearer sk-1"),
            (b"connection", b"keep-alive, x-drop"),
            (b"x-drop", b"1"),
            (b"host", b"localhost"),
            (b"accept-encoding", b"gzip, br, zstd"),
        ],
        ProxySettings(max_metadata_headers=8, max_metadata_value_bytes=100),
    )
    assert headers.majordomo_key == "mdm_sk_abc"
    assert headers.provider == "openai"
    assert headers.provider_alias == "team-a"
    assert headers.metadata == {"User-Id": "u1", "Feature": "chat", "Custom-Thing": "v"}
    assert headers.forward == [("authorization", "Bearer sk-1"), ("accept-encoding", "gzip")]


def test_canonical_name() -> None:
    assert canonical_name("user-id") == "User-Id"
    assert canonical_name("SESSION-ID") == "Session-Id"


def test_metadata_limits() -> None:
    limits = ProxySettings(max_metadata_headers=8, max_metadata_value_bytes=100)
    with pytest.raises(MetadataError, match="X-Majordomo-Feature"):
        split_headers([(b"x-majordomo-feature", b"x" * 101)], limits)
    with pytest.raises(MetadataError, match="more than 2"):
        split_headers([(f"x-majordomo-m{i}".encode(), b"v") for i in range(3)],
                      ProxySettings(max_metadata_headers=2, max_metadata_value_bytes=100))


def test_metadata_names_total_and_the_alias_are_bounded() -> None:
    """Issue 18, point 5: before, only values were bounded (a 6.8 MB raw_metadata and a 4 MiB
    alias were stored)."""
    limits = ProxySettings(max_metadata_headers=8, max_metadata_value_bytes=100, max_metadata_name_bytes=10,
                           max_metadata_total_bytes=50, max_provider_alias_bytes=20)
    with pytest.raises(MetadataError, match=r"name X-Majordomo-n{11}\.\.\. is 11 bytes .*the limit is 10 "
                                            r"\(proxy.max_metadata_name_bytes\)"):
        split_headers([(b"x-majordomo-" + b"n" * 11, b"v")], limits)
    with pytest.raises(MetadataError, match=r"the limit is 50 \(proxy.max_metadata_total_bytes\)"):
        split_headers([(f"x-majordomo-m{i}".encode(), b"v" * 20) for i in range(3)], limits)  # 3 x 22
    with pytest.raises(MetadataError, match=r"Provider-Alias is 21 bytes; the limit is 20 "
                                            r"\(proxy.max_provider_alias_bytes\)"):
        split_headers([(b"x-majordomo-provider-alias", b"a" * 21)], limits)
    at_the_limits = split_headers([(b"x-majordomo-" + b"n" * 10, b"v" * 14), (b"x-majordomo-m2", b"v" * 24),
                                   (b"x-majordomo-provider-alias", b"a" * 20)], limits)
    assert len(at_the_limits.metadata) == 2 and at_the_limits.provider_alias == "a" * 20


def test_underscore_spellings_of_our_headers_are_neither_forwarded_nor_ours() -> None:
    headers = split_headers([(b"x_majordomo_key", b"mdm_sk_secret"), (b"x-majordomo_feature", b"f"),
                             (b"x_other", b"kept")], ProxySettings())
    assert headers.forward == [("x_other", "kept")]
    assert headers.majordomo_key is None and headers.metadata == {}


def test_the_response_request_id_is_the_gateways_alone() -> None:
    out = response_headers([(b"X-Majordomo-Request-Id", b"upstream"), (b"content-type", b"a")], b"ours")
    assert out == [(b"content-type", b"a"), (b"x-majordomo-request-id", b"ours")]
