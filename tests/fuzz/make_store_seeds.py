#!/usr/bin/python3
"""Writes the fuzz_store seed corpus (format: docs/persistence.md; input
modes: fuzz_store.c). An independent encoder of the store format, so the
seeds also cross-check the C code.

  mode 0: whole files (valid log, snapshot, torn tail, damaged middle,
          bad magic, short header)
  mode 1: record lists [type][version][len][payload], framed by the target
  mode 2: as 1 plus a bit flip (bytes 1-2) and a cut (byte 3)

Run from anywhere: /usr/bin/python3 tests/fuzz/make_store_seeds.py
It rewrites tests/fuzz/corpus/store/seed-* (other files are kept)."""
import glob
import os
import struct

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus", "store")

POLY = 0x82F63B78
TABLE = []
for i in range(256):
    c = i
    for _ in range(8):
        c = (c >> 1) ^ POLY if c & 1 else c >> 1
    TABLE.append(c)


def crc32c(data, crc=0):
    crc ^= 0xFFFFFFFF
    for b in data:
        crc = (crc >> 8) ^ TABLE[(crc ^ b) & 0xFF]
    return crc ^ 0xFFFFFFFF


assert crc32c(b"123456789") == 0xE3069283


def s16(b):
    return struct.pack("<H", len(b)) + b


def b32(b):
    return struct.pack("<I", len(b)) + b


SESSION_V1 = s16(b"c1") + struct.pack("<BBHI", 4, 0, 1, 0)

# Record payloads, one per type (see record.h), as (type, payload) or
# (type, payload, record version); the version is 1 unless given.
PAYLOADS = [
    (1, struct.pack("<QQBB", 7, 0, 1, 1) + s16(b"a/b") + b32(b"") + b32(b"hi")),  # MSG_PUT
    (3, struct.pack("<Q", 7) + s16(b"a/b")),                                      # RETAIN_SET
    (4, s16(b"x")),                                                               # RETAIN_DEL
    (5, SESSION_V1),                                                              # SESSION_PUT, no owner
    (7, s16(b"c1") + s16(b"a/#") + struct.pack("<BI", 1, 0)),                     # SUB_ADD
    (8, s16(b"c1") + s16(b"a/#")),                                                # SUB_DEL
    (9, s16(b"c1") + struct.pack("<QBB", 7, 1, 0)),                               # QUEUE_ADD
    (11, s16(b"c1") + struct.pack("<QHBBB", 7, 1, 1, 1, 0)),                      # FLIGHT_SET
    (11, s16(b"c1") + struct.pack("<QHBBB", 0, 2, 3, 2, 0)),                      # FLIGHT_SET no msg
    (12, s16(b"c1") + struct.pack("<H", 1)),                                      # FLIGHT_DEL
    (13, s16(b"c1") + struct.pack("<H", 9)),                                      # QOS2_IN_ADD
    (14, s16(b"c1") + struct.pack("<H", 9)),                                      # QOS2_IN_DEL
    (10, s16(b"c1") + struct.pack("<Q", 7)),                                      # QUEUE_DEL
    (17, struct.pack("<Q", 7) + s16(b"a-0123-f1")),                               # FWD_ADD
    (18, struct.pack("<Q", 7)),                                                   # FWD_DEL
    (19, struct.pack("<QQ", 40, 42)),                                             # STREAM_TAKEN
    (20, s16(b"a/b") + s16(b"0123456789abcdef-1")),                             # RETAIN_UNSENT
    (21, s16(b"a/b")),                                                            # RETAIN_SENT
    (2, struct.pack("<Q", 7)),                                                    # MSG_DEL
    (6, s16(b"c1")),                                                              # SESSION_DEL
    (5, SESSION_V1 + b"\x01" + s16(b"alice"), 2),                                 # SESSION_PUT, user owner
    (5, SESSION_V1 + b"\x02" + s16(b""), 2),                                      # SESSION_PUT, anonymous owner
    (5, SESSION_V1 + b"\x01" + s16(b"alice") + struct.pack("<Q", 1764494000123456789), 3),  # SESSION_PUT, claim time
    (5, SESSION_V1 + b"\x00" + s16(b"") + struct.pack("<Q", 5), 3),               # claim time, no owner
    (19, struct.pack("<QQQ", 40, 43, 1764494000123456789), 2),                    # STREAM_TAKEN, time stamp
]

SALT = 0x1234


