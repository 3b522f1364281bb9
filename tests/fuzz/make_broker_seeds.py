#!/usr/bin/python3
"""Writes the fuzz_broker seed corpus: a few realistic sessions of up to four
clients (see fuzz_broker.c for the input format): QoS 0/1/2 between two
clients, a persistent session that comes back to its queued messages (also
across a broker restart), retained messages, a will on abrupt close, a
takeover, MQTT 5 and 3.1 clients, and packets cut across sends.

Run from anywhere: /usr/bin/python3 tests/fuzz/make_broker_seeds.py
It rewrites tests/fuzz/corpus/broker/ (seed-* files only; crash reproducers
committed there under other names are kept)."""
import os
import struct

from make_seeds import pkt, s  # the codec seeds' packet builders

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus", "broker")

# byte 0
FSYNC_NO, FSYNC_EVERYSEC, FSYNC_ALWAYS = 0, 1, 2
SMALL_INFLIGHT, SMALL_QUEUE, SMALL_PACKETS, TCP_READS = 4, 8, 16, 32


def connect(cid, clean=True, will=None, level=4, keepalive=60):
    flags = 0x02 if clean else 0
    payload = s(cid)
    if will:
        topic, msg, qos = will
        flags |= 0x04 | (qos << 3)
        payload += s(topic) + s(msg)
    name = "MQIsdp" if level == 3 else "MQTT"
    props = b"\x00" if level == 5 else b""
    return pkt(0x10, s(name) + bytes([level, flags]) + struct.pack(">H", keepalive) + props + payload)


def subscribe(pid, filt, qos, v5=False):
    return pkt(0x82, struct.pack(">H", pid) + (b"\x00" if v5 else b"") + s(filt) + bytes([qos]))


def unsubscribe(pid, filt):
    return pkt(0xA2, struct.pack(">H", pid) + s(filt))


def publish(topic, payload, qos=0, pid=0, retain=False, dup=False, v5=False):
    body = s(topic) + (struct.pack(">H", pid) if qos else b"") + (b"\x00" if v5 else b"") + payload
    return pkt(0x30 | (0x08 if dup else 0) | (qos << 1) | (1 if retain else 0), body)


def ack(kind, pid):
    return pkt(kind, struct.pack(">H", pid))


PUBACK, PUBREC, PUBREL, PUBCOMP = 0x40, 0x50, 0x62, 0x70
PINGREQ = b"\xc0\x00"
DISCONNECT = b"\xe0\x00"


# events
def send(slot, data):
    out = bytearray()
    while data:
        chunk, data = data[:255], data[255:]
        out += bytes([slot, len(chunk)]) + chunk
    return bytes(out)


def close(slot):
    return bytes([slot | 0x08])


def restart():
    return bytes([0x1C])


