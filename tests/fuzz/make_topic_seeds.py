#!/usr/bin/python3
"""Writes the fuzz_topic seed corpus: small programs for fuzz_topic.c's
interpreter covering the MQTT 3.1.1 section 4.7 examples, unsubscribe and
pruning, retained set/replace/delete and matching, injected allocation
failures, and raw (partly invalid) strings.

Input format (see fuzz_topic.c): a sequence of operations, each an opcode
byte (value % 6: 0 subscribe, 1 unsubscribe, 2 publish, 3 retain,
4 retained match, 5 validate; bit 7 injects an allocation failure) followed
by its operands. A topic operand is a head byte h: below 0x80, 1 + h % 6
levels follow, one byte each indexing fuzz_topic.c's LEVELS table; with bit
7 set, h & 0x3f raw bytes follow.

Run from anywhere: /usr/bin/python3 tests/fuzz/make_topic_seeds.py
It rewrites tests/fuzz/corpus/topic/seed-* (other files, such as committed
crash reproducers, are kept)."""
import glob
import os

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus", "topic")

# Indexes into LEVELS in fuzz_topic.c.
L = {"a": 0, "b": 1, "": 2, "+": 3, "#": 4, "$SYS": 5, "$": 6, "sport": 7, "ab": 8, "c/d": 9}
SUB, UNSUB, PUB, RET, RMATCH, VAL = 0, 1, 2, 3, 4, 5


def topic(*levels):
    return bytes([len(levels) - 1] + [L[x] for x in levels])


def raw(b):
    return bytes([0x80 | len(b)]) + b


def sub(t, slot, inject=None):
    op = SUB | (0x80 if inject else 0)
    return bytes([op]) + t + bytes([slot]) + (bytes([inject]) if inject else b"")


def unsub(slot):
    return bytes([UNSUB, slot])


def pub(t):
    return bytes([PUB]) + t


def ret(t, delete=False, inject=None):
    op = RET | (0x80 if inject else 0)
    return bytes([op]) + t + bytes([0 if delete else 1]) + (bytes([inject]) if inject else b"")


def rmatch(t):
    return bytes([RMATCH]) + t


NAMES = [topic("sport"), topic("sport", "a"), topic("sport", "a", "b"), topic("$SYS", "a"),
         topic("$SYS"), topic("", ""), topic("a", "b"), topic("a", "", "b"), topic("$"),
         topic("ab", "sport"), topic("c/d")]
FILTERS = [topic("sport", "#"), topic("sport", "+"), topic("#"), topic("+", "+"), topic("+"),
           topic("$SYS", "#"), topic("+", "#"), topic("", "+"), topic("a", "+", "b"),
           topic("$SYS", "+"), topic("sport"), topic("c/d", "+")]


def seeds():
    subscribe_all = b"".join(sub(f, i) for i, f in enumerate(FILTERS))
    publish_all = b"".join(pub(n) for n in NAMES)
    retain_all = b"".join(ret(n) for n in NAMES)
    match_all = b"".join(rmatch(f) for f in FILTERS)
    yield "spec-subscribe-publish", subscribe_all + publish_all
    yield "unsubscribe-prune", (subscribe_all + publish_all
                                + b"".join(unsub(i) for i in range(0, len(FILTERS), 2)) + publish_all
                                + b"".join(unsub(i) for i in range(len(FILTERS))) + publish_all)
    yield "retained-match", retain_all + match_all
    yield "retained-replace-delete", (retain_all + b"".join(ret(n) for n in NAMES[:5])
                                      + b"".join(ret(n, delete=True) for n in NAMES[::2]) + match_all)
    yield "oom-injection", (b"".join(sub(f, i, inject=i % 5 + 1) for i, f in enumerate(FILTERS))
                            + b"".join(ret(n, inject=i % 4 + 1) for i, n in enumerate(NAMES))
                            + b"".join(pub(n) + rmatch(f) for n, f in zip(NAMES, FILTERS)))
    yield "raw-strings", b"".join([
        bytes([VAL]) + raw(b"a/#/b") + raw(b"a+"), sub(raw(b"x//y"), 3), pub(raw(b"x//y")),
        sub(raw(b"#"), 4), pub(raw(b"$x")), ret(raw(b"/")), rmatch(raw(b"+/+")), rmatch(raw(b"#")),
        bytes([VAL]) + raw(b"") + raw(b"\x00/\xff")])
    yield "one-filter-many-subscribers", (b"".join(sub(topic("a", "+"), i) for i in range(20))
                                          + pub(topic("a", "b"))
                                          + b"".join(unsub(i) for i in range(0, 20, 3))
                                          + pub(topic("a", "b")))


def main():
    os.makedirs(OUT, exist_ok=True)
    for old in glob.glob(os.path.join(OUT, "seed-*")):
        os.remove(old)
    for name, data in seeds():
        with open(os.path.join(OUT, "seed-" + name), "wb") as f:
            f.write(data)


if __name__ == "__main__":
    main()
