"""asyncio client: the REST surface of `Realtime` (on httpx) and a realtime connection (on
websockets) that subscribes, resumes, keeps presence and refreshes its token.

    from realtime_client.aio import AsyncRealtime

    realtime = AsyncRealtime(url="http://127.0.0.1:8080", api_key="...")
    token = (await realtime.token.issue(user_id="u1", channels=["orders"]))["token"]
    async with realtime.connect(token) as conn:
        async for msg in conn.channel("orders").messages():
            print(msg["event"], msg["data"])
"""
import asyncio
import inspect
import json
import os
import random
import urllib.parse

import httpx
import websockets
from websockets.asyncio.client import connect as ws_connect

from .client import RealtimeError, _drop_none, _new_key, _query, _quote

#: Codes retried with the same idempotency key: nothing was published, outcome unknown, rate limited.
RETRYABLE = (50300, 50400, 42900)


async def _retrying(call, attempts, base_delay=0.1, max_delay=2.0):
    """Runs `call` until it succeeds or fails with an error a retry cannot fix (any other
    code); connection errors and lost replies are retried too. Bounded, with backoff and jitter."""
    delay = base_delay
    for attempt in range(1, attempts + 1):
        try:
            return await call()
        except RealtimeError as e:
            if e.code not in RETRYABLE or attempt == attempts:
                raise
            await asyncio.sleep(max(e.retry_after or 0, random.uniform(0, delay)))
        except (httpx.TransportError, ConnectionError, asyncio.TimeoutError, ConnectionLost):
            if attempt == attempts:
                raise
            await asyncio.sleep(random.uniform(0, delay))
        delay = min(delay * 2, max_delay)


class AsyncRealtime:
    """REST client with an API key; every call is a coroutine returning the decoded JSON.
    Same call shapes as `Realtime` (positional or keyword)."""

    def __init__(self, url=None, api_key=None, timeout=10.0, retries=5, ssl=None):
        """`ssl`: an `ssl.SSLContext` for an https:// node (a private CA, a client certificate
        for mutual TLS); its connections (`connect`) use it too. Default: the system's trust."""
        self.url = (url or os.environ.get("REALTIME_URL") or "http://127.0.0.1:8080").rstrip("/")
        self.api_key = api_key if api_key is not None else os.environ.get("REALTIME_API_KEY")
        self.retries = max(1, retries)
        self.ssl = ssl
        self._http = httpx.AsyncClient(timeout=timeout, verify=ssl if ssl is not None else True)
        self.token = self.tokens = _Tokens(self)
        self.channel = self.channels = _Channels(self)
        self.presence = _Presence(self)
        self.keys = _Keys(self)

    async def aclose(self):
        await self._http.aclose()

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc):
        await self.aclose()

    async def publish(self, channel, event, data=None, idempotency_key=None):
        """Publishes one message with `idempotency_key` or a key of its own, retried with that
        key on 50300, 50400, 42900 and connection errors: applied at most once."""
        body = {"channel": channel, "event": event, "data": data,
                "idempotency_key": idempotency_key if idempotency_key is not None else _new_key()}
        return await _retrying(lambda: self.request("POST", "/v1/realtime/publish", body), self.retries)

    async def publish_batch(self, messages):
        items = [dict(m, idempotency_key=m.get("idempotency_key") or _new_key()) for m in messages]
        reply = await _retrying(lambda: self.request("POST", "/v1/realtime/publish/batch", {"messages": items}),
                                self.retries)
        return reply["results"]

    async def history(self, channel, limit=None, direction=None, since_id=None, until_id=None, cursor=None):
        query = _query(limit=limit, direction=direction, since_id=since_id, until_id=until_id, cursor=cursor)
        return await self.request("GET", f"/v1/realtime/channels/{_quote(channel)}/history{query}")

    async def history_all(self, channel, page_size=100, direction=None):
        page = await self.history(channel, limit=page_size, direction=direction)
        while True:
            for message in page["messages"]:
                yield message
            cursor = page.get("next_cursor")
            if not cursor:
                return
            page = await self.history(channel, limit=page_size, cursor=cursor)

    async def request(self, method, path, body=None):
        headers = {"Authorization": "Bearer " + self.api_key} if self.api_key else {}
        response = await self._http.request(method, self.url + path, json=body, headers=headers)
        if response.status_code >= 400:
            try:
                err = response.json()["error"]
            except (ValueError, KeyError, TypeError):
                raise RealtimeError(response.status_code * 100, response.text, response.status_code) from None
            retry = response.headers.get("Retry-After")
            raise RealtimeError(err.get("code"), err.get("message"), err.get("status", response.status_code),
                                float(retry) if retry else None)
        return response.json() if response.content else None

    def connect(self, token=None, get_token=None, url=None, **options):
        """A realtime connection (use with `async with`). `token`: a token string; or
        `get_token`: a function (sync or async) returning a token string or token response,
        called before each connection, before expiry and after a 4001 close. With neither,
        tokens are minted with this client's API key for `options["client_id"]` and
        `options["capabilities"]`."""
        if token is None and get_token is None:
            caps = options.pop("capabilities", {"*": ["*"]})
            client_id = options.pop("client_id", None)

            async def get_token():
                return await self.token.issue(client_id=client_id, capabilities=caps)
        options.setdefault("ssl", self.ssl)
        return Connection(token=token, get_token=get_token, url=url or _ws_url(self.url), **options)


