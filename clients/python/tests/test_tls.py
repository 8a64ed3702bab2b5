"""HTTPS and WSS served by the node itself, with certificates made by this harness (openssl):
the Python clients publish over HTTPS and subscribe and resume over WSS, the browser client
runs from an https:// page, mutual TLS refuses REST calls without a client certificate,
SIGHUP swaps the certificate while a WSS client stays connected, and a bad certificate stops
the node naming the setting."""
import asyncio
import json
import os
import signal
import socket
import ssl
import subprocess
import tempfile
import urllib.request

import pytest

from conftest import KEY, gateway_binary, start_gateway, stop
from realtime_client import Realtime, RealtimeError
from realtime_client.aio import AsyncRealtime


def openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def issue(cwd, ca, name, cn, server):
    """A key and a certificate signed by `ca`, for 127.0.0.1/localhost when `server`."""
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-subj", f"/CN={cn}", "-out", f"{name}.csr", cwd=cwd)
    ext = os.path.join(cwd, f"{name}.ext")
    with open(ext, "w") as f:
        f.write("subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n" if server
                else "extendedKeyUsage=clientAuth\n")
    openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.crt", "-CAkey", f"{ca}.key", "-CAcreateserial",
            "-days", "2", "-sha256", "-extfile", ext, "-out", f"{name}.crt", cwd=cwd)
    return os.path.join(cwd, f"{name}.crt"), os.path.join(cwd, f"{name}.key")


@pytest.fixture(scope="module")
def pki():
    d = tempfile.mkdtemp(prefix="rt-tls-")
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-subj", "/CN=realtime test CA",
            "-days", "2", "-out", "ca.crt", cwd=d)
    server = issue(d, "ca", "server", "node-one", server=True)
    renewed = issue(d, "ca", "renewed", "node-renewed", server=True)
    client = issue(d, "ca", "client", "backend", server=False)
    return {"dir": d, "ca": os.path.join(d, "ca.crt"), "server": server, "renewed": renewed, "client": client}


def context(pki, client_certificate=False):
    ctx = ssl.create_default_context(cafile=pki["ca"])
    if client_certificate:
        ctx.load_cert_chain(*pki["client"])
    return ctx


def tls_node(pki, **settings):
    d = tempfile.mkdtemp(prefix="rt-tls-node-", dir=pki["dir"])
    cert, key = os.path.join(d, "node.crt"), os.path.join(d, "node.key")
    for src, dst in zip(pki["server"], (cert, key)):
        with open(src, "rb") as a, open(dst, "wb") as b:
            b.write(a.read())
    proc = start_gateway(REALTIME_TLS_CERT_FILE=cert, REALTIME_TLS_KEY_FILE=key, **settings)
    proc.cert, proc.key = cert, key
    return proc


def served_certificate_cn(url, pki):
    host, port = url.split("//", 1)[1].split(":")
    with socket.create_connection((host, int(port))) as raw:
        with context(pki).wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            subject = dict(x[0] for x in tls.getpeercert()["subject"])
            return subject["commonName"]


def test_https_publish_and_wss_subscribe_and_resume_with_the_python_clients(pki):
    node = tls_node(pki)
    try:
        assert node.url.startswith("https://")
        rest = Realtime(url=node.url, api_key=KEY, ssl=context(pki))
        token = rest.token.issue(client_id="tls", channels=["secure"])
        assert token["endpoint"].startswith("wss://")
        req = urllib.request.Request(node.url + "/healthz")
        with urllib.request.urlopen(req, context=context(pki)) as r:
            assert r.headers["Strict-Transport-Security"].startswith("max-age=")
        # A publish (answered below the router) carries it too.
        publish = urllib.request.Request(
            node.url + "/v1/realtime/publish", data=b'{"channel":"hsts","event":"e","data":1}',
            headers={"Authorization": "Bearer " + KEY, "Content-Type": "application/json"})
        with urllib.request.urlopen(publish, context=context(pki)) as r:
            assert r.status == 201 and r.headers["Strict-Transport-Security"].startswith("max-age=")
        # Plain HTTP on the TLS port gets no answer a client could take for one.
        with pytest.raises(Exception):
            urllib.request.urlopen(node.url.replace("https://", "http://") + "/healthz", timeout=5).read()

        async def scenario():
            async with AsyncRealtime(url=node.url, api_key=KEY, ssl=context(pki)) as realtime:
                async with realtime.connect(client_id="sub", capabilities={"secure": ["*"]},
                                            min_retry=0.05, max_retry=0.2) as conn:
                    assert conn.url.startswith("wss://")
                    channel = conn.channel("secure")
                    messages = channel.messages()
                    await channel.subscribe()
                    for i in range(3):
                        await realtime.publish("secure", "e", i)
                    got = [await asyncio.wait_for(messages.__anext__(), 20) for _ in range(3)]
                    conn._ws.transport.abort()
                    for i in range(3, 6):
                        rest.publish("secure", "e", i)
                    got += [await asyncio.wait_for(messages.__anext__(), 20) for _ in range(3)]
                    assert [m["data"] for m in got] == list(range(6))
                    assert channel.resumed is True
        asyncio.run(asyncio.wait_for(scenario(), 60))
    finally:
        stop(node)


