"""The sans-IO session: the handshake on both sides, request ids, ADDP polls, and the
sort of each frame after the handshake, tested without sockets."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from orsim.errors import ConnectionLost, RemoteProtocolError
from orsim.wire import (
    PROTOCOL_VERSION,
    Accepted,
    ClientHandshake,
    ErrorResponse,
    Hello,
    Incoming,
    Message,
    Ping,
    Pong,
    Push,
    Refused,
    Request,
    Response,
    ServerHandshake,
    Session,
    Welcome,
)


def test_a_server_welcomes_a_hello_of_its_version() -> None:
    """A Hello of the server's version is answered Welcome with the server's name."""
    outcome = ServerHandshake("T", "SIPServer").receive(Hello("ORS_1", "OrchestrationServer"))
    assert isinstance(outcome, Accepted)
    assert outcome.welcome == Welcome("T", "SIPServer")
    assert outcome.hello.app == "ORS_1" and outcome.keyed


def test_a_server_refuses_another_version() -> None:
    """Another protocol version is refused with a ``version`` error, not a Welcome."""
    outcome = ServerHandshake("T", "SIPServer").receive(Hello("A", "X", PROTOCOL_VERSION + 1))
    assert isinstance(outcome, Refused)
    assert (outcome.error.id, outcome.error.code) == (0, "version")


def test_a_server_needs_a_hello_first() -> None:
    """Any other first frame breaks the protocol."""
    with pytest.raises(RemoteProtocolError, match="expected Hello"):
        ServerHandshake("T", "SIPServer").receive(Ping(1))


@pytest.mark.parametrize(
    ("key", "presented", "keyed"),
    [("", "", True), ("", "any", True), ("k", "k", True), ("k", "", False), ("k", "j", False)],
)
def test_the_cluster_key_decides_keyed(key: str, presented: str, keyed: bool) -> None:
    """A client is keyed when it presents the cluster's key, or when there is none."""
    outcome = ServerHandshake("T", "X", key).receive(Hello("A", "Y", key=presented))
    assert isinstance(outcome, Accepted) and outcome.keyed is keyed


def test_a_client_takes_a_welcome_and_nothing_else() -> None:
    """The client's Hello carries what it asked; a refusal or another frame is
    ``ConnectionLost`` naming the server."""
    client = ClientHandshake.of("ORS_1", "OrchestrationServer", 2.0, "key")
    assert client.hello == Hello("ORS_1", "OrchestrationServer", PROTOCOL_VERSION, 2.0, "key")
    assert client.receive(Welcome("T", "SIPServer"), "h:1") == Welcome("T", "SIPServer")
    with pytest.raises(ConnectionLost, match="h:1 refused the handshake: old"):
        client.receive(ErrorResponse(0, "version", "old"), "h:1")
    with pytest.raises(ConnectionLost, match="h:1 answered Hello with Ping"):
        client.receive(Ping(1), "h:1")


def test_request_ids_and_polls_count_from_one() -> None:
    """Ids and poll numbers start at 1 (0 is "no request") and never repeat."""
    session = Session()
    assert [session.next_id() for _ in range(3)] == [1, 2, 3]
    assert [session.ping() for _ in range(2)] == [Ping(1), Ping(2)]
    assert Session.pong_for(Ping(7)) == Pong(7)


@pytest.mark.parametrize(
    ("message", "kind"),
    [
        (Response(1, {}), Incoming.ANSWER),
        (ErrorResponse(3, "nope", "no"), Incoming.ANSWER),
        (Request(1, "status", {}), Incoming.REQUEST),
        (Push("member", {}), Incoming.PUSH),
        (Ping(1), Incoming.PING),
        (Pong(1), Incoming.PONG),
    ],
)
def test_each_frame_after_the_handshake_is_sorted(message: Message, kind: Incoming) -> None:
    """The transition table: what each frame asks of the connection."""
    assert Session.receive(message) is kind


@pytest.mark.parametrize(
    "message", [Hello("A", "X"), Welcome("A", "X"), ErrorResponse(0, "protocol", "bad")]
)
def test_a_handshake_frame_or_a_reported_error_breaks_the_protocol(message: Message) -> None:
    """A second handshake, or the peer's report of a protocol error, ends the link."""
    with pytest.raises(RemoteProtocolError):
        Session.receive(message)
    if isinstance(message, ErrorResponse):
        with pytest.raises(RemoteProtocolError, match="peer reported protocol: bad"):
            Session.unmatched(message)


@given(
    st.one_of(
        st.builds(Response, st.integers(), st.none()),
        st.builds(ErrorResponse, st.integers(), st.text(), st.text()),
        st.builds(Ping, st.integers()),
        st.builds(Pong, st.integers()),
        st.builds(Hello, st.text(), st.text(), st.integers()),
        st.builds(Welcome, st.text(), st.text()),
    )
)
def test_any_frame_is_sorted_or_a_remote_protocol_error(message: Message) -> None:
    """Whatever the peer sends, the session sorts it or raises ``RemoteProtocolError``,
    and a server's handshake answers it, refuses it or raises that error only."""
    for step in (Session.receive, ServerHandshake("T", "X").receive):
        try:
            step(message)
        except RemoteProtocolError:
            pass
