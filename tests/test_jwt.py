"""The built-in JWT check (`jwt_key`): tokens signed by the test with PyJWT,
sent the four ways a client can (query, cookie, Authorization header,
subprotocol), refused for each reason with HTTP 401, a `topics` claim that
narrows the query, expiry closing the connection with 4001, and `refresh`.

Real hubs, real `websockets` clients; RSA and EC keys made by the test.
"""

from __future__ import annotations

import time

import pytest

jwt = pytest.importorskip("jwt", reason="PyJWT not installed (requirements-dev.txt)")
serialization = pytest.importorskip("cryptography.hazmat.primitives.serialization")
asymmetric = pytest.importorskip("cryptography.hazmat.primitives.asymmetric")

import websockets  # noqa: E402

from helpers import connect_client, open_ws, wait_until  # noqa: E402

SECRET = "a-secret-for-tests-only-" * 3  # 72 bytes: HS512-sized, no PyJWT warning
OTHER = "another-secret-not-the-hubs" * 3


def token(claims: dict | None = None, key=SECRET, algorithm: str = "HS256",
          ttl: float = 600) -> str:
    body = {"sub": "u1", "exp": int(time.time() + ttl)}
    body.update(claims or {})
    return jwt.encode(body, key, algorithm=algorithm)


def refused_status(hub, **kwargs) -> int:
    with pytest.raises(websockets.InvalidStatus) as info:
        open_ws(hub.port, **kwargs)
    return info.value.response.status_code


def rejected(hub) -> dict:
    return {k: v for k, v in hub.stats()["handshakes_rejected"].items()
            if k.startswith("token_") and v}


def test_a_valid_token_is_accepted_from_each_place(make_hub):
    hub = make_hub(jwt_key=SECRET, jwt_cookie="session")
    good = token()
    ways = [
        dict(query=f"topics=t&token={good}"),
        dict(topics=["t"], additional_headers={"Authorization": f"Bearer {good}"}),
        dict(topics=["t"], additional_headers={"Cookie": f"session={good}"}),
        dict(topics=["t"], subprotocols=["wshub", f"bearer.{good}"]),
    ]
    clients = [connect_client(hub, **way) for way in ways]
    for client in clients:
        assert client.ack["topics"] == ["t"]
    # The hub selects the subprotocol the browser offered beside its token.
    assert clients[3].ws.subprotocol == "wshub"
    hub.broadcast("t", {"n": 1})
    for client in clients:
        assert client.recv_messages(1)[0]["data"] == {"n": 1}
        client.close()
    assert rejected(hub) == {}


@pytest.mark.parametrize("make, reason", [
    (lambda: None, "token_missing"),
    (lambda: "not-a-jwt", "token_malformed"),
    (lambda: token(key=OTHER), "token_signature"),
    (lambda: token(algorithm="HS384"), "token_algorithm"),
    (lambda: jwt.encode({"exp": int(time.time()) + 600}, None, algorithm="none"),
     "token_malformed"),
    (lambda: token(ttl=-30), "token_expired"),
    (lambda: token({"nbf": int(time.time()) + 300}), "token_not_yet_valid"),
    (lambda: jwt.encode({"sub": "u1"}, SECRET, algorithm="HS256"), "token_malformed"),
    (lambda: token({"topics": "t"}), "token_malformed"),
])
def test_bad_tokens_get_401_counted_by_reason(make_hub, make, reason):
    hub = make_hub(jwt_key=SECRET)
    value = make()
    query = "topics=t" if value is None else f"topics=t&token={value}"
    assert refused_status(hub, query=query) == 401
    assert rejected(hub) == {reason: 1}
    assert hub.stats()["connections"] == 0


def test_audience_and_issuer_when_configured(make_hub):
    hub = make_hub(jwt_key=SECRET, jwt_audience="hub", jwt_issuer="app")
    ok = token({"aud": "hub", "iss": "app"})
    connect_client(hub, query=f"topics=t&token={ok}").close()
    for claims in ({"aud": "other", "iss": "app"}, {"aud": "hub", "iss": "other"}):
        assert refused_status(hub, query=f"topics=t&token={token(claims)}") == 401
    assert rejected(hub) == {"token_claims": 2}


