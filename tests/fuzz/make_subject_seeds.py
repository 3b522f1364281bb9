#!/usr/bin/python3
"""Writes the fuzz_subject seed corpus: the topics, filters and subjects of
tests/unit/test_cluster_subject.c's tables. Input format (fuzz_subject.c):
one byte choosing the prefix ("", "wisp", "a.b"), then the topic, filter or
subject bytes.

Run from anywhere: /usr/bin/python3 tests/fuzz/make_subject_seeds.py
It rewrites tests/fuzz/corpus/subject/seed-* (other files are kept)."""
import glob
import os

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus", "subject")

SEEDS = [
    b"a", b"a/b/c", b"a.b/c", b"/a", b"a/", b"a//b", b"/", b"//", b".", b"a b", b"a\tb/c\nd",
    b"100%", b"a/*/b", b"a/>", b"a*b/c>", b"$SYS/x", "caf\u00e9".encode(), b"\x7f",
    b"a/+/c", b"#", b"a/#", b"+/#", b"/#", b"a.b/+",
    b"a//b.c", b"/.a", b"a./", b"a./.b", b"a%20b", b"a.%2A.b", b"a..b", b"%2a", b"%41",
    b"wisp.a.b", b"a.b.x./.",
]


def main():
    os.makedirs(OUT, exist_ok=True)
    for old in glob.glob(os.path.join(OUT, "seed-*")):
        os.remove(old)
    n = 0
    for s in SEEDS:
        for prefix in range(3):
            with open(os.path.join(OUT, "seed-%03d" % n), "wb") as f:
                f.write(bytes([prefix]) + s)
            n += 1


if __name__ == "__main__":
    main()
