#!/usr/bin/python3
"""Writes the seed corpora of fuzz_http (corpus/http) and fuzz_ws (corpus/ws).

fuzz_http input: [piece size][limits] + request bytes.
fuzz_ws input: [read chunk / write size][flags] + client bytes; flags bit 0
puts a valid upgrade request ahead of the bytes, bit 1 one frame per
message, bit 2 max_frame_size 64, bit 3 path /mqtt, bit 4 trust_proxy,
bit 5 7-byte reads (see the targets' comments).
"""
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
KEY = b"dGhlIHNhbXBsZSBub25jZQ=="
UPGRADE = (b"GET /mqtt HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
           b"Sec-WebSocket-Key: " + KEY + b"\r\nSec-WebSocket-Version: 13\r\n"
           b"Sec-WebSocket-Protocol: mqtt\r\nX-Forwarded-For: 10.1.2.3\r\n\r\n")


def frame(op, payload, fin=True, mask=True):
    head = bytes([(0x80 if fin else 0) | op])
    n = len(payload)
    m = 0x80 if mask else 0
    if n < 126:
        head += bytes([m | n])
    elif n < 65536:
        head += bytes([m | 126]) + struct.pack(">H", n)
    else:
        head += bytes([m | 127]) + struct.pack(">Q", n)
    if not mask:
        return head + payload
    key = b"\x01\x02\x03\x04"
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


CONNECT = bytes.fromhex("101000044d5154540402003c0004746573740000")[:18]
PUBLISH = b"\x30\x08\x00\x03a/bxyz"

HTTP = {
    "upgrade": UPGRADE,
    "upgrade-pipelined": UPGRADE + frame(2, CONNECT),
    "plain-get": b"GET /metrics HTTP/1.1\r\nHost: h\r\n\r\n",
    "post-body": b"POST /api HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\nabc",
    "repeated": b"GET / HTTP/1.1\r\nConnection: a\r\nConnection: b\r\nHost: x\r\nHost: y\r\n\r\n",
    "absolute": b"GET http://u:p@h:1/p?q#f HTTP/1.1\r\n\r\n",
    "http10": b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
    "connect": b"CONNECT h:443 HTTP/1.1\r\n\r\n",
    "no-colon": b"GET / HTTP/1.1\r\nHost h\r\n\r\n",
    "lf-only": b"GET / HTTP/1.1\nHost: h\n\n",
    "big": b"GET /" + b"a" * 300 + b" HTTP/1.1\r\n" + b"X: " + b"b" * 500 + b"\r\n\r\n",
    "many": b"GET / HTTP/1.1\r\n" + b"".join(b"H%d: v\r\n" % i for i in range(20)) + b"\r\n",
    "mqtt": CONNECT,
    "tls": bytes.fromhex("160301020001000200030300"),
}

WS = {
    "frames": (0, 1, frame(2, CONNECT) + frame(2, PUBLISH * 3)),
    "split-message": (3, 1, frame(2, PUBLISH[:3], fin=False) + frame(9, b"p") + frame(0, PUBLISH[3:])),
    "ping-close": (255, 1, frame(9, b"hello") + frame(10, b"") + frame(8, b"\x03\xe8bye")),
    "unmasked": (16, 1, frame(2, PUBLISH, mask=False)),
    "text": (16, 1, frame(1, b"hi")),
    "fragmented-ping": (16, 1, frame(9, b"hi", fin=False)),
    "oversized": (64, 1 | 4, frame(2, b"z" * 100)),
    "long-lengths": (200, 1, frame(2, b"y" * 300) + frame(2, b"x" * 70000)[:200]),
    "bad-close": (16, 1, frame(8, b"\x03")),
    "per-message": (7, 1 | 2 | 32, frame(2, PUBLISH * 4)),
    "raw-upgrade": (9, 8 | 16, UPGRADE + frame(2, PUBLISH)),
    "raw-garbage": (1, 0, b"GET / HTTP/1.1\r\nHost: h\r\n\r\n"),
    # The parser in the reader's buffer (net/ws.c), against wslay's.
    "unaligned": (255, 1, frame(2, bytes(range(37))) + frame(2, bytes(range(200, 255)) * 5)
                  + frame(2, b"") + frame(2, b"q" * 1000)),
    "unaligned-bytewise": (0, 1 | 64, frame(2, bytes(range(37))) + frame(9, b"p") + frame(2, b"r" * 130)),
    "short-reads": (3, 1 | 64, frame(2, PUBLISH, fin=False) + frame(10, b"x")
                    + frame(0, PUBLISH * 20, fin=False) + frame(0, PUBLISH)),
    "len16-not-minimal": (16, 1, bytes([0x82, 0xfe, 0x00, 0x05]) + b"\0\0\0\0" + b"abcde"),
    "len64-not-minimal": (16, 1, bytes([0x82, 0xff]) + (300).to_bytes(8, "big") + b"\0\0\0\0" + b"a" * 300),
    "len64-top-bit": (16, 1, frame(2, PUBLISH) + bytes([0x82, 0xff, 0x80] + [0] * 7)),
    "len64-cut-at-key": (16, 1, bytes([0x82, 0xff, 0, 0, 0, 0, 0, 0, 0, 1])),
    "rsv": (16, 1, bytes([0xc2]) + frame(2, b"abc")[1:]),
    "reserved-opcode": (16, 1, frame(3, b"abc")),
    "reserved-control": (16, 1, frame(0xb, b"abc")),
    "control-126": (16, 1, frame(9, b"a" * 126)),
    "orphan-continuation": (16, 1, frame(0, b"abc")),
    "message-in-message": (16, 1, frame(2, b"abc", fin=False) + frame(2, b"def")),
    "close-1005": (16, 1, frame(2, PUBLISH) + frame(8, b"") + frame(2, PUBLISH)),
    "close-after-data": (5, 1 | 32, frame(2, PUBLISH * 2) + frame(8, b"\x0f\xa0") + frame(2, b"z")),
    "close-reserved-code": (16, 1, frame(8, b"\x03\xec")),
    "header-only": (16, 1 | 4, frame(2, PUBLISH) + frame(2, b"z" * 100)[:6]),
}


def write(dirname, name, data):
    d = os.path.join(HERE, "corpus", dirname)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "seed-" + name), "wb") as f:
        f.write(data)


for name, req in HTTP.items():
    write("http", name, bytes([0, 0x7f]) + req)
    write("http", name + "-bytewise", bytes([1, 0x3f]) + req)
    write("http", name + "-tight", bytes([5, 0x82]) + req)
for name, (chunk, flags, payload) in WS.items():
    write("ws", name, bytes([chunk, flags]) + payload)