def test_a_topics_claim_narrower_than_the_query_rejects_the_rest(make_hub):
    hub = make_hub(jwt_key=SECRET)
    t = token({"topics": ["odds"]})
    client = connect_client(hub, query=f"topics=odds,news&token={t}")
    assert client.ack["topics"] == ["odds"]
    assert client.ack["reasons"] == {"news": "not_allowed"}
    answer = client.subscribe(["news"])
    assert answer["topics"] == ["odds"] and answer["reasons"] == {"news": "not_allowed"}
    client.close()


def test_an_expired_token_closes_the_connection_with_4001(make_hub):
    hub = make_hub(jwt_key=SECRET)
    client = connect_client(hub, query=f"topics=t&token={token(ttl=1.5)}")
    closed = client.expect_closed(timeout=5)
    assert closed.rcvd.code == 4001 and closed.rcvd.reason == "token expired"
    wait_until(lambda: hub.stats()["token_expired_closes"] == 1)


def test_a_refreshed_token_keeps_the_connection_and_applies_its_topics(make_hub):
    hub = make_hub(jwt_key=SECRET)
    client = connect_client(hub, query=f"topics=a,b&token={token(ttl=1.5)}")
    newer = token({"topics": ["a"]}, ttl=600)
    answer = client.request({"type": "refresh", "token": newer})
    assert answer["type"] == "refreshed", answer
    assert answer["exp"] == jwt.decode(newer, SECRET, algorithms=["HS256"])["exp"]
    # Its topics claim applies at once: "b" is no longer subscribed.
    assert answer["topics"] == ["a"]
    assert hub.stats()["topics"] == {"a": 1}
    # Still open well past the first token's expiry: no close (nor any
    # frame) comes for 3 s, and it still answers.
    with pytest.raises(AssertionError, match="no frame received"):
        client.recv_json(timeout=3)
    client.ping()
    hub.broadcast("a", 1)
    hub.broadcast("b", 2)
    assert client.recv_messages(1)[0]["topic"] == "a"
    client.ping()
    assert hub.stats()["tokens_refreshed"] == 1
    client.close()


def test_a_refused_refresh_changes_nothing(make_hub):
    hub = make_hub(jwt_key=SECRET)
    client = connect_client(hub, query=f"topics=t&token={token()}")
    for bad, fragment in [
        (token(key=OTHER), "bad signature"),
        (token({"sub": "someone-else"}), "sub"),
        (token(ttl=-30), "expired"),
    ]:
        answer = client.request({"type": "refresh", "token": bad})
        assert answer["type"] == "error" and answer["error"] == "invalid_token", answer
        assert fragment in answer["message"]
    answer = client.request({"type": "refresh"})
    assert answer["error"] == "invalid_token"
    client.ping()
    assert hub.stats()["tokens_refreshed"] == 0
    client.close()
    # A hub that checks no tokens says so.
    plain = make_hub()
    other = connect_client(plain, ["t"])
    answer = other.request({"type": "refresh", "token": token()})
    assert answer["error"] == "invalid_token" and "jwt_key" in answer["message"]
    other.close()


@pytest.mark.parametrize("family", ["RS256", "ES256"])
def test_public_key_algorithms(make_hub, family):
    if family == "RS256":
        private = asymmetric.rsa.generate_private_key(public_exponent=65537, key_size=2048)
    else:
        private = asymmetric.ec.generate_private_key(asymmetric.ec.SECP256R1())
    public = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    hub = make_hub(jwt_key=public, jwt_algorithms=family)
    connect_client(hub, query=f"topics=t&token={token(key=private, algorithm=family)}").close()
    # An HMAC token "signed" with the public key itself is refused: the
    # key's family decides the algorithms (no algorithm confusion).
    confused = jwt.encode({"exp": int(time.time()) + 60}, OTHER, algorithm="HS256")
    assert refused_status(hub, query=f"topics=t&token={confused}") == 401
    assert rejected(hub) == {"token_algorithm": 1}


@pytest.mark.parametrize("options, fragment", [
    (dict(jwt_algorithms="HS256,RS256"), "one family"),
    (dict(jwt_algorithms="none"), "unknown algorithm"),
    (dict(jwt_algorithms="RS256"), "PEM"),
    (dict(jwt_key=""), "empty"),
    (dict(jwt_query=""), "jwt_query"),
    (dict(jwt_leeway=-1.0), "jwt_leeway"),
])
def test_bad_jwt_options_are_value_errors(make_hub, options, fragment):
    with pytest.raises(ValueError, match=fragment):
        make_hub(**{"jwt_key": SECRET, **options})
    with pytest.raises(TypeError, match="jwt_key"):
        make_hub(jwt_key=12345)
