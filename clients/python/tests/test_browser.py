"""The browser client and the console page in headless Chromium, driven over the DevTools
protocol: a real page connects with a minted token, receives a published message, shows a
presence member, and reconnects after the node it is connected to restarts."""
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.request

import pytest

from conftest import KEY, WebSocket, gateway_binary, start_gateway
from realtime_client import Realtime

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
pytestmark = pytest.mark.skipif(CHROMIUM is None and not os.environ.get("REALTIME_REQUIRE_BROWSER"),
                                reason="chromium not installed")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Page:
    """One Chromium page, evaluated into through the DevTools protocol."""

    def __init__(self, url):
        self.profile = tempfile.mkdtemp(prefix="rt-chromium-")
        self.proc = subprocess.Popen(
            [CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
             "--remote-debugging-port=0", f"--user-data-dir={self.profile}", url],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        port_file = os.path.join(self.profile, "DevToolsActivePort")
        deadline = time.time() + 30
        while not os.path.exists(port_file) or not open(port_file).read().strip():
            if time.time() > deadline:
                raise RuntimeError("chromium did not start")
            time.sleep(0.1)
        port = int(open(port_file).read().split()[0])
        while True:
            targets = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list"))
            pages = [t for t in targets if t["type"] == "page"]
            if pages:
                break
            time.sleep(0.1)
        self.ws = WebSocket(pages[0]["webSocketDebuggerUrl"])
        self.id = 0

    def evaluate(self, expression):
        self.id += 1
        self.ws.send({"id": self.id, "method": "Runtime.evaluate",
                      "params": {"expression": expression, "awaitPromise": True, "returnByValue": True}})
        while True:
            reply = self.ws.recv()
            if reply.get("id") == self.id:
                result = reply["result"]
                if "exceptionDetails" in result:
                    raise AssertionError(result["exceptionDetails"])
                return result["result"].get("value")

    def wait_for(self, expression, timeout=20):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.evaluate(expression):
                return
            time.sleep(0.1)
        raise AssertionError(f"timed out waiting for {expression}")

    def close(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        shutil.rmtree(self.profile, ignore_errors=True)


@pytest.fixture
def own_node():
    """A node on a fixed port of its own, so it can be restarted in place."""
    port = free_port()
    node = {"port": port, "proc": start_gateway(port)}
    yield node
    node["proc"].terminate()
    node["proc"].wait(timeout=15)


def test_console_page_watches_a_channel_live_and_survives_a_node_restart(own_node):
    base = f"http://127.0.0.1:{own_node['port']}"
    rest = Realtime(url=base, api_key=KEY)
    page = Page(base + "/console")
    try:
        page.wait_for("document.readyState === 'complete' && !!window.consoleApp")
        # Mint a token with the key entered in the page, connect, subscribe.
        page.evaluate(f"""(() => {{
            document.getElementById('apikey').value = {json.dumps(KEY)};
            document.getElementById('clientid').value = 'browser';
            document.getElementById('channel').value = 'live-demo';
            document.getElementById('connect').click();
        }})()""")
        page.wait_for("document.getElementById('state').textContent === 'connected'")
        page.evaluate("document.getElementById('subscribe').click()")
        page.wait_for("[...document.querySelectorAll('#log div')].some(d => d.textContent.includes('live-demo subscribed'))")

        # A message published by the backend shows up in the page.
        rest.publish("live-demo", "greeting", {"text": "hello from python"})
        page.wait_for("document.getElementById('log').textContent.includes('hello from python')")

        # A member entering from another connection is listed.
        t = rest.token.issue(client_id="carol", channels=["live-demo"])
        ws = WebSocket(t["endpoint"] + "?token=" + t["token"])
        ws.next("connected")
        ws.send({"op": "presence.enter", "ref": 1, "channel": "live-demo", "data": {"mood": "curious"}})
        ws.next("ack")
        page.wait_for("[...document.querySelectorAll('#members li')].some(li => li.dataset.clientId === 'carol')")
        ws.close()

        # The node restarts (drain closes with 1012); the page reconnects and resubscribes.
        own_node["proc"].terminate()
        own_node["proc"].wait(timeout=15)
        page.wait_for("document.getElementById('state').textContent !== 'connected'")
        own_node["proc"] = start_gateway(own_node["port"])
        page.wait_for("document.getElementById('state').textContent === 'connected'", timeout=40)
        page.wait_for("window.consoleApp.channels.get('live-demo').state === 'subscribed'")
        rest.publish("live-demo", "greeting", {"text": "after the restart"})
        page.wait_for("document.getElementById('log').textContent.includes('after the restart')")
    finally:
        page.close()


def test_the_client_module_and_its_types_are_served(gateway):
    js = urllib.request.urlopen(gateway + "/v1/realtime/client.js")
    assert js.headers["Content-Type"].startswith("text/javascript")
    body = js.read().decode()
    assert "export class RealtimeClient" in body and "export class RealtimeChannel" in body
    types = urllib.request.urlopen(gateway + "/v1/realtime/client.d.ts").read().decode()
    assert "enterPresence(data?: unknown)" in types
