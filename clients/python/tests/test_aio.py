"""The asyncio client against a live node: REST calls with the seed's keyword shapes, a
realtime subscriber that resumes across a dropped connection without loss or duplicates, is
told `resumed: false` when the node lost its history, keeps presence, refreshes its token,
and publishes exactly once when a reply is lost."""
import asyncio
import subprocess
import uuid

import pytest

from conftest import KEY, LosingProxy, start_gateway, stop
from realtime_client import RealtimeError
from realtime_client.aio import AsyncRealtime, ConnectionFailed


def unique(prefix):
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def run(coroutine, timeout=60):
    return asyncio.run(asyncio.wait_for(coroutine, timeout))


async def next_messages(iterator, count, timeout=20):
    got = []
    for _ in range(count):
        got.append(await asyncio.wait_for(iterator.__anext__(), timeout))
    return got


async def eventually(condition, timeout=20):
    deadline = asyncio.get_running_loop().time() + timeout
    while not await condition():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


def test_rest_calls_take_the_seed_keyword_shapes(gateway):
    async def scenario():
        async with AsyncRealtime(url=gateway, api_key=KEY) as realtime:
            name = unique("orders")
            created = await realtime.channel.create(name=name, type="presence", history_size=50)
            assert created["name"] == name
            token = await realtime.token.issue(user_id="u1", channels=[name], ttl_seconds=600)
            assert token["token"] and token["endpoint"].startswith("ws://")
            minted = await realtime.tokens.mint(client_id="c1", capabilities={name: ["subscribe"]})
            assert minted["client_id"] == "c1"
            sent = await realtime.publish(channel=name, event="created", data={"n": 1}, idempotency_key="k1")
            again = await realtime.publish(channel=name, event="created", data={"n": 1}, idempotency_key="k1")
            assert again["status"] == "duplicate" and again["message_id"] == sent["message_id"]
            results = await realtime.publish_batch([{"channel": name, "event": "b", "data": i} for i in range(3)]
                                                   + [{"channel": "bad name", "event": "b", "data": 0}])
            assert [r.get("status") for r in results[:3]] == ["published"] * 3
            assert results[3]["error"]["code"] == 40010
            seen = [m async for m in realtime.history_all(name, page_size=2, direction="forwards")]
            assert [m["data"] for m in seen] == [{"n": 1}, 0, 1, 2]
            assert await realtime.presence.get(channel=name) == []
            with pytest.raises(RealtimeError) as refused:
                await realtime.channel.get("bad name")
            assert refused.value.code == 40010 and refused.value.status == 400
    run(scenario())


def test_a_subscriber_resumes_across_a_dropped_connection_with_nothing_lost_or_doubled(gateway):
    async def scenario():
        name = unique("orders")
        async with AsyncRealtime(url=gateway, api_key=KEY) as realtime:
            await realtime.channel.create(name=name, history_size=1000)
            async def get_token():
                return await realtime.token.issue(client_id="sub", channels=[name])

            async with realtime.connect(get_token=get_token, min_retry=0.05, max_retry=0.2) as conn:
                channel = conn.channel(name)
                messages = channel.messages()
                first = asyncio.ensure_future(next_messages(messages, 5))
                await channel.subscribe()
                for i in range(5):
                    await realtime.publish(name, "e", {"i": i})
                got = await first
                # The network drops the connection; the node goes on publishing meanwhile.
                conn._ws.transport.abort()
                for i in range(5, 15):
                    await realtime.publish(name, "e", {"i": i})
                got += await next_messages(messages, 10)
                assert [m["data"]["i"] for m in got] == list(range(15))
                assert len({m["id"] for m in got}) == 15
                assert channel.resumed is True
    run(scenario())


