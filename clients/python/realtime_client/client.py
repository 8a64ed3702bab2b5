import json
import os
import random
import socket
import time
import urllib.error
import urllib.parse
import urllib.request


class RealtimeError(Exception):
    """A refused request: the gateway's error envelope (`code`, `message`, HTTP `status`)."""

    def __init__(self, code, message, status, retry_after=None):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.status = status
        self.retry_after = retry_after


class Realtime:
    """REST client with an API key. Every call returns the decoded JSON response."""

    #: Codes a publish is retried on (with the same idempotency key): nothing was published,
    #: outcome unknown, rate limited. Connection errors and timeouts are retried too.
    RETRYABLE = (50300, 50400, 42900)

    def __init__(self, url=None, api_key=None, timeout=10.0, retries=5, ssl=None):
        """`ssl`: an `ssl.SSLContext` for an https:// node (a private CA, a client certificate
        for mutual TLS); default: the system's trust."""
        self.url = (url or os.environ.get("REALTIME_URL") or "http://127.0.0.1:8080").rstrip("/")
        self.api_key = api_key if api_key is not None else os.environ.get("REALTIME_API_KEY")
        self.timeout = timeout
        self.retries = max(1, retries)
        self.ssl = ssl
        self.token = self.tokens = _Tokens(self)
        self.channel = self.channels = _Channels(self)
        self.presence = _Presence(self)
        self.keys = _Keys(self)

    # -- publishing

    def publish(self, channel, event, data=None, idempotency_key=None):
        """Publishes one message. Returns `{"message_id", "channel", "timestamp", "status"}`;
        `status` is `"duplicate"` when `idempotency_key` was seen on the channel before.

        Without an `idempotency_key` the client uses one of its own, and it retries (with the
        same key) on 50300, 50400, 42900 and connection errors, so a retry never doubles it."""
        body = {"channel": channel, "event": event, "data": data,
                "idempotency_key": idempotency_key if idempotency_key is not None else _new_key()}
        return self._retrying(lambda: self.request("POST", "/v1/realtime/publish", body))

    def publish_batch(self, messages):
        """Publishes in order. `messages`: dicts with channel, event, data, idempotency_key?.
        Returns one result per message: `{"message_id", "status"}` or `{"error": {...}}`.
        Items without a key get one of the client's own, so a retried batch doubles nothing."""
        items = [dict(m, idempotency_key=m.get("idempotency_key") or _new_key()) for m in messages]
        return self._retrying(lambda: self.request("POST", "/v1/realtime/publish/batch", {"messages": items}))["results"]

    def _retrying(self, call):
        delay = 0.1
        for attempt in range(1, self.retries + 1):
            try:
                return call()
            except RealtimeError as e:
                if e.code not in self.RETRYABLE or attempt == self.retries:
                    raise
                time.sleep(max(e.retry_after or 0, random.uniform(0, delay)))
            except (urllib.error.URLError, ConnectionError, socket.timeout, TimeoutError):
                if attempt == self.retries:
                    raise
                time.sleep(random.uniform(0, delay))
            delay = min(delay * 2, 2.0)

    # -- history

    def history(self, channel, limit=None, direction=None, since_id=None, until_id=None, cursor=None):
        """One page: `{"messages": [...], "next_cursor"?}`."""
        query = _query(limit=limit, direction=direction, since_id=since_id, until_id=until_id, cursor=cursor)
        return self.request("GET", f"/v1/realtime/channels/{_quote(channel)}/history{query}")

    def history_all(self, channel, page_size=100, direction=None):
        """Every retained message, page after page."""
        page = self.history(channel, limit=page_size, direction=direction)
        while True:
            yield from page["messages"]
            cursor = page.get("next_cursor")
            if not cursor:
                return
            page = self.history(channel, limit=page_size, cursor=cursor)

    # -- transport

    def request(self, method, path, body=None):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        if self.api_key:
            req.add_header("Authorization", "Bearer " + self.api_key)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout, context=self.ssl) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as e:
            raw = e.read()
            try:
                err = json.loads(raw)["error"]
            except (ValueError, KeyError, TypeError):
                raise RealtimeError(e.code * 100, raw.decode(errors="replace") or e.reason, e.code) from None
            retry = e.headers.get("Retry-After")
            raise RealtimeError(err.get("code"), err.get("message"), err.get("status", e.code),
                                float(retry) if retry else None) from None
        return json.loads(raw) if raw else None


class _Tokens:
    def __init__(self, client):
        self._c = client

    def issue(self, user_id=None, client_id=None, channels=None, capabilities=None, ttl_seconds=None):
        """Mints a client token: `{"token", "client_id", "user_id"?, "expires_at", "endpoint", "capabilities"}`.
        `channels` grants subscribe, presence and history on each name or pattern; `capabilities`
        is a map of pattern -> operations."""
        body = _drop_none(user_id=user_id, client_id=client_id, channels=channels,
                          capabilities=capabilities, ttl_seconds=ttl_seconds)
        return self._c.request("POST", "/v1/realtime/token", body)

    mint = issue


class _Channels:
    def __init__(self, client):
        self._c = client

    def create(self, name, type=None, history_size=None, history_ttl_seconds=None):
        body = _drop_none(name=name, type=type, history_size=history_size, history_ttl_seconds=history_ttl_seconds)
        return self._c.request("POST", "/v1/realtime/channels", body)

    def get(self, name):
        return self._c.request("GET", f"/v1/realtime/channels/{_quote(name)}")

    def list(self, limit=None, cursor=None):
        return self._c.request("GET", "/v1/realtime/channels" + _query(limit=limit, cursor=cursor))

    def delete(self, name):
        self._c.request("DELETE", f"/v1/realtime/channels/{_quote(name)}")


class _Presence:
    def __init__(self, client):
        self._c = client

    def get(self, channel, group_by=None):
        """The channel's members: a list of `{"client_id", "user_id"?, "connection_id", "data"?, ...}`."""
        path = f"/v1/realtime/channels/{_quote(channel)}/presence" + _query(group_by=group_by)
        return self._c.request("GET", path)["members"]


class _Keys:
    def __init__(self, client):
        self._c = client

    def create(self, name, scopes):
        return self._c.request("POST", "/v1/realtime/keys", {"name": name, "scopes": list(scopes)})

    def list(self):
        return self._c.request("GET", "/v1/realtime/keys")["keys"]

    def revoke(self, key_id):
        self._c.request("DELETE", f"/v1/realtime/keys/{_quote(key_id)}")


def _new_key():
    return "sdk-" + os.urandom(16).hex()


def _drop_none(**kw):
    return {k: v for k, v in kw.items() if v is not None}


def _query(**kw):
    kw = _drop_none(**kw)
    return "?" + urllib.parse.urlencode(kw) if kw else ""


def _quote(segment):
    return urllib.parse.quote(segment, safe="")


class _Default:
    """`realtime`: a client built on first use from REALTIME_URL and REALTIME_API_KEY."""

    _client = None

    def __getattr__(self, name):
        if _Default._client is None:
            _Default._client = Realtime()
        return getattr(_Default._client, name)


realtime = _Default()