class _Tokens:
    def __init__(self, client):
        self._c = client

    async def issue(self, user_id=None, client_id=None, channels=None, capabilities=None, ttl_seconds=None):
        body = _drop_none(user_id=user_id, client_id=client_id, channels=channels,
                          capabilities=capabilities, ttl_seconds=ttl_seconds)
        return await self._c.request("POST", "/v1/realtime/token", body)

    mint = issue


class _Channels:
    def __init__(self, client):
        self._c = client

    async def create(self, name, type=None, history_size=None, history_ttl_seconds=None):
        body = _drop_none(name=name, type=type, history_size=history_size, history_ttl_seconds=history_ttl_seconds)
        return await self._c.request("POST", "/v1/realtime/channels", body)

    async def get(self, name):
        return await self._c.request("GET", f"/v1/realtime/channels/{_quote(name)}")

    async def list(self, limit=None, cursor=None):
        return await self._c.request("GET", "/v1/realtime/channels" + _query(limit=limit, cursor=cursor))

    async def delete(self, name):
        await self._c.request("DELETE", f"/v1/realtime/channels/{_quote(name)}")


class _Presence:
    def __init__(self, client):
        self._c = client

    async def get(self, channel, group_by=None):
        path = f"/v1/realtime/channels/{_quote(channel)}/presence" + _query(group_by=group_by)
        return (await self._c.request("GET", path))["members"]


class _Keys:
    def __init__(self, client):
        self._c = client

    async def create(self, name, scopes):
        return await self._c.request("POST", "/v1/realtime/keys", {"name": name, "scopes": list(scopes)})

    async def list(self):
        return (await self._c.request("GET", "/v1/realtime/keys"))["keys"]

    async def revoke(self, key_id):
        await self._c.request("DELETE", f"/v1/realtime/keys/{_quote(key_id)}")


class ConnectionLost(Exception):
    """The connection was down, or went down before an op's reply came. A publish is retried
    on it with its idempotency key."""


class ConnectionFailed(RealtimeError):
    """The connection ended for good: the node closed it with 4003, or with 4001 when there is
    no `get_token` to get another token. No reconnect follows."""


