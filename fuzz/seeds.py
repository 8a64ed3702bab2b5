#!/usr/bin/env python3
"""Writes the committed seed corpora of the SwiftPM fuzz targets (frame, rest, deflate, token)
into fuzz/corpus/<target>/. Run again after changing a seed; the files are committed."""
import base64, hashlib, hmac, json, os, struct, zlib

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")
SECRET = b"fuzz-token-secret-0123456789abcdef0123"  # as in fuzz/Sources/realtime-fuzz/Targets.swift


def write(target, name, data):
    os.makedirs(os.path.join(ROOT, target), exist_ok=True)
    with open(os.path.join(ROOT, target, name), "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())


frames = {
    "auth": '{"op":"auth","token":"abc.def.ghi","ref":"1"}',
    "subscribe": '{"op":"subscribe","channel":"orders:eu","since_id":"1700000000000-3","ref":"s"}',
    "publish": '{"op":"publish","channel":"chat","event":"msg","data":{"text":"hi","n":[1,2.5,-3e2,true,null]},"idempotency_key":"k1","ref":7}',
    "presence": '{"op":"presence.enter","channel":"room","data":{"status":"online"}}',
    "history": '{"op":"history","channel":"chat","limit":50,"direction":"forwards","since_id":"0-0"}',
    "typed-wrong": '{"op":"history","channel":"chat","limit":"ten","ref":"r"}',
    "trailing-comma": '{"op":"ping","ref":"x",}',
    "unicode": '{"op":"publish","channel":"c","event":"\\u00e9","data":"\\ud83d\\ude00"}',
}
for name, text in frames.items():
    write("frame", name, text)

rest = {
    "token": (0, '{"client_id":"alice","user_id":"u1","channels":["chat:*"],"capabilities":{"orders:*":["subscribe","presence"]},"ttl_seconds":600}'),
    "channel": (1, '{"name":"orders:eu","type":"presence","history_size":100,"history_ttl_seconds":3600}'),
    "publish": (2, '{"channel":"orders:eu","event":"created","data":{"id":1},"idempotency_key":"abc"}'),
    "batch": (3, '{"messages":[{"channel":"a","event":"e","data":1},{"channel":"b","event":"e"},7]}'),
    "key": (4, '{"name":"backend","scopes":["publish","tokens"]}'),
}
for name, (selector, body) in rest.items():
    write("rest", name, bytes([selector]) + body.encode())


def deflate(raw):
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    out = c.compress(raw) + c.flush(zlib.Z_SYNC_FLUSH)
    return out[:-4]  # RFC 7692: the empty block's tail is removed


def client_frame(payload, opcode=1, rsv1=False, fin=True):
    key = b"\x01\x02\x03\x04"
    head = bytes([(0x80 if fin else 0) | (0x40 if rsv1 else 0) | opcode])
    n = len(payload)
    head += bytes([0x80 | n]) if n < 126 else bytes([0x80 | 126]) + struct.pack(">H", n)
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


msg = b'{"op":"publish","channel":"c","event":"e","data":"' + b"a" * 300 + b'"}'
write("deflate", "frame-compressed", b"\x00" + client_frame(deflate(msg), rsv1=True))
half = deflate(msg)
write("deflate", "frames-fragmented", b"\x00" + client_frame(half[:10], rsv1=True, fin=False) + client_frame(half[10:], opcode=0))
write("deflate", "frame-plain", b"\x00" + client_frame(b'{"op":"ping"}'))
write("deflate", "raw-deflate", b"\x01" + deflate(b"hello " * 200))
write("deflate", "offer", b"\x02" + b"permessage-deflate; client_max_window_bits; server_no_context_takeover")


def b64(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=")


def token(header, payload):
    signing = b64(header) + b"." + b64(payload)
    return signing + b"." + b64(hmac.new(SECRET, signing, hashlib.sha256).digest())


claims = json.dumps({"sub": "alice", "uid": "u1", "cap": {"chat:*": ["subscribe", "publish"]},
                     "iat": 1800000000, "exp": 1800003600, "jti": "t1"}).encode()
header = b'{"alg":"HS256","typ":"JWT","kid":"f1"}'
write("token", "valid", b"\x00" + token(header, claims))
write("token", "alg-none", b"\x00" + b64(b'{"alg":"none"}') + b"." + b64(claims) + b".")
write("token", "claims", b"\x01" + claims)
write("token", "claims-huge-exp", b"\x01" + claims.replace(b"1800003600", b"9300000000000000"))
write("token", "header-and-claims", b"\x02" + header + b"\n" + claims)
write("token", "nbf", b"\x02" + header + b"\n" + claims.replace(b'"jti"', b'"nbf":1800000100,"jti"'))