def test_resumed_false_is_surfaced_when_history_no_longer_covers_the_gap(gateway):
    async def scenario():
        name = unique("orders")
        gaps = []
        async with AsyncRealtime(url=gateway, api_key=KEY) as realtime:
            await realtime.channel.create(name=name, history_size=2)
            async with realtime.connect(client_id="sub", capabilities={name: ["*"]},
                                        min_retry=0.05, max_retry=0.2) as conn:
                channel = conn.channel(name, on_gap=gaps.append)
                events = channel.events()
                waiting = asyncio.ensure_future(next_messages(events, 1))
                await channel.subscribe()
                sent = await realtime.publish(name, "e", 0)
                assert (await waiting)[0]["id"] == sent["message_id"]
                # The connection drops and cannot come back (its endpoint refuses) while five
                # messages are published to a channel that keeps two.
                endpoint = conn.url
                conn.url = "ws://127.0.0.1:1/v1/realtime/ws"
                conn._ws.transport.abort()
                for i in range(1, 6):
                    await realtime.publish(name, "e", i)
                conn.url = endpoint
                got = await next_messages(events, 3, timeout=30)
                assert got[0] == {"type": "resumed", "resumed": False, "since_id": sent["message_id"], "channel": name}
                assert gaps == [sent["message_id"]] and channel.resumed is False
                assert [m["data"] for m in got[1:]] == [4, 5], "what is retained is replayed"
    run(scenario())


def test_presence_enter_update_leave_and_reentry_after_a_reconnect(gateway):
    async def scenario():
        name = unique("room")
        async with AsyncRealtime(url=gateway, api_key=KEY) as realtime:
            async with realtime.connect(client_id="alice", capabilities={name: ["*"]},
                                        min_retry=0.05, max_retry=0.2) as conn:
                channel = conn.channel(name)
                await channel.enter_presence({"status": "here"})

                async def members():
                    return [(m["client_id"], m.get("data")) for m in await realtime.presence.get(name)]

                assert await members() == [("alice", {"status": "here"})]
                await channel.update_presence({"status": "busy"})
                assert await members() == [("alice", {"status": "busy"})]
                old = conn.connection_id
                conn._ws.transport.abort()

                async def reentered():
                    found = await realtime.presence.get(name)
                    return [m["connection_id"] for m in found] not in ([], [old]) and len(found) == 1
                await eventually(reentered)
                assert await members() == [("alice", {"status": "busy"})]
                await channel.leave_presence()
                assert await members() == []
    run(scenario())


def test_a_refused_fixed_token_ends_the_connection_without_retrying(gateway):
    async def scenario():
        async with AsyncRealtime(url=gateway, api_key=KEY) as realtime:
            conn = realtime.connect(token="not-a-token", min_retry=0.05, max_retry=0.1)
            with pytest.raises(ConnectionFailed):
                async with conn:
                    pass
            assert conn.state == "failed" and conn.close_code == 4001
    run(scenario())


def test_a_publish_whose_reply_is_lost_is_applied_exactly_once(gateway):
    """The connection is closed after the request reached the node and before its answer came
    back: the client retries with its own key, and the message exists once."""
    async def scenario():
        name = unique("lost")
        proxy = LosingProxy(gateway, marker=name)
        try:
            async with AsyncRealtime(url=proxy.url, api_key=KEY) as realtime:
                sent = await realtime.publish(name, "e", {"n": 1})
                assert proxy.lost == 1
                assert sent["status"] == "duplicate"
            async with AsyncRealtime(url=gateway, api_key=KEY) as direct:
                history = (await direct.history(name))["messages"]
                assert [m["id"] for m in history] == [sent["message_id"]]
                # Over the realtime connection too: publish, retried after a lost connection.
                async with direct.connect(client_id="pub", capabilities={name: ["*"]}) as conn:
                    channel = conn.channel(name)
                    reply = await channel.publish("ws", {"n": 2}, idempotency_key="ws-once")
                    again = await channel.publish("ws", {"n": 2}, idempotency_key="ws-once")
                    assert again["message_id"] == reply["message_id"] and again["status"] == "duplicate"
                assert len((await direct.history(name))["messages"]) == 2
                with pytest.raises(RealtimeError) as refused:
                    await direct.publish("bad name", "e", 1)
                assert refused.value.code == 40010
        finally:
            proxy.close()
    run(scenario())


