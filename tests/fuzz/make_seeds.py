#!/usr/bin/python3
"""Writes the fuzz_codec seed corpus: one valid packet of every type for
MQTT 3.1.1 and 5.0 (CONNECT also for 3.1), a few multi-packet streams, and
malformed inputs. Each file starts with fuzz_codec's selector byte
(bits 0-1: 0 = 3.1.1, 1 = 5, 2 = 3.1, 3 = before CONNECT; bits 2-4 pick a
max_packet_size, 0 = protocol maximum) followed by the packet bytes.

Run from anywhere: /usr/bin/python3 tests/fuzz/make_seeds.py
It rewrites tests/fuzz/corpus/codec/ (seed-* files only; crash reproducers
committed there under other names are kept)."""
import os
import struct

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus", "codec")
V311, V5, V31, V0 = 0, 1, 2, 3


def varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def s(x):
    if isinstance(x, str):
        x = x.encode()
    return struct.pack(">H", len(x)) + x


def pkt(byte0, body):
    return bytes([byte0]) + varint(len(body)) + body


def props(*items):
    block = b"".join(items)
    return varint(len(block)) + block


def p8(i, v):
    return bytes([i, v])


def p16(i, v):
    return bytes([i]) + struct.pack(">H", v)


def p32(i, v):
    return bytes([i]) + struct.pack(">I", v)


def pstr(i, v):
    return bytes([i]) + s(v)


def pvar(i, v):
    return bytes([i]) + varint(v)


def user(k, v):
    return b"\x26" + s(k) + s(v)


def connect(level, flags, cid, keepalive=60, cprops=b"", will=None, user_=None, pw=None, wprops=b""):
    name = b"MQIsdp" if level == 3 else b"MQTT"
    body = s(name) + bytes([level, flags]) + struct.pack(">H", keepalive)
    if level == 5:
        body += props(cprops)
    body += s(cid)
    if will:
        if level == 5:
            body += props(wprops)
        body += s(will[0]) + s(will[1])
    if user_ is not None:
        body += s(user_)
    if pw is not None:
        body += s(pw)
    return pkt(0x10, body)


