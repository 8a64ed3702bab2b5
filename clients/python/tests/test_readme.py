"""The README's SDK examples, run as written against a live node."""
import os
import re

from conftest import ROOT, KEY, WebSocket


def readme_blocks(language, heading):
    text = open(os.path.join(ROOT, "README.md")).read()
    section = text.split(heading, 1)[1].split("\n## ", 1)[0]
    return re.findall(rf"```{language}\n(.*?)```", section, re.S)


def test_python_examples_run(gateway, capsys):
    blocks = readme_blocks("python", "## Python client")
    assert blocks, "README has a Python example"
    for code in blocks:
        exec(compile(code, "README.md", "exec"), {})


def test_browser_example_runs_in_chromium(gateway):
    import pytest
    from test_browser import CHROMIUM, Page
    from realtime_client import Realtime
    if CHROMIUM is None:
        pytest.skip("chromium not installed")
    blocks = readme_blocks("js", "## Browser client")
    assert blocks, "README has a browser example"
    rest = Realtime(url=gateway, api_key=KEY)
    token = rest.token.issue(client_id="readme", channels=["chat:*"], capabilities={"chat:lobby": ["*"]})
    # Someone else in the room sees the example's client enter once, then its message.
    watcher_token = rest.token.issue(client_id="watcher", channels=["chat:lobby"])
    watcher = WebSocket(watcher_token["endpoint"] + "?token=" + watcher_token["token"])
    watcher.next("connected")
    watcher.send({"op": "subscribe", "ref": "w", "channel": "chat:lobby"})
    watcher.next("subscribed")
    page = Page(gateway + "/healthz")
    try:
        page.wait_for("location.origin.startsWith('http') && document.readyState === 'complete'")
        # The example fetches its token from "the backend": here, a token minted above.
        code = blocks[0].replace('import { RealtimeClient } from "/v1/realtime/client.js";',
                                 'const { RealtimeClient } = await import(location.origin + "/v1/realtime/client.js");')
        code = code.replace('(await fetch("/api/realtime-token")).json()', repr(token["token"]))
        page.evaluate("(async () => { window.received = []; window.log = []; const console = { log: (...a) => window.log.push(a) };\n"
                      + code + "\n window.example = { client, chat }; })()")
        page.wait_for("window.example.client.state === 'connected' && window.example.chat.state === 'subscribed'")
        rest.publish("chat:lobby", "message", {"text": "from the backend"})
        page.wait_for("window.log.some(a => JSON.stringify(a).includes('from the backend'))")
        members = rest.presence.get("chat:lobby")
        assert [m["client_id"] for m in members] == ["readme"]
        seen = []
        while True:
            f = watcher.recv()
            if f["type"] == "presence_event":
                seen.append(f["action"])
            if f["type"] == "message" and f["data"] == {"text": "from the backend"}:
                break
        assert seen == ["enter"], "the client entered presence once"
    finally:
        watcher.close()
        page.close()


def test_standalone_channel_example_runs_in_chromium(gateway):
    """The Voyant-style form: new RealtimeChannel({ channel, token }) with on("message")."""
    import json
    import pytest
    from test_browser import CHROMIUM, Page
    from realtime_client import Realtime
    if CHROMIUM is None:
        pytest.skip("chromium not installed")
    blocks = readme_blocks("js", "## Browser client")
    assert len(blocks) >= 2, "README has the standalone channel example"
    rest = Realtime(url=gateway, api_key=KEY)
    token = rest.token.issue(client_id="picker", capabilities={"orders:*": ["*"]})
    page = Page(gateway + "/healthz")
    try:
        page.wait_for("location.origin.startsWith('http') && document.readyState === 'complete'")
        code = blocks[1].replace('import { RealtimeChannel } from "/v1/realtime/client.js";',
                                 'const { RealtimeChannel } = await import(location.origin + "/v1/realtime/client.js");')
        code = code.replace('(await fetch("/api/realtime-token")).json()', json.dumps(token))
        page.evaluate("(async () => { window.log = []; const console = { log: (...a) => window.log.push(a) };\n"
                      + code + "\n window.example = channel; channel.on('message', (m) => window.log.push(['raw', m])); })()")
        page.wait_for("window.example.state === 'subscribed'")
        # The example's own publish arrived once; one from the backend follows.
        sent = rest.publish("orders:eu", "order.created", {"id": "o-2"})
        page.wait_for("window.log.some(a => a[0] === 'raw' && a[1].event === 'order.created')")
        raw = page.evaluate("window.log.filter(a => a[0] === 'raw').map(a => a[1])")
        assert [m["event"] for m in raw][-1] == "order.created"
        last = raw[-1]
        assert last["id"] == sent["message_id"] and last["data"] == {"id": "o-2"}
        assert "timestamp" in last and last["channel"] == "orders:eu"
        assert page.evaluate("window.log.some(a => a[0] === 'order.created')")
        members = rest.presence.get("orders:eu")
        assert [m["client_id"] for m in members] == ["picker"]
        history = rest.history("orders:eu")["messages"]
        assert {m["event"] for m in history} == {"order.updated", "order.created"}
        assert [m.get("client_id") for m in history if m["event"] == "order.updated"] == ["picker"]
        page.evaluate("window.example.close()")
    finally:
        page.close()
