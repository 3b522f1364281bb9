#!/usr/bin/python3
# ctest: TIMEOUT 240
"""A failing disk must never silence the broker, and nothing acknowledged
may be lost (issue 11 item 13, issue 14 "Disk faults").

The store's data directory is made to fail through the faultfs LD_PRELOAD
shim (tests/support/faultfs.c, WISP_FAULTFS): while a control file exists,
write() or fsync()/fdatasync() on files in that directory fail with ENOSPC
or EIO. Each test shows, with the fault on:
  - no PUBACK/PUBREC/PUBCOMP leaves for a record that was not written
    (or, with fsync "always", not synced): a PINGREQ sent after it on the
    same connection is answered first, again after the broker retried;
  - the error is logged once, however often the broker retries;
  - the broker keeps serving: a clean-session CONNACK, PINGRESP, a QoS 0
    and a QoS 1 round trip between clean sessions (no record involved);
  - new durable work is refused clearly: CONNECT with clean session 0 gets
    CONNACK 3, a QoS 1 publish that needs a record closes its connection
    unacknowledged (3.1.1 has no negative PUBACK);
  - $SYS/broker/store/state says "degraded" and the error counters count;
and, once the fault clears, the held acknowledgements leave (in order), the
state is "ok" again, and after a restart (SIGTERM or kill -9) every
message acknowledged before, during or after the fault is delivered to the
persistent subscriber.
"""
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from wisp_e2e import (  # noqa: E402
    IS_MOSQUITTO, Broker, Closed, RawClient, ack_pkt, publish_pkt, wisp_binary,
)

CONNACK, PUBLISH, PUBACK, PUBREC, PUBREL, PUBCOMP, PINGRESP = 2, 3, 4, 5, 6, 7, 13
PINGREQ = b"\xc0\x00"
FAULTFS = os.environ.get("WISP_FAULTFS")
WAIT = 30.0  # bound for anything that waits on the broker's retry backoff (at most 8 s a step)


def preload_list():
    """The shim after the ASan runtime, if the broker has one: ASan insists
    on coming first, and its write() interceptor then calls the shim."""
    out = subprocess.run(["ldd", wisp_binary()], stdout=subprocess.PIPE, text=True).stdout
    m = re.search(r"(\S*libasan\.so\S*) => (\S+)", out)
    return ([m.group(2)] if m else []) + [FAULTFS]


class FaultyBroker(Broker):
    """A broker whose data directory fails on demand."""

    def __init__(self, data, ctl, **kw):
        super().__init__(**kw)
        self.data, self.ctl = data, ctl

    def _env(self):
        env = super()._env()
        env["LD_PRELOAD"] = ":".join(preload_list())
        env["FAULTFS_DIR"] = self.data
        env["FAULTFS_CTL"] = self.ctl
        return env


class SysWatch:
    """A clean-session client subscribed to $SYS/broker/store/# (sys_interval 1)."""

    def __init__(self, port):
        self.c = RawClient(port)
        assert self.c.connect("disk-sys-watch", clean=True) == 0
        self.c.subscribe("$SYS/broker/store/#")
        self.values = {}

    def wait(self, key, pred, timeout=WAIT):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if key in self.values and pred(self.values[key]):
                return self.values[key]
            try:
                p = self.c.recv_packet(timeout=max(0.01, deadline - time.monotonic()))
            except socket.timeout:
                break
            if p.type == PUBLISH:
                self.values[p.topic.split("/")[-1]] = p.payload.decode()
        raise AssertionError("$SYS/broker/store/%s never satisfied the check (last: %r)"
                             % (key, self.values.get(key)))

    def close(self):
        self.c.close()