def seeds():
    out = {}
    # 3.1 and 3.1.1
    out["v31-connect"] = (V0, connect(3, 0xC2, "abc", user_="u", pw=b"p"))
    out["v311-connect"] = (V0, connect(4, 0x02, "c1"))
    out["v311-connect-will"] = (V0, connect(4, 0x2E | 0xC0, "c2", will=("w/t", b"bye"), user_="u", pw=b"\x00pw"))
    out["v311-connack"] = (V311, pkt(0x20, b"\x01\x00"))
    out["v311-publish-q0"] = (V311, pkt(0x30, s("a/b") + b"hello"))
    out["v311-publish-q1"] = (V311, pkt(0x3B, s("a/b") + b"\x00\x0a" + b"x"))
    out["v311-publish-q2"] = (V311, pkt(0x34, s("s/\xe2\x82\xac") + b"\xff\xff" + b"\x00\x01"))
    out["v311-puback"] = (V311, pkt(0x40, b"\x00\x01"))
    out["v311-pubrec"] = (V311, pkt(0x50, b"\x00\x02"))
    out["v311-pubrel"] = (V311, pkt(0x62, b"\x00\x03"))
    out["v311-pubcomp"] = (V311, pkt(0x70, b"\x00\x04"))
    out["v311-subscribe"] = (V311, pkt(0x82, b"\x00\x05" + s("a/+") + b"\x01" + s("#") + b"\x02"))
    out["v311-suback"] = (V311, pkt(0x90, b"\x00\x05\x00\x01\x02\x80"))
    out["v311-unsubscribe"] = (V311, pkt(0xA2, b"\x00\x06" + s("a/+") + s("#")))
    out["v311-unsuback"] = (V311, pkt(0xB0, b"\x00\x06"))
    out["v311-pingreq"] = (V311, b"\xc0\x00")
    out["v311-pingresp"] = (V311, b"\xd0\x00")
    out["v311-disconnect"] = (V311, b"\xe0\x00")
    # 5.0
    cprops = (p32(0x11, 3600) + p16(0x21, 20) + p32(0x27, 65536) + p16(0x22, 5) + p8(0x19, 1) +
              p8(0x17, 1) + user("a", "b") + pstr(0x15, "SCRAM") + pstr(0x16, b"\x01"))
    wprops = (p32(0x18, 10) + p8(0x01, 1) + p32(0x02, 60) + pstr(0x03, "text/plain") +
              pstr(0x08, "r/t") + pstr(0x09, b"\x00\xff") + user("k", "v"))
    out["v5-connect"] = (V0, connect(5, 0x02, ""))
    out["v5-connect-props"] = (V0, connect(5, 0x36 | 0x40, "dev", cprops=cprops, will=("w", b"\x00"),
                                           wprops=wprops, pw=b"secret"))
    aprops = (p32(0x11, 0) + p16(0x21, 100) + p8(0x24, 1) + p8(0x25, 1) + p32(0x27, 1024) +
              pstr(0x12, "auto-1") + p16(0x22, 10) + pstr(0x1F, "ok") + user("x", "") + p8(0x28, 1) +
              p8(0x29, 1) + p8(0x2A, 0) + p16(0x13, 120) + pstr(0x1A, "resp/") + pstr(0x1C, "o:1") +
              pstr(0x15, "m") + pstr(0x16, b""))
    out["v5-connack"] = (V5, pkt(0x20, b"\x00\x00" + props()))
    out["v5-connack-props"] = (V5, pkt(0x20, b"\x01\x00" + props(aprops)))
    pprops = (p8(0x01, 1) + p32(0x02, 100) + pstr(0x03, "json") + pstr(0x08, "resp") +
              pstr(0x09, b"\x00\x01") + pvar(0x0B, 268435455) + pvar(0x0B, 9) + p16(0x23, 4) +
              user("k1", "v1") + user("k1", "v2"))
    out["v5-publish-q0"] = (V5, pkt(0x30, s("a") + props() + b"p"))
    out["v5-publish-props"] = (V5, pkt(0x32, s("sensors/1") + b"\x00\x4d" + props(pprops) + b'{"t":21}'))
    out["v5-publish-alias"] = (V5, pkt(0x35, s("") + b"\x00\x02" + props(p16(0x23, 7)) + b"z"))
    for name, b0 in (("puback", 0x40), ("pubrec", 0x50), ("pubrel", 0x62), ("pubcomp", 0x70)):
        out["v5-%s" % name] = (V5, pkt(b0, b"\x00\x01"))
        out["v5-%s-reason" % name] = (V5, pkt(b0, b"\x00\x02\x10"))
        out["v5-%s-props" % name] = (V5, pkt(b0, b"\x00\x03\x80" + props(pstr(0x1F, "no"), user("k", "v"))))
    out["v5-subscribe"] = (V5, pkt(0x82, b"\x00\x09" + props(pvar(0x0B, 42), user("u", "p")) +
                                   s("s/#") + b"\x2e" + s("x") + b"\x10"))
    out["v5-suback"] = (V5, pkt(0x90, b"\x00\x09" + props(pstr(0x1F, "partial")) + b"\x00\x01\x02\x80\x87"))
    out["v5-unsubscribe"] = (V5, pkt(0xA2, b"\x00\x08" + props(user("k", "v")) + s("a/#")))
    out["v5-unsuback"] = (V5, pkt(0xB0, b"\x00\x08" + props() + b"\x00\x11"))
    out["v5-pingreq"] = (V5, b"\xc0\x00")
    out["v5-pingresp"] = (V5, b"\xd0\x00")
    out["v5-disconnect"] = (V5, b"\xe0\x00")
    out["v5-disconnect-reason"] = (V5, b"\xe0\x01\x04")
    out["v5-disconnect-props"] = (V5, pkt(0xE0, b"\x8e" + props(p32(0x11, 0), pstr(0x1F, "bye"), pstr(0x1C, "b:1"))))
    out["v5-auth"] = (V5, b"\xf0\x00")
    out["v5-auth-props"] = (V5, pkt(0xF0, b"\x18" + props(pstr(0x15, "SCRAM"), pstr(0x16, b"\x00\x01"))))
    # Streams: a connection's worth of packets back to back.
    out["stream-v311"] = (V0, connect(4, 0x02, "c") + pkt(0x82, b"\x00\x01" + s("#") + b"\x01") +
                          pkt(0x32, s("t") + b"\x00\x02" + b"m") + b"\xc0\x00" + b"\xe0\x00")
    out["stream-v5"] = (V0, connect(5, 0x02, "c") + pkt(0x82, b"\x00\x01" + props() + s("#") + b"\x01") +
                        pkt(0x30, s("t") + props(p16(0x23, 1)) + b"m") + b"\xe0\x00")
    # Boundaries and limits
    out["v311-publish-rl128"] = (V311, pkt(0x30, s("t") + b"x" * 125))
    out["v311-publish-max64"] = ((3 << 2) | V311, pkt(0x30, s("t") + b"x" * 70))
    # Malformed
    out["bad-varint-overlong"] = (V311, b"\x30\x80\x00")
    out["bad-varint-5th"] = (V311, b"\x30\xff\xff\xff\xff\x01")
    out["bad-flags-pubrel"] = (V311, pkt(0x60, b"\x00\x01"))
    out["bad-qos3"] = (V311, pkt(0x36, s("a") + b"\x00\x01"))
    out["bad-connect-level"] = (V0, connect(4, 0x02, "c1").replace(b"MQTT\x04", b"MQTT\x06"))
    out["bad-connect-reserved"] = (V0, connect(4, 0x03, "c1"))
    out["bad-utf8-surrogate"] = (V311, pkt(0x30, s(b"\xed\xa0\x80")))
    out["bad-subscribe-empty"] = (V311, pkt(0x82, b"\x00\x01"))
    out["bad-props-dup"] = (V5, pkt(0x30, s("a") + props(p16(0x23, 1), p16(0x23, 2))))
    out["bad-trailing"] = (V311, pkt(0x40, b"\x00\x01\x00"))
    return out


def main():
    os.makedirs(OUT, exist_ok=True)
    for f in os.listdir(OUT):
        if f.startswith("seed-"):
            os.remove(os.path.join(OUT, f))
    for name, (sel, data) in sorted(seeds().items()):
        with open(os.path.join(OUT, "seed-" + name), "wb") as fh:
            fh.write(bytes([sel]) + data)
    print("wrote %d seeds to %s" % (len(seeds()), OUT))


if __name__ == "__main__":
    main()