def test_the_token_is_refreshed_through_the_callback_before_it_expires():
    """The node warns an hour ahead, so the first token (10 minutes) is due at once: the
    connection asks `get_token` for a new one and re-authenticates in place, without
    reconnecting; the second token (2 hours) is not due, so it is asked once more, not again."""
    node = start_gateway(REALTIME_TOKEN_EXPIRY_WARNING_SECONDS="3600")
    try:
        async def scenario():
            name = unique("orders")
            ttls = []
            async with AsyncRealtime(url=node.url, api_key=KEY) as realtime:
                async def get_token():
                    ttl = 600 if not ttls else 7200
                    ttls.append(ttl)
                    return await realtime.token.issue(client_id="sub", channels=[name], ttl_seconds=ttl)

                async with realtime.connect(get_token=get_token) as conn:
                    first = conn.connection_id

                    async def refreshed():
                        return len(ttls) == 2
                    await eventually(refreshed)
                    channel = conn.channel(name)
                    await channel.subscribe()
                    sent = await realtime.publish(name, "e", 1)
                    got = await next_messages(channel.messages(), 1)
                    assert got[0]["id"] == sent["message_id"]
                    assert conn.connection_id == first and conn.state == "connected"
                    assert ttls == [600, 7200]
        run(scenario())
    finally:
        stop(node)


def test_a_subscriber_survives_a_node_restart_without_losing_a_message(redis_cluster):
    """Two nodes on one Redis. The subscriber knows only node A (one address, as behind a load
    balancer with one backend); the backend publishes through node B while A stops and starts
    again. Every message arrives, in order, once, with no gap reported, and the subscriber's
    presence is back once it has reconnected."""
    nodes, start = redis_cluster
    a, b = nodes["node-a"], nodes["node-b"]

    async def scenario():
        name = unique("restart")
        gaps = []
        async with AsyncRealtime(url=f"http://127.0.0.1:{b['port']}", api_key=KEY) as backend:
            async with _connect_to(backend, name, a) as conn:
                channel = conn.channel(name, on_gap=gaps.append)
                await channel.subscribe()
                await channel.enter_presence({"role": "viewer"})
                received = []

                async def consume():
                    async for msg in channel.messages():
                        received.append(msg["data"]["seq"])

                consumer = asyncio.ensure_future(consume())
                total = 60
                for seq in range(total):
                    await backend.publish(name, "tick", {"seq": seq})
                    if seq == 20:
                        await eventually(lambda: _true(len(received) > 10))
                        await asyncio.to_thread(stop, a["proc"])
                    if seq == 40:
                        await asyncio.to_thread(start, "node-a", a["port"])
                    await asyncio.sleep(0.02)
                await eventually(lambda: _true(len(received) >= total), timeout=40)
                consumer.cancel()
                assert received == list(range(total))
                assert gaps == []

                async def present():
                    return [m["client_id"] for m in await backend.presence.get(name)] == ["sub"]
                await eventually(present)
    run(scenario(), timeout=120)


async def _true(value):
    return value


def _connect_to(backend, name, node):
    """A connection of client "sub" to `node` only (one address, as behind a load balancer with
    one backend), with tokens for channel `name` and quick reconnects."""
    async def get_token():
        return await backend.token.issue(client_id="sub", capabilities={name: ["*"]})
    return backend.connect(get_token=get_token, url=f"ws://127.0.0.1:{node['port']}/v1/realtime/ws", min_retry=0.2, max_retry=1.0)


def test_a_resume_across_an_epoch_change_reports_the_gap(redis_cluster):
    """The client keeps the channel's epoch with its last id. While it is away, the channel's
    stream loses entries (as a Redis failover to a replica that missed writes does: the epoch
    changes). Its resume then reports a gap instead of going on as if nothing happened."""
    nodes, start = redis_cluster
    a, b = nodes["node-a"], nodes["node-b"]
    redis_url = a["redis_url"]

    async def scenario():
        name = unique("epoch")
        gaps = []
        async with AsyncRealtime(url=f"http://127.0.0.1:{b['port']}", api_key=KEY) as backend:
            async with _connect_to(backend, name, a) as conn:
                channel = conn.channel(name, on_gap=gaps.append)
                await backend.publish(name, "tick", {"seq": 0})
                await channel.subscribe()
                await backend.publish(name, "tick", {"seq": 1})
                first = await channel.messages().__anext__()
                assert first["data"]["seq"] == 1 and channel.epoch
                await asyncio.to_thread(stop, a["proc"])
                # What a node does when it finds the stream lost entries: a new epoch.
                await asyncio.to_thread(subprocess.run, ["redis-cli", "-u", redis_url, "HSET", f"rt:{{{name}}}:m", "epoch", "after-failover"],
                                        check=True, capture_output=True)
                await asyncio.to_thread(start, "node-a", a["port"])
                await eventually(lambda: _true(gaps == [first["id"]]), timeout=30)
                assert channel.epoch == "after-failover"
    run(scenario(), timeout=90)