@unittest.skipIf(IS_MOSQUITTO, "fault injection into Wisp's store")
class HostileDisk(unittest.TestCase):

    def setUp(self):
        if not FAULTFS or not os.path.exists(FAULTFS):
            self.fail("WISP_FAULTFS must name the built libfaultfs.so (tests/support)")
        self.tmp = tempfile.mkdtemp(prefix="wisp-disk-")
        self.data = os.path.realpath(os.path.join(self.tmp, "store"))
        self.ctl = os.path.join(self.tmp, "fault")
        self.brokers, self.clients = [], []

    def tearDown(self):
        for c in self.clients:
            c.close()
        for b in self.brokers:
            if b.alive():
                b.proc.kill()
                b.proc.wait(timeout=10)
            b.cleanup()
        shutil.rmtree(self.tmp, ignore_errors=True)

    # ---- helpers

    def start(self, fsync):
        b = FaultyBroker(self.data, self.ctl, config={
            "persistence": {"enabled": True, "dir": self.data, "fsync": fsync},
            "sys_interval": 1})
        self.brokers.append(b)
        return b.start()

    def fault(self, what):
        self.addCleanup(lambda: os.path.exists(self.ctl) and os.unlink(self.ctl))
        with open(self.ctl + ".tmp", "w") as f:
            f.write(what + "\n")
        os.replace(self.ctl + ".tmp", self.ctl)

    def clear(self):
        os.unlink(self.ctl)

    def client(self, port, cid, clean=True):
        c = RawClient(port)
        self.clients.append(c)
        rc = c.connect(cid, clean=clean, keepalive=0)
        return c, rc

    def offline_subscriber(self, port):
        """The persistent session every durable message is queued for."""
        c, rc = self.client(port, "disk-sub", clean=False)
        self.assertEqual(rc, 0)
        c.subscribe([("d/#", 1)])
        c.send(b"\xe0\x00")  # DISCONNECT: the session stays, offline
        self.assertTrue(c.wait_closed())

    def acked_qos1(self, c, topic, pid):
        c.send(publish_pkt(topic, topic.encode(), qos=1, pid=pid))
        ack = c.expect(PUBACK, timeout=WAIT)
        self.assertEqual(ack.pid, pid)

    def assert_ping_first(self, c):
        """A PINGREQ is answered before anything else: the held acks did not leave."""
        c.send(PINGREQ)
        try:
            p = c.recv_packet(timeout=WAIT)
        except socket.timeout:
            raise AssertionError("no PINGRESP within %ss: the broker went silent" % WAIT) from None
        self.assertEqual(p.type, PINGRESP, "an acknowledgement left before its record was safe: %r" % p)

    def assert_still_serving(self, b, tag):
        """What depends on no unwritten record flows while the disk fails."""
        # A clean-session CONNACK and a PINGRESP.
        other, rc = self.client(b.port, "disk-clean-" + tag)
        self.assertEqual(rc, 0)
        other.ping()
        # A QoS 0 and a QoS 1 round trip between clean sessions.
        sub, rc = self.client(b.port, "disk-live-sub-" + tag)
        self.assertEqual(rc, 0)
        sub.subscribe([("live/#", 1)])
        other.publish("live/q0", b"zero", qos=0)
        self.assertEqual(sub.recv_publish(timeout=WAIT).payload, b"zero")
        other.publish("live/q1", b"one", qos=1)  # asserts the PUBACK
        self.assertEqual(sub.recv_publish(timeout=WAIT).payload, b"one")

    def assert_durable_refused(self, b, tag):
        # [MQTT-3.2.2-5] CONNACK 3 "server unavailable", then the close.
        c, rc = self.client(b.port, "disk-persistent-" + tag, clean=False)
        self.assertEqual(rc, 3, "a persistent session must be refused while the store cannot write")
        self.assertTrue(c.wait_closed())
        # A QoS 1 publish that needs a record: closed, never acknowledged.
        p, rc = self.client(b.port, "disk-refused-pub-" + tag)
        self.assertEqual(rc, 0)
        p.send(publish_pkt("d/refused-" + tag, b"x", qos=1, pid=9))
        try:
            for _ in range(100):
                pkt = p.recv_packet(timeout=WAIT)
                self.assertNotIn(pkt.type, (PUBACK, PUBREC), "refused publish acknowledged")
            self.fail("connection not closed")
        except Closed:
            pass

    def drain(self, port, want):
        """The persistent subscriber's messages, read until every one in
        `want` came (or nothing came for WAIT seconds)."""
        c, rc = self.client(port, "disk-sub", clean=False)
        self.assertEqual(rc, 0)
        self.assertTrue(c.session_present)
        got = set()
        while not want <= got:
            try:
                p = c.recv_publish(timeout=WAIT)
            except AssertionError:  # nothing more within WAIT
                break
            got.add(p.payload.decode())
        return got

    def assert_paced(self, watch, key, most):
        """Retries back off: `most` failed attempts take longer than this
        script's CTest timeout (write: 1, 2, 4, then every 8 s; compaction:
        doubling from 1 s), while retrying on every loop turn made hundreds
        within seconds."""
        n = int(watch.wait(key, lambda v: True))
        self.assertLessEqual(n, most, "%s: %d attempts, not backing off" % (key, n))

    def count(self, b, pattern):
        return sum(1 for line in b.log().splitlines() if re.search(pattern, line))

    def kill9(self, b):
        b.proc.send_signal(signal.SIGKILL)
        b.proc.wait(timeout=10)
        b.exit_status = -9

    # ---- the tests

    def test_failing_write_holds_only_dependent_acks(self):
        for fsync in ("everysec", "always"):
            with self.subTest(fsync=fsync):
                shutil.rmtree(self.data, ignore_errors=True)
                self.write_fault(fsync)

    def write_fault(self, fsync):
        if os.path.exists(self.ctl):  # a failed subtest left its fault on
            os.unlink(self.ctl)
        b = self.start(fsync)
        watch = SysWatch(b.port)
        self.clients.append(watch)
        self.offline_subscriber(b.port)
        pub, _ = self.client(b.port, "disk-pub")
        self.acked_qos1(pub, "d/before", 1)
        # A persistent QoS 2 publisher whose PUBREL comes during the fault:
        # its PUBCOMP vouches for the released packet id (QOS2_IN_DEL).
        pub2, _ = self.client(b.port, "disk-pub2", clean=False)
        pub2.send(publish_pkt("d/q2-early", b"d/q2-early", qos=2, pid=7))
        self.assertEqual(pub2.expect(PUBREC, timeout=WAIT).pid, 7)

        self.fault("write ENOSPC")
        # Two publishes in one turn: both records fail to reach the log.
        pub.send(publish_pkt("d/during-q1", b"d/during-q1", qos=1, pid=2) +
                 publish_pkt("d/during-q2", b"d/during-q2", qos=2, pid=3))
        self.assertIsNotNone(b.wait_log(r"write to .* failed: No space left", timeout=WAIT))
        self.assert_ping_first(pub)
        pub2.send(ack_pkt(PUBREL, 7))
        self.assert_ping_first(pub2)
        watch.wait("state", lambda v: v == "degraded")
        # Retried (with backoff) and still failing: still held.
        watch.wait("write_errors", lambda v: int(v) >= 3)
        self.assert_ping_first(pub)
        self.assert_ping_first(pub2)
        self.assert_still_serving(b, fsync)
        self.assert_durable_refused(b, fsync)
        self.assertEqual(self.count(b, r"write to .* failed"), 1, "logged once per episode")
        self.assert_paced(watch, "write_errors", 30)
        self.assertTrue(b.alive())

        self.clear()
        # The held acks leave, in the order of their PUBLISHes [MQTT-4.6.0-2].
        ack = pub.expect(PUBACK, timeout=WAIT)
        self.assertEqual(ack.pid, 2)
        rec = pub.expect(PUBREC, timeout=WAIT)
        self.assertEqual(rec.pid, 3)
        pub.send(ack_pkt(PUBREL, 3))
        self.assertEqual(pub.expect(PUBCOMP, timeout=WAIT).pid, 3)
        self.assertEqual(pub2.expect(PUBCOMP, timeout=WAIT).pid, 7)
        self.assertIsNotNone(b.wait_log(r"writable again", timeout=WAIT))
        watch.wait("state", lambda v: v == "ok")
        self.acked_qos1(pub, "d/after", 4)
        b.stop()  # SIGTERM: exit status 0 and no sanitizer report

        b2 = self.start(fsync)
        want = {"d/before", "d/q2-early", "d/during-q1", "d/during-q2", "d/after"}
        got = self.drain(b2.port, want)
        self.assertTrue(want <= got, "acknowledged but lost: %s" % sorted(want - got))
        b2.stop()

    def test_failing_store_holds_the_brokers_pubrel(self):
        # A failed write loses the record; a failed fsync leaves it in the
        # page cache, which a kill -9 (unlike a power loss) keeps.
        for fsync, fault, logged, kept in (("everysec", "write ENOSPC", r"write to .* failed", False),
                                           ("always", "fsync EIO", r"fsync in .* failed", True)):
            with self.subTest(fsync=fsync):
                shutil.rmtree(self.data, ignore_errors=True)
                self.pubrel_fault(fsync, fault, logged, kept)

    def pubrel_fault(self, fsync, fault, logged, kept):
        """The broker's PUBREL to a subscriber ends the PUBLISH's life: from
        it on the broker must never send that PUBLISH again [MQTT-4.3.3-1].
        So it waits, like the broker's acks, for the record of that state;
        left at once, a crash before the record re-sent the PUBLISH after the
        restart to a client that had finished with it: a second delivery."""
        if os.path.exists(self.ctl):
            os.unlink(self.ctl)
        b = self.start(fsync)
        sub, rc = self.client(b.port, "disk-q2-sub", clean=False)
        self.assertEqual(rc, 0)
        sub.subscribe([("d2/#", 2)])
        pub, _ = self.client(b.port, "disk-q2-pub")
        pub.send(publish_pkt("d2/m", b"once", qos=2, pid=1))
        self.assertEqual(pub.expect(PUBREC, timeout=WAIT).pid, 1)
        pub.send(ack_pkt(PUBREL, 1))
        self.assertEqual(pub.expect(PUBCOMP, timeout=WAIT).pid, 1)
        first = sub.expect(PUBLISH, timeout=WAIT)
        self.assertEqual((first.qos, first.payload), (2, b"once"))

        self.fault(fault)
        sub.send(ack_pkt(PUBREC, first.pid))
        self.assertIsNotNone(b.wait_log(logged, timeout=WAIT))
        self.assert_ping_first(sub)
        self.kill9(b)
        self.clear()

        # The PUBREL never left, so the client still holds the packet id
        # and takes a DUP copy for the same message [MQTT-4.3.3-2]; or the
        # record survived and the PUBREL comes now [MQTT-4.4.0-1].
        b2 = self.start(fsync)
        sub2, rc = self.client(b2.port, "disk-q2-sub", clean=False)
        self.assertEqual(rc, 0)
        if not kept:
            again = sub2.expect(PUBLISH, timeout=WAIT)
            self.assertEqual((again.pid, again.dup, again.payload), (first.pid, True, b"once"))
            sub2.send(ack_pkt(PUBREC, again.pid))
        self.assertEqual(sub2.expect(PUBREL, timeout=WAIT).pid, first.pid)
        sub2.send(ack_pkt(PUBCOMP, first.pid))
        sub2.ping()
        b2.stop()

    def test_failing_fsync_everysec_keeps_acking_and_recovers(self):
        b = self.start("everysec")
        watch = SysWatch(b.port)
        self.clients.append(watch)
        self.offline_subscriber(b.port)
        pub, _ = self.client(b.port, "disk-pub")
        self.acked_qos1(pub, "d/before", 1)

        self.fault("fsync EIO")
        # everysec acks never waited for an fsync: they still leave at write().
        self.acked_qos1(pub, "d/during", 2)
        self.assertIsNotNone(b.wait_log(r"fsync in .* failed", timeout=WAIT))
        self.assert_still_serving(b, "es0")
        watch.wait("state", lambda v: v == "degraded")
        watch.wait("fsync_errors", lambda v: int(v) >= 1)
        # The log is rewritten by a compaction, which fails too and is retried with backoff.
        watch.wait("compaction_errors", lambda v: int(v) >= 2)
        self.acked_qos1(pub, "d/during2", 3)
        self.assert_still_serving(b, "es")
        c, rc = self.client(b.port, "disk-persistent-es", clean=False)
        self.assertEqual(rc, 0, "everysec: the log is writable, persistent sessions are accepted")
        self.assertEqual(self.count(b, r"fsync in .* failed"), 1, "logged once per episode")
        self.assertEqual(self.count(b, r"compaction: .* failed"), 1, "logged once per episode")
        self.assert_paced(watch, "compaction_errors", 10)

        self.clear()
        self.assertIsNotNone(b.wait_log(r"durability is back", timeout=WAIT))
        watch.wait("state", lambda v: v == "ok")
        self.acked_qos1(pub, "d/after", 4)
        self.kill9(b)

        b2 = self.start("everysec")
        want = {"d/before", "d/during", "d/during2", "d/after"}
        got = self.drain(b2.port, want)
        self.assertTrue(want <= got, "acknowledged but lost: %s" % sorted(want - got))
        b2.stop()

    def test_failing_fsync_always_holds_acks_until_rewritten(self):
        b = self.start("always")
        watch = SysWatch(b.port)
        self.clients.append(watch)
        self.offline_subscriber(b.port)
        pub, _ = self.client(b.port, "disk-pub")
        self.acked_qos1(pub, "d/before", 1)

        self.fault("fsync EIO")
        pub.send(publish_pkt("d/during", b"d/during", qos=1, pid=2))
        self.assertIsNotNone(b.wait_log(r"fsync in .* failed", timeout=WAIT))
        self.assert_ping_first(pub)
        watch.wait("state", lambda v: v == "degraded")
        watch.wait("compaction_errors", lambda v: int(v) >= 2)
        self.assert_ping_first(pub)
        self.assert_still_serving(b, "al")
        self.assert_durable_refused(b, "al")
        self.assertEqual(self.count(b, r"fsync in .* failed"), 1, "logged once per episode")
        self.assertEqual(self.count(b, r"compaction: .* failed"), 1, "logged once per episode")
        self.assert_paced(watch, "compaction_errors", 10)

        self.clear()
        # Released once a compaction has rewritten (and synced) the state.
        self.assertEqual(pub.expect(PUBACK, timeout=WAIT).pid, 2)
        self.assertIsNotNone(b.wait_log(r"durability is back", timeout=WAIT))
        watch.wait("state", lambda v: v == "ok")
        self.acked_qos1(pub, "d/after", 3)
        self.kill9(b)

        b2 = self.start("always")
        want = {"d/before", "d/during", "d/after"}
        got = self.drain(b2.port, want)
        self.assertTrue(want <= got, "acknowledged but lost: %s" % sorted(want - got))
        b2.stop()


if __name__ == "__main__":
    unittest.main(verbosity=2)
