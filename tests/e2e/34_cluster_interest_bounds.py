#!/usr/bin/python3
# ctest: TIMEOUT 240
"""34 cluster interest bounds: what a node keeps of the other nodes'
announced filters is bounded (cluster.max_remote_filters,
max_remote_filter_bytes; issue 16, cluster/announce.h), and an
announcement no Wisp node writes is refused. Two Wisp nodes and one
nats-server on loopback; a raw NATS client (this file's RawNats: the NATS
text protocol over a socket) plays a node that floods.

What a user sees:
 - a real node whose subscriptions pass the other's bound still gets every
   message meant for its subscribers (the other node sends it everything:
   traffic, never a message), the episode counted and logged once, and
   the other node goes back to sending only what is wanted once the set
   shrank and its snapshot fitted;
 - a fake node flooding 20,000 adds of 2 KB filters leaves the node's RSS
   where it was (unbounded, it would keep 40 MB), counted and logged once,
   while an honest QoS 1 round trip across the nodes completes;
 - malformed announcements (junk numbers, invalid filters, oversized or
   unterminated snapshot parts, unknown kinds) are refused, counted, logged
   once.
 - a flood of "sync"s asking the node for its snapshot costs a snapshot a
   second, not one each.
 - while another node's snapshot comes in parts, the node sends everything
   (what it holds of that node's set is partial until the last part).
 - a flood of start-up directory requests ("which persistent sessions do
   you hold?", handover.c) from 300 made-up nodes gets whole answers for a
   few at a time (cluster/dir_answers.h), the rest refused, counted and
   logged, while an honest round trip completes; before, each was answered
   at once, a walk of every session and its answer queued unbounded.

nats-server must be installed (WISP_NATS_SERVER): a missing one fails the
test, never skips it."""

import os
import re
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from wisp_e2e import CONNACK, IO_TIMEOUT, connect_pkt, main  # noqa: E402
from wisp_cluster import PREFIX, SELECTIVE, ClusterCase, Node  # noqa: E402

WAIT = 20.0  # seconds any awaited cluster event may take
SUBJECT = "$WISP.%s.interest" % PREFIX
MAX_FILTERS = 50       # a's cluster.max_remote_filters
MAX_BYTES = 65535      # a's cluster.max_remote_filter_bytes (its minimum)
FLOOD = 20000          # fake adds
FLOOD_FILTER = 2000    # bytes each: 40 MB if kept
RSS_GROWTH_KIB = 12 * 1024  # ASan's 4 MiB quarantine and NATS's buffers fill; kept, the 19,000 filters would take 37 MiB
OVER_LOG = "announced more than cluster.max_remote_filters"
DIR_SUBJECT = "$WISP.%s.ho.dir" % PREFIX
DIR_ANSWERS_MAX = 8    # cluster/dir_answers.h
DIR_REFUSED_LOG = "start-up requests from other nodes are being answered already"
MALFORMED_LOG = "malformed interest announcement"


class RawNats:
    """Just enough of the NATS client protocol: CONNECT with headers,
    HPUB, SUB, PING/PONG, MSG/HMSG."""

    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=IO_TIMEOUT)
        self.buf = b""
        self.out = []
        if not self.line().startswith(b"INFO "):
            raise AssertionError("no INFO from nats-server")
        self.sock.sendall(b'CONNECT {"verbose":false,"pedantic":false,"headers":true,"name":"intruder"}\r\n')
        self.flush()

    def close(self):
        self.sock.close()

    def line(self):
        deadline = time.monotonic() + WAIT
        while b"\r\n" not in self.buf:
            if time.monotonic() > deadline:
                raise AssertionError("nats-server said nothing within %ss" % WAIT)
            data = self.sock.recv(65536)
            if not data:
                raise AssertionError("nats-server closed the connection")
            self.buf += data
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def read_exact(self, n):
        while len(self.buf) < n:
            data = self.sock.recv(65536)
            if not data:
                raise AssertionError("nats-server closed the connection")
            self.buf += data
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def hpub(self, headers, payload=b"", reply=None, subject=SUBJECT):
        hdr = b"NATS/1.0\r\n" + b"".join(b"%s: %s\r\n" % (k.encode(), v.encode()) for k, v in headers.items())
        hdr += b"\r\n"
        self.out.append(b"HPUB %s %s%d %d\r\n" % (subject.encode(), (reply + " ").encode() if reply else b"",
                                                len(hdr), len(hdr) + len(payload)) + hdr + payload + b"\r\n")
        if len(self.out) >= 256:
            self.sock.sendall(b"".join(self.out))
            self.out = []

    def sub(self, subject, sid):
        self.out.append(b"SUB %s %d\r\n" % (subject.encode(), sid))

    def next_msg(self):
        """The next MSG or HMSG: (subject, headers and payload bytes),
        answering PINGs; PONGs ignored."""
        for _ in range(100000):
            line = self.line()
            if line == b"PING":
                self.sock.sendall(b"PONG\r\n")
            elif line.startswith(b"-ERR"):
                raise AssertionError("nats-server: %r" % line)
            elif line.startswith((b"MSG ", b"HMSG ")):
                parts = line.split()
                return parts[1].decode(), self.read_exact(int(parts[-1]) + 2)
        raise AssertionError("no message")

    def flush(self):
        """Sends what is buffered and waits until nats-server processed it."""
        self.sock.sendall(b"".join(self.out) + b"PING\r\n")
        self.out = []
        for _ in range(100000):
            line = self.line()
            if line == b"PONG":
                return
            if line.startswith(b"-ERR"):
                raise AssertionError("nats-server: %r" % line)
            if line == b"PING":
                self.sock.sendall(b"PONG\r\n")
        raise AssertionError("no PONG")


