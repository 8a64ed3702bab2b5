"""The Python client against a live gateway: every call, as the README shows it."""
import uuid

import pytest

from realtime_client import Realtime, RealtimeError, realtime
from conftest import KEY, WebSocket


def unique(prefix):
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def test_token_issue_grants_the_listed_channels_and_names_the_endpoint():
    t = realtime.token.issue(user_id="u1", channels=["chat:*"], ttl_seconds=600)
    assert t["token"].count(".") == 2
    assert t["user_id"] == "u1"
    assert t["endpoint"].startswith("ws://") and t["endpoint"].endswith("/v1/realtime/ws")
    assert set(t["capabilities"]["chat:*"]) == {"subscribe", "presence", "history"}


def test_channel_create_is_idempotent_and_refuses_conflicting_settings():
    name = unique("orders")
    created = realtime.channel.create(name, type="public", history_size=50)
    assert created["name"] == name and created["type"] == "public" and created["history_size"] == 50
    assert realtime.channel.create(name)["history_size"] == 50
    with pytest.raises(RealtimeError) as e:
        realtime.channel.create(name, type="private")
    assert e.value.code == 40900 and e.value.status == 409
    assert realtime.channel.get(name)["subscribers"] == 0
    assert name in [c["name"] for c in realtime.channel.list(limit=1000)["channels"]]
    realtime.channel.delete(name)


def test_publish_with_an_idempotency_key_publishes_once():
    channel = unique("pay")
    first = realtime.publish(channel, "paid", {"amount": 5}, idempotency_key="order-1")
    again = realtime.publish(channel, "paid", {"amount": 5}, idempotency_key="order-1")
    assert first["status"] == "published" and again["status"] == "duplicate"
    assert again["message_id"] == first["message_id"]
    assert [m["data"] for m in realtime.history(channel)["messages"]] == [{"amount": 5}]


def test_batch_results_come_in_order_and_a_bad_item_fails_alone():
    channel = unique("batch")
    results = realtime.publish_batch([
        {"channel": channel, "event": "e", "data": 1},
        {"channel": "bad name with spaces", "event": "e", "data": 2},
        {"channel": channel, "event": "e", "data": 3},
    ])
    assert results[0]["status"] == "published" and results[2]["status"] == "published"
    assert results[1]["error"]["code"] == 40010  # invalid channel name
    assert [m["data"] for m in realtime.history(channel, direction="forwards")["messages"]] == [1, 3]


def test_history_pages_cover_every_message_once_in_order():
    channel = unique("hist")
    realtime.publish_batch([{"channel": channel, "event": "e", "data": i} for i in range(25)])
    assert [m["data"] for m in realtime.history_all(channel, page_size=7, direction="forwards")] == list(range(25))
    page = realtime.history(channel, limit=10)
    assert [m["data"] for m in page["messages"]] == list(range(24, 14, -1))
    assert "next_cursor" in page


def test_presence_get_lists_a_connected_member():
    channel = unique("room")
    t = realtime.token.issue(client_id="alice", user_id="u-alice", channels=[channel])
    ws = WebSocket(t["endpoint"] + "?token=" + t["token"])
    try:
        ws.next("connected")
        ws.send({"op": "presence.enter", "ref": 1, "channel": channel, "data": {"status": "here"}})
        assert ws.next("ack")["ref"] == 1
        members = realtime.presence.get(channel)
        assert [(m["client_id"], m["user_id"], m["data"]) for m in members] == [("alice", "u-alice", {"status": "here"})]
    finally:
        ws.close()


def test_a_subscriber_receives_what_python_publishes():
    channel = unique("live")
    t = realtime.token.issue(client_id="bob", channels=[channel])
    ws = WebSocket(t["endpoint"] + "?token=" + t["token"])
    try:
        ws.next("connected")
        ws.send({"op": "subscribe", "ref": "s", "channel": channel})
        assert ws.next("subscribed")["channel"] == channel
        sent = realtime.publish(channel, "greeting", {"text": "hello"})
        got = ws.next("message")
        assert (got["id"], got["event"], got["data"]) == (sent["message_id"], "greeting", {"text": "hello"})
    finally:
        ws.close()


def test_errors_carry_the_contract_code_and_status(gateway):
    with pytest.raises(RealtimeError) as e:
        Realtime(url=gateway, api_key="not-a-key").publish("x", "e", 1)
    assert (e.value.code, e.value.status) == (40100, 401)
    with pytest.raises(RealtimeError) as e:
        realtime.token.issue(ttl_seconds=0)
    assert e.value.code == 40000


def test_keys_can_be_created_listed_used_and_revoked(gateway):
    k = realtime.keys.create("ci", ["realtime:publish"])
    assert k["key_id"] in [x["key_id"] for x in realtime.keys.list()]
    scoped = Realtime(url=gateway, api_key=k["key"])
    assert scoped.publish(unique("ci"), "e", True)["status"] == "published"
    with pytest.raises(RealtimeError) as e:
        scoped.token.issue()
    assert e.value.code == 40300
    realtime.keys.revoke(k["key_id"])
    with pytest.raises(RealtimeError) as e:
        scoped.publish(unique("ci"), "e", True)
    assert e.value.code == 40100


def test_an_explicit_client_needs_no_environment(gateway, monkeypatch):
    monkeypatch.delenv("REALTIME_URL")
    monkeypatch.delenv("REALTIME_API_KEY")
    assert Realtime(url=gateway, api_key=KEY).channel.get(unique("any"))["subscribers"] == 0


def test_a_publish_whose_reply_is_lost_is_retried_with_the_clients_own_key_and_applied_once(gateway):
    rest = Realtime(url=gateway, api_key=KEY)
    calls = []
    real = rest.request

    def losing_first_reply(method, path, body=None):
        calls.append(body)
        reply = real(method, path, body)
        if path.endswith("/publish") and len(calls) == 1:
            raise RealtimeError(50400, "outcome unknown", 504)
        return reply

    rest.request = losing_first_reply
    sent = rest.publish("py-retry", "e", {"n": 1})
    assert sent["status"] == "duplicate"
    assert calls[0]["idempotency_key"] == calls[1]["idempotency_key"]
    assert [m["id"] for m in Realtime(url=gateway, api_key=KEY).history("py-retry")["messages"]] == [sent["message_id"]]
    # A refusal a retry cannot fix is not retried.
    calls.clear()
    rest.request = losing_first_reply
    try:
        rest.publish("bad name", "e", 1)
        raise AssertionError("expected a refusal")
    except RealtimeError as e:
        assert e.code == 40010
    assert len(calls) == 1


def test_a_publish_whose_connection_closes_before_the_reply_is_applied_once(gateway):
    """The request reaches the node, then the connection closes before the answer: the client
    retries with its own key and the message exists once."""
    from conftest import LosingProxy
    name = unique("py-lost")
    proxy = LosingProxy(gateway, marker=name)
    try:
        sent = Realtime(url=proxy.url, api_key=KEY).publish(name, "e", {"n": 1})
        assert proxy.lost == 1 and sent["status"] == "duplicate"
        assert [m["id"] for m in Realtime(url=gateway, api_key=KEY).history(name)["messages"]] == [sent["message_id"]]
    finally:
        proxy.close()