def seeds():
    yield "qos012", bytes([FSYNC_NO]) + b"".join([
        send(0, connect("pub")),
        send(1, connect("sub")),
        send(1, subscribe(1, "a/#", 2)),
        send(0, publish("a/b", b"zero")),
        send(0, publish("a/b", b"one", qos=1, pid=7)),
        send(1, ack(PUBACK, 1)),
        send(0, publish("a/b", b"two", qos=2, pid=8)),
        send(1, ack(PUBREC, 2)),
        send(1, ack(PUBCOMP, 2)),
        send(0, ack(PUBREL, 8)),
        send(0, PINGREQ),
        send(1, unsubscribe(2, "a/#")),
        send(0, DISCONNECT),
    ])
    yield "persistent-queue", bytes([FSYNC_EVERYSEC]) + b"".join([
        send(0, connect("s", clean=False)),
        send(0, subscribe(1, "q/+", 1)),
        send(0, DISCONNECT),
        send(1, connect("pub")),
        send(1, publish("q/1", b"while away", qos=1, pid=1)),
        send(1, publish("q/2", b"and this", qos=2, pid=2)),
        send(1, ack(PUBREL, 2)),
        send(0, connect("s", clean=False)),
        send(0, ack(PUBACK, 1)),
        send(0, ack(PUBACK, 2)),
    ])
    yield "restart", bytes([FSYNC_ALWAYS]) + b"".join([
        send(0, connect("s", clean=False)),
        send(0, subscribe(1, "q/#", 2)),
        close(0),
        send(1, connect("pub", clean=False)),
        send(1, publish("r/t", b"retained", qos=1, pid=3, retain=True)),
        send(1, publish("q/x", b"queued", qos=2, pid=4)),
        restart(),
        send(1, connect("pub", clean=False)),
        send(1, ack(PUBREL, 4)),
        send(0, connect("s", clean=False)),
        send(0, ack(PUBREC, 1)),
        send(0, ack(PUBCOMP, 1)),
        send(2, connect("late")),
        send(2, subscribe(1, "r/#", 1)),
        send(2, ack(PUBACK, 1)),
    ])
    yield "will", bytes([FSYNC_NO]) + b"".join([
        send(0, connect("watch", clean=False)),
        send(0, subscribe(1, "w/#", 1)),
        send(1, connect("w", will=("w/gone", b"bye", 1))),
        close(1),
        send(0, ack(PUBACK, 1)),
        send(2, connect("w2", will=("w/gone", b"bye2", 0))),
        send(2, DISCONNECT),
    ])
    yield "takeover", bytes([FSYNC_NO | SMALL_INFLIGHT]) + b"".join([
        send(0, connect("dup", clean=False)),
        send(0, subscribe(1, "t", 1)),
        send(2, connect("pub")),
        send(2, publish("t", b"1", qos=1, pid=1)),
        send(2, publish("t", b"2", qos=1, pid=2)),
        send(2, publish("t", b"3", qos=1, pid=3)),
        send(1, connect("dup", clean=False)),
        send(1, ack(PUBACK, 1)),
        send(1, ack(PUBACK, 2)),
        send(1, ack(PUBACK, 3)),
    ])
    yield "v5-and-v31", bytes([FSYNC_NO | SMALL_PACKETS]) + b"".join([
        send(0, connect("v5", level=5)),
        send(0, subscribe(1, "x/+", 1, v5=True)),
        send(1, connect("v31", level=3)),
        send(1, subscribe(1, "x/#", 2)),
        send(1, publish("x/y", b"from 3.1", qos=1, pid=9)),
        send(0, publish("x/z", b"from v5", qos=1, pid=10, v5=True)),
        send(0, ack(PUBACK, 1)),
        send(1, ack(PUBACK, 1)),
    ])
    # Shared subscriptions: round-robin, a member leaving with unacked
    # messages (close, then UNSUBSCRIBE), membership across a restart.
    yield "shared", bytes([FSYNC_NO]) + b"".join([
        send(0, connect("ma", clean=False)),
        send(0, subscribe(1, "$share/g/s/#", 1)),
        send(1, connect("mb", clean=False)),
        send(1, subscribe(1, "$share/g/s/#", 1, v5=False)),
        send(2, connect("pub")),
        send(2, publish("s/1", b"one", qos=1, pid=1)),
        send(2, publish("s/2", b"two", qos=1, pid=2)),
        close(0),
        send(1, ack(PUBACK, 1)),
        restart(),
        send(0, connect("ma", clean=False)),
        send(1, connect("mb", clean=False)),
        send(2, connect("pub")),
        send(2, publish("s/3", b"three", qos=1, pid=3)),
        send(0, unsubscribe(2, "$share/g/s/#")),
        send(1, ack(PUBACK, 2)),
    ])
    # One stream cut at awkward places: a packet split over sends, and
    # several packets in one send.
    stream = (connect("cut", clean=False) + subscribe(1, "c", 1) + publish("c", b"self", qos=1, pid=5)
              + ack(PUBACK, 1) + PINGREQ)
    cut = b"".join(send(3, stream[i:i + 5]) for i in range(0, len(stream), 5))
    yield "split", bytes([FSYNC_NO | SMALL_QUEUE]) + cut
    # The same with reads as TCP makes them: several packets per read.
    yield "split-tcp", bytes([FSYNC_EVERYSEC | TCP_READS]) + cut
    yield "burst-tcp", bytes([FSYNC_NO | TCP_READS]) + b"".join([
        send(1, connect("sub", clean=False) + subscribe(1, "#", 2)),
        send(0, connect("pub") + b"".join(publish("b/%d" % i, b"x" * i, qos=i % 3, pid=i + 1) for i in range(6))),
        send(1, ack(PUBACK, 1) + ack(PUBREC, 2) + ack(PUBCOMP, 2) + ack(PUBACK, 3)),
        send(0, ack(PUBREL, 3) + ack(PUBREL, 6) + DISCONNECT),
    ])


def main():
    os.makedirs(OUT, exist_ok=True)
    for name in os.listdir(OUT):
        if name.startswith("seed-"):
            os.unlink(os.path.join(OUT, name))
    for name, data in seeds():
        with open(os.path.join(OUT, "seed-" + name), "wb") as f:
            f.write(data)


if __name__ == "__main__":
    main()