class Connection:
    """One WebSocket connection, kept up until closed: reconnects with exponential backoff and
    jitter (at once after 1012, never after 4003), resubscribes each channel from the last id it
    delivered, enters presence again, and refreshes its token through `get_token`."""

    def __init__(self, token=None, get_token=None, url=None, min_retry=0.5, max_retry=30.0,
                 request_timeout=10.0, publish_attempts=5, ssl=None):
        if token is None and get_token is None:
            raise TypeError("Connection needs token or get_token")
        self.url = url
        self.ssl = ssl  # an ssl.SSLContext for wss:// (None: the system's trust)
        self._token = token
        self._get_token = get_token
        self.min_retry, self.max_retry = min_retry, max_retry
        self.request_timeout = request_timeout
        self.publish_attempts = publish_attempts
        self.state = "disconnected"
        self.connection_id = None
        self.client_id = None
        self.close_code = None
        self._channels = {}
        self._pending = {}
        self._ref = 0
        self._ws = None
        self._connected = asyncio.Event()
        self._runner = None
        self._closing = False
        self._need_token = token is None
        self._endpoint = None
        self._generation = 0  # bumped by each `connected`: which connection a channel is attached on

    async def __aenter__(self):
        self._runner = asyncio.create_task(self._run())
        await self.ready()
        return self

    async def __aexit__(self, *exc):
        await self.close()

    def channel(self, name, on_gap=None):
        """The channel object for `name` (one per name and connection). `on_gap(since_id)` is
        called when a resume could not cover what was missed (`resumed: false`)."""
        ch = self._channels.get(name)
        if ch is None:
            ch = self._channels[name] = Channel(self, name)
        if on_gap is not None:
            ch.on_gap = on_gap
        return ch

    async def ready(self, timeout=None):
        """Waits until connected; raises `ConnectionFailed` once the node refused for good."""
        waiter = asyncio.ensure_future(self._connected.wait())
        done, _ = await asyncio.wait([waiter, self._runner], timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        if self._runner in done and not self._connected.is_set():
            waiter.cancel()
            self._runner.result()  # raises what ended it
            raise ConnectionFailed(0, "connection closed", 0)
        if not done:
            waiter.cancel()
            raise asyncio.TimeoutError("not connected")

    async def close(self):
        self._closing = True
        self.state = "closed"
        if self._ws is not None:
            await self._ws.close()
        if self._runner is not None:
            self._runner.cancel()
            try:
                await self._runner
            except (asyncio.CancelledError, ConnectionFailed):
                pass
        self._fail_pending()
        for ch in self._channels.values():
            ch._queue.put_nowait(None)

    async def request(self, op, on_reply=None, **fields):
        """Sends an op and returns its reply; raises RealtimeError on an error reply and
        `ConnectionLost` when the connection went down first. `on_reply(reply)` runs as the
        reply is read, before any frame after it (a subscribe's replayed messages)."""
        if self._ws is None or not self._connected.is_set():
            raise ConnectionLost("not connected")
        self._ref += 1
        ref = self._ref
        future = asyncio.get_running_loop().create_future()
        self._pending[ref] = (future, on_reply)
        try:
            await self._ws.send(json.dumps({"op": op, "ref": ref, **fields}))
            return await asyncio.wait_for(future, self.request_timeout)
        except websockets.ConnectionClosed:
            raise ConnectionLost("connection lost") from None
        finally:
            self._pending.pop(ref, None)

    async def _request_when_connected(self, op, **fields):
        await self.ready()
        return await self.request(op, **fields)

    # -- the connection loop

    async def _refresh_token(self):
        got = self._get_token()
        if inspect.isawaitable(got):
            got = await got
        if isinstance(got, dict):
            self._token = got["token"]
            self._endpoint = got.get("endpoint") or self._endpoint
        else:
            self._token = got
        self._need_token = False

    async def _run(self):
        attempt = 0
        while not self._closing:
            code = None
            try:
                if self._need_token and self._get_token is not None:
                    await self._refresh_token()
                url = self.url or self._endpoint
                separator = "&" if "?" in url else "?"
                async with ws_connect(url + separator + "token=" + urllib.parse.quote(self._token),
                                      max_size=None, open_timeout=self.request_timeout,
                                      **({"ssl": self.ssl} if self.ssl is not None and url.startswith("wss") else {})) as ws:
                    self._ws = ws
                    try:
                        async for text in ws:
                            if await self._frame(json.loads(text)):
                                attempt = 0
                    except websockets.ConnectionClosed:
                        pass
                    code = ws.close_code
            except (OSError, websockets.InvalidHandshake, websockets.ConnectionClosed, asyncio.TimeoutError,
                    RealtimeError, httpx.TransportError):
                pass
            self._ws = None
            self._connected.clear()
            self.state = "disconnected"
            self.connection_id = None
            self.close_code = code
            self._fail_pending()
            if self._closing:
                return
            if code == 4003:
                self.state = "failed"
                raise ConnectionFailed(40300, "the node refused this connection for good (4003)", 403)
            if code == 4001:
                if self._get_token is None:
                    # A fixed token the node refused (invalid, expired, revoked): retrying it cannot help.
                    self.state = "failed"
                    raise ConnectionFailed(40100, "the node refused the token (4001) and there is no get_token", 401)
                self._need_token = True
            if code == 1012:
                delay = 0
            else:
                base = min(self.max_retry, self.min_retry * 2 ** attempt)
                delay = base / 2 + random.uniform(0, base / 2)
            attempt += 1
            await asyncio.sleep(delay)

    async def _frame(self, f):
        """Handles one frame from the node; true once connected."""
        ref = f.get("ref")
        if ref is not None and ref in self._pending:
            future, on_reply = self._pending.pop(ref)
            if not future.done():
                if f.get("type") == "error":
                    future.set_exception(RealtimeError(f.get("code"), f.get("message"), 0, _seconds(f)))
                else:
                    if on_reply is not None:
                        on_reply(f)
                    future.set_result(f)
            return False
        kind = f.get("type")
        if kind == "connected":
            self.connection_id = f.get("connection_id")
            self.client_id = f.get("client_id")
            self._generation += 1
            self.state = "connected"
            self._connected.set()
            for ch in list(self._channels.values()):
                asyncio.create_task(ch._reattach())
            return True
        if kind == "message":
            ch = self._channels.get(f.get("channel"))
            if ch is not None:
                ch._deliver(f)
        elif kind == "presence_event":
            ch = self._channels.get(f.get("channel"))
            if ch is not None:
                ch._presence_event(f)
        elif kind == "subscribed":
            # Without a ref: the node could not catch the channel up after a fault (contract
            # §10) and reports what a resume would: `resumed: false`.
            ch = self._channels.get(f.get("channel"))
            if ch is not None:
                ch._resume_result(f, ch.last_id)
        elif kind == "unsubscribed":
            ch = self._channels.get(f.get("channel"))
            if ch is not None:
                ch._wanted = False
        elif kind == "token_expiring" and self._get_token is not None:
            asyncio.create_task(self._renew())
        elif kind == "error" and f.get("code") in (40140, 40141):
            self._need_token = True
        return False

    async def _renew(self):
        try:
            await self._refresh_token()
            await self.request("auth", token=self._token)
        except Exception:
            self._need_token = True  # the next connection gets a fresh one

    def _fail_pending(self):
        for future, _ in self._pending.values():
            if not future.done():
                future.set_exception(ConnectionLost("connection lost"))
        self._pending.clear()


class Channel:
    """One channel of a `Connection`."""

    def __init__(self, conn, name):
        self.conn = conn
        self.name = name
        self.last_id = None
        # The channel's epoch from the last `subscribed`, sent back with `since_id`.
        self.epoch = None
        self.resumed = None
        self.on_gap = None
        self.on_presence = None
        self._wanted = False
        self._queue = asyncio.Queue()
        self._presence = None       # the data while entered
        self._attached = None       # the connection generation the channel is attached on

    async def subscribe(self, since_id=None):
        """Subscribes (and again after every reconnect, from the last id delivered)."""
        self._wanted = True
        if since_id is not None:
            self.last_id = since_id
        await self.conn.ready()
        if self._attached != self.conn._generation:
            await self._attach()

    async def messages(self):
        """Each message, in order and once, across reconnects; subscribes on first use."""
        async for item in self.events():
            if item.get("type") == "message":
                yield item

    async def events(self):
        """Messages, plus `{"type": "resumed", "resumed": False, "since_id": ...}` when a resume
        could not cover what was missed."""
        if not self._wanted:
            await self.subscribe()
        while True:
            item = await self._queue.get()
            if item is None:
                return
            yield item

    async def publish(self, event, data=None, idempotency_key=None):
        """Publishes over the connection with `idempotency_key` or a key of its own, retried with
        it on 50300, 50400, 42900 and a lost connection: applied at most once."""
        fields = {"channel": self.name, "event": event, "data": data,
                  "idempotency_key": idempotency_key if idempotency_key is not None else _new_key()}
        return await _retrying(lambda: self.conn._request_when_connected("publish", **fields), self.conn.publish_attempts)

    async def enter_presence(self, data=None):
        """Enters presence (entered again after each reconnect)."""
        self._presence = {"data": data}
        return await self.conn._request_when_connected("presence.enter", channel=self.name, data=data)

    async def update_presence(self, data=None):
        self._presence = {"data": data}
        return await self.conn._request_when_connected("presence.update", channel=self.name, data=data)

    async def leave_presence(self):
        self._presence = None
        return await self.conn._request_when_connected("presence.leave", channel=self.name)

    async def presence(self):
        return (await self.conn._request_when_connected("presence.get", channel=self.name))["members"]

    async def history(self, **options):
        return (await self.conn._request_when_connected("history", channel=self.name, **options))["messages"]

    async def unsubscribe(self):
        self._wanted = False
        if self.conn.state == "connected":
            await self.conn.request("unsubscribe", channel=self.name)
        self._attached = None

    async def _attach(self):
        since = self.last_id
        fields = {"channel": self.name}
        if since is not None:
            fields["since_id"] = since
            if self.epoch:
                fields["epoch"] = self.epoch
        self._attached = self.conn._generation
        await self.conn.request("subscribe", on_reply=lambda reply: self._resume_result(reply, since), **fields)

    def _resume_result(self, reply, since):
        # Queued ahead of the replayed messages that follow the reply.
        self.resumed = reply.get("resumed")
        if reply.get("epoch") is not None:
            self.epoch = reply.get("epoch")
        if since is not None and reply.get("resumed") is False:
            self._queue.put_nowait({"type": "resumed", "resumed": False, "since_id": since, "channel": self.name})
            if self.on_gap is not None:
                self.on_gap(since)

    async def _reattach(self):
        try:
            if self._wanted and self._attached != self.conn._generation:
                await self._attach()
            if self._presence is not None:
                await self.conn.request("presence.enter", channel=self.name, data=self._presence["data"])
        except (RealtimeError, ConnectionLost):
            pass  # the connection went down again; the next one retries

    def _deliver(self, message):
        # A resume replays from the last id; never hand the same message out twice.
        self.last_id = message.get("id")
        self._queue.put_nowait(message)

    def _presence_event(self, event):
        if self.on_presence is not None:
            self.on_presence(event)


def _seconds(frame):
    ms = frame.get("retry_after_ms")
    return ms / 1000 if ms is not None else None


def _ws_url(base):
    return ("wss" + base[5:] if base.startswith("https") else "ws" + base[4:]) + "/v1/realtime/ws"