class BoundNode(Node):
    """A node beating every second; `bounds`: more cluster keys."""

    def __init__(self, name, nats_port, bounds=None):
        super().__init__(name, nats_port)
        self.bounds = bounds or {}
        # A small quarantine, so that RSS shows what is kept, not what ASan
        # holds back after free.
        self.asan_options = "quarantine_size_mb=4"

    def config(self):
        cfg = super().config()
        cfg["cluster"]["interest_interval"] = 1
        cfg["cluster"].update(self.bounds)
        return cfg


class ClusterInterestBoundsTest(ClusterCase):
    node_names = ("a", "b")
    settle = True
    wait = WAIT

    def make_node(self, name, persistence=None):
        bounds = {"max_remote_filters": MAX_FILTERS, "max_remote_filter_bytes": MAX_BYTES} if name == "a" else None
        return BoundNode(name, self.nats.port, bounds)

    def setUp(self):
        self.inboxes = []
        super().setUp()

    def metric(self, node, name):
        m = re.search(r"(?m)^wisp_%s ([0-9]+)$" % name, self.nodes[node].get("/metrics")[1])
        self.assertIsNotNone(m, "no wisp_%s on node %s" % (name, node))
        return int(m.group(1))

    def log_count(self, node, text):
        return sum(1 for line in self.nodes[node].log().splitlines() if text in line)

    def wait_selective(self, pub):
        """Publishes a probe nobody wants on a until a counts it unwanted
        (it is back to sending only what is wanted); bounded."""
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            before = self.metric("a", "cluster_unwanted_total")
            pub.publish("nobody/wants/this", b"probe")
            pub.ping()
            if self.metric("a", "cluster_unwanted_total") > before:
                return
            time.sleep(0.1)
        self.fail("a kept sending everything to NATS")

    def raw_nats(self):
        nc = RawNats(self.nats.port)
        self.addCleanup(nc.close)
        return nc

    def answered(self, nc, node, run, seq):
        """A well-formed add with a reply subject, after what was sent:
        returns once a answered it, so once it handled everything before
        (one connection's messages come in order)."""
        inbox = "_INBOX.bounds.%s" % node
        if inbox not in self.inboxes:
            self.inboxes.append(inbox)
            nc.sub(inbox, len(self.inboxes))
            nc.flush()
        nc.hpub({"Wisp-Node": node, "Wisp-Run": run, "Wisp-ISeq": str(seq), "Wisp-Interest": "add"},
                b"fence/%d" % seq, reply=inbox)
        nc.flush()
        for _ in range(10):  # b answers too
            subject, data = nc.next_msg()
            if subject == inbox and b"Wisp-Node: a\r\n" in data and b"Wisp-ISeq: %d\r\n" % seq in data:
                return
        self.fail("a never answered add %d" % seq)

    def test_real_node_past_the_bound_gets_everything_then_recovers(self):
        sub = self.client("b", "many-b")
        n = MAX_FILTERS + 10
        self.assertEqual(sub.subscribe([("over/%d" % i, 1) for i in range(n)]), [1] * n)
        a = self.nodes["a"]
        self.assertIsNotNone(a.wait_log("node 'b' " + OVER_LOG, timeout=WAIT))
        self.assertEqual(self.metric("a", "cluster_interest_overflows_total"), 1)
        # a dropped b's filters: without the fallback it would keep these.
        pub = self.client("a", "pub-a")
        for pid, topic in enumerate(("over/0", "over/%d" % (n - 1)), start=1):
            pub.publish(topic, b"to b", qos=1, pid=pid)
            got = sub.recv_publish(timeout=WAIT)
            self.assertEqual((got.topic, got.payload), (topic, b"to b"))
        # The cost: a message nobody wants goes to NATS too.
        unwanted = self.metric("a", "cluster_unwanted_total")
        pub.publish("nobody/wants/this", b"x")
        pub.ping()
        self.assertEqual(self.metric("a", "cluster_unwanted_total"), unwanted)
        # b's set shrinks under 7/8 of the bound: a asks for its snapshot,
        # which fits; a keeps b's filters again.
        offset = a.log_size()
        sub.unsubscribe(["over/%d" % i for i in range(40, n)], pid=9)
        self.assertIsNotNone(a.wait_log("node 'b': its filters fit", offset=offset, timeout=WAIT))
        self.wait_selective(pub)
        pub.publish("over/1", b"kept", qos=1, pid=3)
        got = sub.recv_publish(timeout=WAIT)
        self.assertEqual((got.topic, got.payload), ("over/1", b"kept"))
        self.assertEqual(self.metric("a", "cluster_interest_overflows_total"), 1)
        self.assertEqual(self.log_count("a", OVER_LOG), 1)

    def test_fake_node_flood_keeps_rss_bounded_and_is_logged_once(self):
        a = self.nodes["a"]
        sub = self.client("b", "honest-b")
        self.assertEqual(sub.subscribe([("honest/t", 1)]), [1])
        pub = self.client("a", "honest-a")
        nc = self.raw_nats()
        pad = b"x" * FLOOD_FILTER
        seq = 0
        for i in range(FLOOD):
            seq += 1
            nc.hpub({"Wisp-Node": "intruder", "Wisp-Run": "1", "Wisp-ISeq": str(seq), "Wisp-Interest": "add"},
                    b"flood/%d/" % i + pad)
            if (i + 1) % 1000 == 0:
                # Paced by a's answers: what waits in its inbound queue is
                # not what the bound is about.
                seq += 1
                self.answered(nc, "intruder", "1", seq)
                if i + 1 == 1000:
                    # After the first thousand (the bound passed at the
                    # 33rd, NATS's and the allocator's buffers warm): what
                    # the next 19,000 add stays flat.
                    rss_before = peak = a.rss_kib()
                peak = max(peak, a.rss_kib())
        sys.stderr.write("\na's RSS: %d KiB before, %d KiB at most during %d adds of %d bytes\n"
                         % (rss_before, peak, FLOOD, FLOOD_FILTER))
        self.assertLess(peak - rss_before, RSS_GROWTH_KIB,
                        "a's RSS grew by %d KiB under %d adds of %d bytes" % (peak - rss_before, FLOOD, FLOOD_FILTER))
        self.assertEqual(self.metric("a", "cluster_interest_overflows_total"), 1)
        self.assertEqual(self.log_count("a", "node 'intruder' " + OVER_LOG), 1)
        # Meanwhile (and after), a honest QoS 1 round trip across the nodes.
        pub.publish("honest/t", b"still here", qos=1, pid=1)
        got = sub.recv_publish(timeout=WAIT)
        self.assertEqual((got.topic, got.payload), ("honest/t", b"still here"))

    def test_malformed_announcements_are_refused_counted_logged_once(self):
        a = self.nodes["a"]
        nc = self.raw_nats()
        good = {"Wisp-Node": "odd", "Wisp-Run": "1", "Wisp-Interest": "add"}
        bad = [
            (dict(good, **{"Wisp-ISeq": "1a"}), b"t"),                 # junk number
            (dict(good, **{"Wisp-ISeq": "-1"}), b"t"),
            (dict(good, **{"Wisp-ISeq": "99999999999999999999999"}), b"t"),  # overflows
            (dict(good, **{"Wisp-ISeq": "1"}), b"a/#/b"),              # '#' not last [MQTT-4.7.1-2]
            (dict(good, **{"Wisp-ISeq": "1"}), b"a+/b"),               # '+' not whole [MQTT-4.7.1-3]
            (dict(good, **{"Wisp-ISeq": "1"}), b"a\0b"),               # a NUL [MQTT-1.5.4-2]
            (dict(good, **{"Wisp-ISeq": "1"}), b""),                   # no filter
            (dict(good, **{"Wisp-ISeq": "1", "Wisp-Interest": "flood"}), b""),
            (dict(good, **{"Wisp-ISeq": "1", "Wisp-Run": "r" * 64}), b"t"),
            (dict(good, **{"Wisp-ISeq": "1", "Wisp-Node": "n" * 300}), b"t"),
            (dict(good, **{"Wisp-ISeq": "1", "Wisp-Interest": "snap", "Wisp-Part": "0"}), b"a\0b"),  # no end NUL
            (dict(good, **{"Wisp-ISeq": "1", "Wisp-Interest": "snap", "Wisp-Part": "0"}), b"a\0" * 70000),
            (dict(good, **{"Wisp-ISeq": "1", "Wisp-Interest": "snap"}), b"a\0"),  # no part
            (dict(good, **{"Wisp-ISeq": "1", "Wisp-Interest": "beat", "Wisp-Every": "0"}), b""),
            (dict(good, **{"Wisp-ISeq": "1", "Wisp-Interest": "hello"}), b"payload"),
        ]
        before = self.metric("a", "cluster_interest_malformed_total")
        for headers, payload in bad:
            nc.hpub(headers, payload)
        self.answered(nc, "odd", "1", 1)
        self.assertEqual(self.metric("a", "cluster_interest_malformed_total") - before, len(bad))
        self.assertEqual(self.log_count("a", MALFORMED_LOG), 1)
        # When in doubt a sends: nothing is lost meanwhile.
        sub = self.client("b", "sub-b")
        self.assertEqual(sub.subscribe([("doubt/t", 1)]), [1])
        pub = self.client("a", "pub-a")
        pub.publish("doubt/t", b"delivered", qos=1, pid=1)
        self.assertEqual(sub.recv_publish(timeout=WAIT).payload, b"delivered")
        # The sender of the good ones is a node like any other to a.
        self.assertIsNone(a.wait_log("node 'odd' " + OVER_LOG, timeout=0.1))

    def test_snapshot_in_parts_sends_everything_until_its_last(self):
        pub = self.client("a", "pub-a")
        nc = self.raw_nats()
        c = {"Wisp-Node": "c", "Wisp-Run": "1"}
        # c's whole set, in one part: a knows it.
        nc.hpub(dict(c, **{"Wisp-ISeq": "1", "Wisp-Interest": "snap", "Wisp-Part": "0", "Wisp-Last": "1"}),
                b"x/0\0")
        self.answered(nc, "c", "1", 2)

        def unwanted_after(topic):
            before = self.metric("a", "cluster_unwanted_total")
            pub.publish(topic, b"probe")
            pub.ping()
            return self.metric("a", "cluster_unwanted_total") - before

        self.assertEqual(unwanted_after("y/late"), 1, "a should know nobody wants y/late")
        # c sends its set again (as for another node's hello), in two parts:
        # between them, what a holds of it is partial, so a sends everything.
        nc.hpub(dict(c, **{"Wisp-ISeq": "3", "Wisp-Interest": "snap", "Wisp-Part": "0"}), b"x/0\0")
        self.answered(nc, "c", "1", 4)
        self.assertEqual(unwanted_after("y/late"), 0, "a trusted c's half-received snapshot")
        nc.hpub(dict(c, **{"Wisp-ISeq": "5", "Wisp-Interest": "snap", "Wisp-Part": "1", "Wisp-Last": "1"}),
                b"y/late\0")
        self.answered(nc, "c", "1", 6)
        self.assertEqual(unwanted_after("y/late"), 0)
        self.assertEqual(unwanted_after("z/nobody"), 1)

    def test_sync_flood_costs_one_snapshot_a_second(self):
        nc = self.raw_nats()
        nc.sub(SUBJECT, 99)
        nc.flush()
        syncs = 200
        for seq in range(1, syncs + 1):
            nc.hpub({"Wisp-Node": "asker", "Wisp-Run": "1", "Wisp-ISeq": str(seq), "Wisp-Interest": "sync",
                     "Wisp-To": "a"})
        nc.flush()
        # a's snapshots (and beats) come back on the subject: counted until
        # a's third beat after the flood, by which time a snapshot still
        # due has gone (a tick sends it before its beat).
        snaps = beats = 0
        deadline = time.monotonic() + WAIT
        while beats < 3 and time.monotonic() < deadline:
            subject, data = nc.next_msg()
            if subject != SUBJECT or b"Wisp-Node: a\r\n" not in data:
                continue
            if b"Wisp-Interest: snap\r\n" in data:
                snaps += 1
            elif b"Wisp-Interest: beat\r\n" in data:
                beats += 1
        self.assertEqual(beats, 3, "a did not beat three times within %ss" % WAIT)
        sys.stderr.write("\n%d syncs: %d snapshots from a\n" % (syncs, snaps))
        # One at once, one due, and one a second at most while they come.
        self.assertGreaterEqual(snaps, 1)
        self.assertLessEqual(snaps, 5, "%d syncs made %d snapshots" % (syncs, snaps))

    def make_persistent_sessions(self, node, count):
        """count persistent sessions "held<i>" on node: connected (clean
        session 0) a hundred at a time, then closed."""
        port = self.nodes[node].port
        for first in range(0, count, 100):
            socks = [socket.create_connection(("127.0.0.1", port), timeout=IO_TIMEOUT)
                     for _ in range(first, min(first + 100, count))]
            for i, s in enumerate(socks):
                s.sendall(connect_pkt("held%d" % (first + i), clean=False))
            for s in socks:
                if s.recv(4)[:1] != bytes([CONNACK << 4]):
                    raise AssertionError("no CONNACK")
                s.sendall(b"\xe0\x00")  # DISCONNECT
                s.close()

    def test_directory_request_flood_is_answered_a_few_at_a_time(self):
        held = 3000
        self.make_persistent_sessions("a", held)
        sub = self.client("b", "honest-b")
        self.assertEqual(sub.subscribe([("honest/t", 1)]), [1])
        pub = self.client("a", "honest-a")
        nc = self.raw_nats()
        nc.sub("_INBOX.dir.>", 7)
        nc.flush()
        asks = 300
        for i in range(asks):
            nc.hpub({"Wisp-Node": "made-up-%d" % i, "Wisp-Times": "1"}, reply="_INBOX.dir.%d" % i,
                    subject=DIR_SUBJECT)
        nc.flush()
        # Each answer a takes is whole: every one of its persistent sessions
        # (16 bytes each: digest, claim time), in one message at this size.
        answered = set()
        refused = 0
        deadline = time.monotonic() + WAIT
        while len(answered) + refused < asks and time.monotonic() < deadline:
            subject, data = nc.next_msg()
            if not subject.startswith("_INBOX.dir.") or b"Wisp-Node: a\r\n" not in data:
                continue
            self.assertNotIn(subject, answered, "a answered %s twice" % subject)
            payload = data[data.index(b"\r\n\r\n") + 4:-2]
            self.assertEqual(len(payload), held * 16, "a's answer on %s is not whole" % subject)
            answered.add(subject)
            refused = self.metric("a", "cluster_directory_refused_total")
        sys.stderr.write("\n%d start-up requests: %d answered, %d refused\n" % (asks, len(answered), refused))
        self.assertEqual(len(answered) + refused, asks)
        # The requests came together, each answer takes several loop turns
        # (3,000 sessions in steps of 512): at most DIR_ANSWERS_MAX were
        # under way at once, so nearly all were refused.
        self.assertGreaterEqual(refused, asks // 2)
        self.assertGreaterEqual(len(answered), DIR_ANSWERS_MAX)
        self.assertGreaterEqual(self.log_count("a", DIR_REFUSED_LOG), 1)
        self.assertIn("$SYS/broker/cluster/sessions/directory_refused",
                      self.nodes["a"].wait_log(DIR_REFUSED_LOG, timeout=0.1))
        # a stays a broker meanwhile.
        pub.publish("honest/t", b"still here", qos=1, pid=1)
        got = sub.recv_publish(timeout=WAIT)
        self.assertEqual((got.topic, got.payload), ("honest/t", b"still here"))
        # Once those are answered, a new node's request is answered again.
        nc.hpub({"Wisp-Node": "made-up-late", "Wisp-Times": "1"}, reply="_INBOX.dir.late", subject=DIR_SUBJECT)
        nc.flush()
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            subject, data = nc.next_msg()
            if subject == "_INBOX.dir.late" and b"Wisp-Node: a\r\n" in data:
                self.assertEqual(len(data[data.index(b"\r\n\r\n") + 4:-2]), held * 16)
                break
        else:
            self.fail("a did not answer a request after the flood")


if __name__ == "__main__":
    main()
