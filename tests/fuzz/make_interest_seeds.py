#!/usr/bin/python3
"""Writes the fuzz_interest seed corpus: sequences of interest
announcements as tests/unit/test_cluster_interest_bounds.c and e2e 34 send
them, good and malformed. Input format (fuzz_interest.c): a byte choosing
the limits, then records: a byte of header-presence bits (node, run, seq,
kind, part, last, to, every), each present header as a length byte and its
bytes, a little-endian 16-bit payload length and the payload.

Run from anywhere: /usr/bin/python3 tests/fuzz/make_interest_seeds.py
It rewrites tests/fuzz/corpus/interest/seed-* (other files are kept)."""
import glob
import os
import struct

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus", "interest")
FIELDS = ("node", "run", "seq", "kind", "part", "last", "to", "every")


def record(payload=b"", **h):
    mask = 0
    body = b""
    for i, name in enumerate(FIELDS):
        if name in h:
            mask |= 1 << i
            v = h[name].encode() if isinstance(h[name], str) else h[name]
            body += bytes([len(v)]) + v
    return bytes([mask]) + body + struct.pack("<H", len(payload)) + payload


def ann(kind, seq, payload=b"", **h):
    return record(payload, node=h.pop("node", "b"), run=h.pop("run", "00000000000000ab"), seq=str(seq),
                  kind=kind, **h)


def adds(n, start=1, fmt="dev/%d/cmd"):
    return b"".join(ann("add", start + i, (fmt % i).encode()) for i in range(n))


SEEDS = {
    # limits byte: low nibble max_filters - 1, high bits max_bytes = 16 << k
    "within": bytes([0x4f]) + adds(8) + ann("del", 9, b"dev/3/cmd"),
    "over-by-count": bytes([0x73]) + adds(6) + ann("del", 7, b"dev/5/cmd") + ann("del", 8, b"dev/4/cmd")
    + ann("del", 9, b"dev/3/cmd"),
    "over-by-bytes": bytes([0x0f]) + adds(3, fmt="long/filter/%d"),
    "snap-fits": bytes([0x77]) + adds(10) + ann("snap", 11, b"a\0b/+\0$share/g/c/#\0", part="0", last="1"),
    "snap-parts": bytes([0x77]) + ann("hello", 1) + ann("snap", 2, b"a\0b\0", part="0")
    + ann("snap", 3, b"c\0d/#\0", part="1", last="1"),
    "snap-over-then-fits": bytes([0x72]) + ann("snap", 1, b"a\0b\0c\0d\0", part="0", last="1")
    + ann("snap", 2, b"a\0", part="0", last="1"),
    "control": bytes([0x7f]) + ann("beat", 0, every="2") + ann("sync", 1, to="a") + ann("hello", 1)
    + ann("bye", 2),
    "malformed": bytes([0x7f]) + record(b"t", node="b", run="1", seq="1a", kind="add")
    + record(b"a/#/b", node="b", run="1", seq="1", kind="add")
    + record(b"a\0b", node="b", run="1", seq="1", kind="snap", part="0")
    + record(b"", node="b\n", run="1", seq="1", kind="bye")
    + record(b"x", node="b", run="1", seq="1", kind="hello")
    + record(b"", node="b", run="1", seq="1", kind="beat", every="0")
    + record(b"", node="b", run="1", seq="99999999999999999999999", kind="bye"),
}


def main():
    os.makedirs(OUT, exist_ok=True)
    for old in glob.glob(os.path.join(OUT, "seed-*")):
        os.remove(old)
    for name, data in SEEDS.items():
        with open(os.path.join(OUT, "seed-" + name), "wb") as f:
            f.write(data)


if __name__ == "__main__":
    main()