def test_mutual_tls_refuses_rest_calls_without_a_client_certificate(pki):
    node = tls_node(pki, REALTIME_TLS_CLIENT_CA_FILE=pki["ca"])
    try:
        with pytest.raises(RealtimeError) as refused:
            Realtime(url=node.url, api_key=KEY, ssl=context(pki)).publish("m", "e", 1)
        assert refused.value.code == 40100 and refused.value.status == 401
        backend = Realtime(url=node.url, api_key=KEY, ssl=context(pki, client_certificate=True))
        assert backend.publish("m", "e", 1)["status"] == "published"
        token = backend.token.issue(client_id="browser", channels=["m"])

        # A WebSocket client has no certificate: its token is what authenticates it.
        async def subscribe():
            async with AsyncRealtime(url=node.url, api_key=KEY, ssl=context(pki)) as realtime:
                async with realtime.connect(token=token["token"]) as conn:
                    return (await conn.request("subscribe", channel="m"))["type"]
        assert asyncio.run(asyncio.wait_for(subscribe(), 30)) == "subscribed"
    finally:
        stop(node)


def test_sighup_reloads_the_certificate_while_a_wss_client_stays_connected(pki):
    node = tls_node(pki)
    try:
        assert served_certificate_cn(node.url, pki) == "node-one"

        async def scenario():
            async with AsyncRealtime(url=node.url, api_key=KEY, ssl=context(pki)) as realtime:
                async with realtime.connect(client_id="stay", capabilities={"reload": ["*"]}) as conn:
                    first = conn.connection_id
                    channel = conn.channel("reload")
                    messages = channel.messages()
                    await channel.subscribe()
                    for src, dst in zip(pki["renewed"], (node.cert, node.key)):
                        with open(src, "rb") as a, open(dst, "wb") as b:
                            b.write(a.read())
                    node.send_signal(signal.SIGHUP)
                    deadline = asyncio.get_running_loop().time() + 20
                    while await asyncio.to_thread(served_certificate_cn, node.url, pki) != "node-renewed":
                        assert asyncio.get_running_loop().time() < deadline, "certificate not reloaded"
                        await asyncio.sleep(0.1)
                    sent = await realtime.publish("reload", "e", 1)
                    got = await asyncio.wait_for(messages.__anext__(), 20)
                    assert got["id"] == sent["message_id"] and conn.connection_id == first
        asyncio.run(asyncio.wait_for(scenario(), 60))
        assert node.poll() is None
    finally:
        stop(node)


@pytest.mark.parametrize("setting", ["REALTIME_TLS_CERT_FILE", "REALTIME_TLS_KEY_FILE"])
def test_a_bad_certificate_or_key_stops_the_node_naming_the_setting(pki, setting):
    cert, key = pki["server"]
    bad = os.path.join(pki["dir"], "not-pem.txt")
    with open(bad, "w") as f:
        f.write("not a PEM file\n")
    env = {"PATH": os.environ.get("PATH", ""), "REALTIME_PORT": "0", "REALTIME_API_KEY": KEY,
           "REALTIME_TLS_CERT_FILE": cert, "REALTIME_TLS_KEY_FILE": key, setting: bad}
    done = subprocess.run([gateway_binary()], env=env, capture_output=True, text=True, timeout=30)
    assert done.returncode != 0
    assert setting in done.stdout + done.stderr


def test_the_browser_client_runs_from_an_https_page_over_wss(pki):
    from test_browser import CHROMIUM, Page
    if CHROMIUM is None:
        pytest.skip("chromium not installed")
    node = tls_node(pki)
    page = Page(node.url + "/console", extra_args=["--ignore-certificate-errors"])
    try:
        page.wait_loaded()
        rest = Realtime(url=node.url, api_key=KEY, ssl=context(pki))
        token = rest.token.issue(client_id="page", channels=["tls-page"])
        page.evaluate(f"""(async () => {{
            const {{ RealtimeChannel }} = await import('/v1/realtime/client.js');
            window.got = [];
            window.channel = new RealtimeChannel({{ channel: 'tls-page', token: {json.dumps(token["token"])} }});
            window.channel.on('message', (m) => window.got.push(m.data));
            await window.channel.subscribe();
        }})()""")
        assert page.evaluate("location.protocol") == "https:"
        rest.publish("tls-page", "e", {"n": 1})
        page.wait_for("window.got.length === 1")
        assert page.evaluate("window.got") == [{"n": 1}]
        page.evaluate("window.channel.close()")
    finally:
        page.close()
        stop(node)