def header(magic, gen=1, salt=SALT):
    h = magic + struct.pack("<IIQI", 1, salt, gen, 0)
    return h + struct.pack("<I", crc32c(h))


def frame(rtype, payload, salt=SALT, version=1):
    h = struct.pack("<IBBH", len(payload), rtype, version, 0)
    return h + struct.pack("<II", crc32c(h, salt), crc32c(payload, salt)) + payload


def recs():
    """PAYLOADS as (type, version, payload)."""
    return [(r[0], r[2] if len(r) > 2 else 1, r[1]) for r in PAYLOADS]


def log_file(magic=b"WISP-LOG"):
    return header(magic) + b"".join(frame(t, p, version=v) for t, v, p in recs())


def main():
    os.makedirs(OUT, exist_ok=True)
    for old in glob.glob(os.path.join(OUT, "seed-*")):
        os.remove(old)
    seeds = {}
    good = log_file()
    seeds["file-log"] = b"\x00" + good
    seeds["file-snap"] = b"\x00" + log_file(b"WISPSNAP")
    seeds["file-torn-tail"] = b"\x00" + good[:-5]
    mid = bytearray(good)
    mid[32 + 60] ^= 0x10
    seeds["file-damaged-middle"] = b"\x00" + bytes(mid)
    seeds["file-bad-magic"] = b"\x00" + b"WISP-LOX" + good[8:]
    seeds["file-short-header"] = b"\x00" + good[:20]
    seeds["file-header-only"] = b"\x00" + header(b"WISP-LOG")
    seeds["file-unknown-type"] = b"\x00" + header(b"WISP-LOG") + frame(99 % 256, b"??") + frame(*PAYLOADS[2])
    seeds["file-newer-version"] = b"\x00" + header(b"WISP-LOG") + frame(4, s16(b"x"), version=2)
    seeds["file-wrong-gen"] = b"\x00" + header(b"WISP-LOG", gen=5)
    # SESSION_PUT versions: an owner under version 1, none under version 2
    # (owner 0), version 3 without its claim time or with time 0, an unknown
    # version 4: each refused, the rest kept.
    seeds["file-session-owner-forms"] = b"\x00" + header(b"WISP-LOG") + b"".join([
        frame(5, SESSION_V1 + b"\x01" + s16(b"alice")),
        frame(5, SESSION_V1 + b"\x00" + s16(b""), version=2),
        frame(5, SESSION_V1 + b"\x02" + s16(b"x"), version=2),
        frame(5, SESSION_V1 + b"\x01" + s16(b"a\x00b"), version=2),
        frame(5, SESSION_V1 + b"\x01" + s16(b"alice"), version=3),
        frame(5, SESSION_V1 + b"\x01" + s16(b"alice") + struct.pack("<Q", 0), version=3),
        frame(5, SESSION_V1 + b"\x01" + s16(b"alice") + struct.pack("<Q", 7), version=4),
        frame(5, SESSION_V1 + b"\x01" + s16(b"alice") + struct.pack("<Q", 7), version=3),
        frame(5, SESSION_V1 + b"\x01" + s16(b"alice"), version=2)])
    # STREAM_TAKEN versions: a time stamp under version 1, none or 0 under
    # version 2: each refused, the rest kept.
    seeds["file-stream-taken-forms"] = b"\x00" + header(b"WISP-LOG") + b"".join([
        frame(19, struct.pack("<QQQ", 40, 42, 9)),
        frame(19, struct.pack("<QQ", 40, 42), version=2),
        frame(19, struct.pack("<QQQ", 40, 42, 0), version=2),
        frame(19, struct.pack("<QQQ", 40, 42, 9), version=2),
        frame(19, struct.pack("<QQ", 40, 42))])
    for i, (t, v, p) in enumerate(recs()):
        seeds["rec-%02d-type%d" % (i, t) + ("-v%d" % v if v != 1 else "")] = b"\x01" + bytes([t, v, len(p)]) + p
    allrecs = b"".join(bytes([t, v, len(p)]) + p for t, v, p in recs())
    seeds["recs-all"] = b"\x01" + allrecs
    seeds["recs-all-flip"] = b"\x02\x01\x40\x00" + allrecs
    seeds["recs-all-cut"] = b"\x02\x00\x00\x07" + allrecs
    for name, data in seeds.items():
        with open(os.path.join(OUT, "seed-" + name), "wb") as f:
            f.write(data)
    print("wrote %d seeds to %s" % (len(seeds), OUT))


if __name__ == "__main__":
    main()
