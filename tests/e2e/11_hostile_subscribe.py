#!/usr/bin/python3
# ctest: TIMEOUT 300 RUN_SERIAL TRUE
"""11 hostile subscribe (issue 11, items 3 and 7): what one client's
SUBSCRIBEs can make the broker hold and do.

- Deep and long filters are refused with 0x80 while the other filters of
  the same SUBSCRIBE are granted [MQTT-3.8.4-4][MQTT-3.8.4-5]; a flood of
  3.75 MiB of 32,760-level filters leaves the broker's RSS bounded (before:
  160 MB); refusals are counted in $SYS and logged once.
- limits.max_subscriptions has a finite default (1000).
- Will topics over the bounds are refused at CONNECT; PUBLISH topics over
  them close the connection.
- A persistent session whose store holds filters granted under looser
  limits (or that no longer fit memory_limit) still starts: they are
  skipped and logged.
- A client subscribing 150,000 filters (three SUBSCRIBEs of 50,000) or
  sending a hundred SUBSCRIBEs in one write does not stall others: an
  honest client's QoS 1 round trip and PINGREQ complete while that work is
  still going on (the broker says it continues at the next turn; the
  offender has not got all its SUBACKs yet), and the offender's filters all
  work afterwards.

Every wait is on an event (a packet, a log line, a closed socket); no
timing thresholds.
"""

import os
import select
import shutil
import socket
import sys
import tempfile
import threading
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from wisp_e2e import (IS_MOSQUITTO, Broker, BrokerTestCase, RawClient,  # noqa: E402
                      main, publish_pkt, subscribe_pkt, unsubscribe_pkt)

SUBACK, UNSUBACK = 9, 11
FAILURE = 0x80
DEFAULT_LEVELS = 128
DEFAULT_LENGTH = 4096


def deep(prefix, levels):
    """A filter of exactly `levels` levels whose first level is `prefix`."""
    return prefix + "/x" * (levels - 1)


def slashes(prefix, length):
    """A filter of `length` bytes: `prefix`, then '/' only (empty levels)."""
    return prefix + "/" * (length - len(prefix))


def skip_on_mosquitto(cls):
    return unittest.skipIf(IS_MOSQUITTO, "wisp's limits")(cls)


def complete_packets(buf):
    """The number of whole MQTT packets at the start of buf."""
    n, off = 0, 0
    while off + 2 <= len(buf):
        mult, length, pos = 1, 0, off + 1
        while pos < len(buf):
            b = buf[pos]
            length += (b & 0x7F) * mult
            mult *= 128
            pos += 1
            if not b & 0x80:
                break
        else:
            return n
        if pos + length > len(buf):
            return n
        off = pos + length
        n += 1
    return n


def packets_arrived(client):
    """Whole packets a RawClient has received so far, read without waiting
    and kept for its recv_packet()."""
    while select.select([client.sock], [], [], 0)[0]:
        chunk = client.sock.recv(1 << 20)
        if not chunk:
            break
        client.buf += chunk
    return complete_packets(client.buf)


@skip_on_mosquitto
class FilterBoundsTest(BrokerTestCase):
    def broker_options(self):
        return {"config": {"sys_interval": 1}}

    def test_refused_filters_get_0x80_others_granted(self):
        """max_topic_levels and max_topic_length on SUBSCRIBE: 0x80 for the
        filters over them, the others in the same SUBSCRIBE granted and
        working [MQTT-3.8.4-4][MQTT-3.8.4-5][MQTT-3.9.3-1]."""
        c = self.raw("mixed")
        codes = c.subscribe([("ok/1", 1), (deep("d", DEFAULT_LEVELS + 1), 0),
                             (slashes("l", DEFAULT_LENGTH + 1), 0), ("ok/2", 2),
                             (deep("e", DEFAULT_LEVELS), 0), (slashes("m", DEFAULT_LENGTH), 1)])
        # 128 levels are within the bound; 4096 bytes of '/' are 4097 levels
        self.assertEqual(codes, [1, FAILURE, FAILURE, 2, 0, FAILURE])
        p = self.raw("mixed-pub")
        p.publish("ok/1", "one", qos=1)
        self.assertEqual(c.recv_publish().payload, b"one")
        # exactly at both bounds: 128 levels in 4096 bytes
        at_bounds = "f" * (DEFAULT_LENGTH - 2 * (DEFAULT_LEVELS - 1)) + "/x" * (DEFAULT_LEVELS - 1)
        self.assertEqual(len(at_bounds), DEFAULT_LENGTH)
        self.assertEqual(c.subscribe([(at_bounds, 0)], pid=2), [0])

    def test_deep_filter_flood_keeps_rss_bounded(self):
        """3.75 MiB of SUBSCRIBE with 32,760-level filters (and 2,048-level
        ones within the length bound): every filter refused, broker RSS grows
        by less than 32 MiB (before: 160 MB), one log line, counted in
        $SYS/broker/subscriptions/refused, and an honest client's QoS 1 round
        trip still completes."""
        honest = self.raw("honest")
        self.assertEqual(honest.subscribe([("honest/t", 1)]), [1])
        flood = self.raw("flood")
        rss0 = peak = self.broker.rss_kib()
        sent = refused = 0
        codes = []
        pid = 1
        while sent < 3.75 * 1024 * 1024:
            filters = [(slashes("a%d" % (pid * 8 + i), 32759), 0) for i in range(6)]
            filters += [(deep("b%d" % (pid * 8 + i), 2048), 0) for i in range(2)]
            pkt = subscribe_pkt(pid, filters)
            flood.send(pkt)
            ack = flood.expect(SUBACK)
            codes += list(ack.body[2:])
            sent += len(pkt)
            refused += len(filters)
            peak = max(peak, self.broker.rss_kib())
            pid += 1
        growth = peak - rss0
        sys.stderr.write("[%d KiB of SUBSCRIBE, VmRSS +%d KiB] " % (sent // 1024, growth))
        self.assertLess(growth, 32 * 1024, "RSS grew by %d KiB" % growth)
        self.assertEqual(codes, [FAILURE] * refused, "deep filters must be refused")
        self.raw("publisher").publish("honest/t", "still here", qos=1)
        self.assertEqual(honest.recv_publish().payload, b"still here")
        lines = [l for l in self.broker.log().splitlines() if "flood" in l and "refused" in l
                 and "subscription" in l and " DEBUG " not in l]
        self.assertEqual(len(lines), 1, "one log line for the refusals: %r" % lines[:3])
        # The counter reaches the number refused ($SYS is published every second).
        self.assertEqual(honest.subscribe([("$SYS/broker/subscriptions/refused", 0)], pid=2), [0])
        value = 0
        for _ in range(10):
            value = int(honest.expect(3, timeout=5).payload)
            if value >= refused:
                break
        self.assertEqual(value, refused)

    def test_max_subscriptions_has_a_finite_default(self):
        """limits.max_subscriptions defaults to 1000: the 1001st filter is
        refused, a repeated one still replaces [MQTT-3.8.4-3]."""
        c = self.raw("many")
        codes = c.subscribe([("many/%d" % i, 0) for i in range(1001)])
        self.assertEqual(codes, [0] * 1000 + [FAILURE])
        self.assertEqual(c.subscribe([("many/7", 1)], pid=2), [1])
        c.unsubscribe(["many/8"], pid=3)
        self.assertEqual(c.subscribe([("many/1000", 1)], pid=4), [1])


@skip_on_mosquitto
class TopicBoundsTest(BrokerTestCase):
    def test_will_topic_over_the_bounds_is_refused(self):
        """A will topic deeper than max_topic_levels or longer than
        max_topic_length: CONNACK 5 and the connection closed; at the bounds
        it is accepted."""
        for name, topic in (("will-deep", deep("w", DEFAULT_LEVELS + 1)),
                            ("will-long", slashes("w", DEFAULT_LENGTH + 1))):
            c = self.raw(connect=False)
            self.assertEqual(c.connect(name, will=(topic, b"bye", 0, False)), 5, name)
            self.assertTrue(c.wait_closed(), name)
        ok = self.raw(connect=False)
        self.assertEqual(ok.connect("will-ok", will=(deep("w", DEFAULT_LEVELS), b"bye", 0, False)), 0)
        self.assertIsNotNone(self.broker.wait_log(r"will-deep|will topic has more levels"))

    def test_publish_topic_over_the_bounds_closes_the_connection(self):
        """PUBLISH to a topic over max_topic_length or max_topic_levels: the
        connection is closed and the reason logged; a witness is served."""
        witness = self.raw("witness")
        self.assertEqual(witness.subscribe([("w/#", 1)]), [1])
        for topic, reason in ((slashes("p", DEFAULT_LENGTH + 1), "longer than max_topic_length"),
                              (deep("p", DEFAULT_LEVELS + 1), "more levels than max_topic_levels")):
            offset = self.broker.log_size()
            c = self.raw()
            c.send(publish_pkt(topic, b"x"))
            self.assertTrue(c.wait_closed(), reason)
            self.assertIsNotNone(self.broker.wait_log(reason, offset=offset), reason)
        p = self.raw()
        p.publish("w/1", "ok", qos=1)
        self.assertEqual(witness.recv_publish().payload, b"ok")


@skip_on_mosquitto
class StoreReplayTest(unittest.TestCase):
    """A store written under looser limits, replayed under the defaults."""

    def setUp(self):
        self.data = tempfile.mkdtemp(prefix="wisp-subs-store-")
        self.addCleanup(shutil.rmtree, self.data, True)

    def broker(self, limits=None):
        b = Broker(limits=limits, config={"persistence": {"enabled": True, "dir": self.data}})
        self.addCleanup(b.cleanup)
        return b

    def plant(self, filters):
        """A persistent session "planted" subscribed to `filters` (all
        granted under the loosest limits), plus "shallow/x"."""
        with self.broker({"max_topic_levels": 1024, "max_topic_length": 65535,
                          "max_subscriptions": 0}) as b:
            c = RawClient(b.port)
            try:
                self.assertEqual(c.connect("planted", clean=False), 0)
                codes = c.subscribe([("shallow/x", 1)] + [(f, 1) for f in filters])
                self.assertEqual(codes, [1] * (len(filters) + 1))
                c.send(b"\xe0\x00")
                c.wait_closed()
            finally:
                c.close()

    def check_session(self, b):
        c = RawClient(b.port)
        try:
            self.assertEqual(c.connect("planted", clean=False), 0)
            self.assertTrue(c.session_present, "the session survived the restart")
            p = RawClient(b.port)
            try:
                self.assertEqual(p.connect("pub"), 0)
                p.publish("shallow/x", "kept", qos=1)
            finally:
                p.close()
            self.assertEqual(c.recv_publish().payload, b"kept")
        finally:
            c.close()

    def test_too_deep_stored_filters_are_skipped(self):
        """Filters of 1,000 levels and 5,000 bytes granted by an older
        configuration: the broker with the defaults starts, skips them with
        one WARNING, and the session keeps its other subscription."""
        self.plant([deep("old%d" % i, 1000) for i in range(20)] + ["long/" + "x" * 4995])
        with self.broker() as b:
            self.check_session(b)
            log = b.log()
        warnings = [l for l in log.splitlines() if "stored subscription" in l and "skipped" in l
                    and " DEBUG " not in l]
        self.assertEqual(len(warnings), 1, warnings[:3])
        self.assertIn("planted", warnings[0])

    def test_store_larger_than_memory_limit_still_starts(self):
        """Stored subscriptions that do not fit limits.memory_limit are
        skipped instead of failing the start (which would restart into the
        same store forever), leaving room to serve: the session is back."""
        self.plant([deep("big%d" % i, 1000) for i in range(150)])
        with self.broker({"max_topic_levels": 1024, "memory_limit": 6 * 1024 * 1024}) as b:
            line = b.wait_log(r"stored subscription .* skipped: .*memory_limit")
            self.assertIsNotNone(line, "the skip is logged")
            self.check_session(b)


@skip_on_mosquitto
class SubscribeWorkIsBoundedTest(BrokerTestCase):
    LIMITS = {"max_subscriptions": 0}

    def honest_round_trip(self, honest, n):
        """QoS 1 both ways: the honest client publishes to a topic it is
        subscribed to, gets its PUBACK and the message; then PINGREQ."""
        honest.send(publish_pkt("honest/t", b"rt%d" % n, qos=1, pid=n))
        got = {honest.recv_packet().type for _ in range(2)}
        self.assertEqual(got, {3, 4}, "PUBLISH and PUBACK")
        honest.ping()

    def run_and_check(self, packets, expected_acks, honest, big):
        """`big` sends `packets` in one go (from a thread: its input is
        paused while the work goes on); returns its acks."""
        offset = self.broker.log_size()
        big.sock.settimeout(120)
        sender = threading.Thread(target=big.sock.sendall, args=(b"".join(packets),), daemon=True)
        sender.start()
        self.on_cleanup(lambda: sender.join(10))
        line = self.broker.wait_log(r"client big: (UN)?SUBSCRIBE of \d+ filters .* goes on at the next loop turn",
                                    offset=offset, timeout=60)
        self.assertIsNotNone(line, "the broker spreads the work over loop turns")
        # While that work goes on, the honest client is served...
        self.honest_round_trip(honest, 1)
        # ... and the offender does not have all its answers yet.
        early = packets_arrived(big)
        self.assertLess(early, expected_acks, "the honest client was served only after all the work")
        acks = [big.recv_packet(timeout=120) for _ in range(expected_acks)]
        sender.join(60)
        self.assertFalse(sender.is_alive())
        self.assertTrue(all(a.type in (SUBACK, UNSUBACK) for a in acks), acks[:3])
        self.assertEqual([a.pid for a in acks], [p + 1 for p in range(expected_acks)])
        self.honest_round_trip(honest, 2)
        return acks

    def clients(self):
        honest = self.raw("honest")
        self.assertEqual(honest.subscribe([("honest/t", 1)]), [1])
        return honest, self.raw("big", keepalive=0)

    def test_fifty_thousand_filters_per_subscribe(self):
        """Three SUBSCRIBEs of 50,000 filters each: every filter granted,
        and they all work."""
        n = 50000
        honest, big = self.clients()
        packets = [subscribe_pkt(k + 1, [("f%d/%d" % (k, i), 1) for i in range(n)]) for k in range(3)]
        acks = self.run_and_check(packets, 3, honest, big)
        for a in acks:
            self.assertEqual(list(a.body[2:]), [1] * n)
        p = self.raw("pub")
        for topic in ("f0/0", "f1/25000", "f2/49999"):
            p.publish(topic, topic, qos=1)
            self.assertEqual(big.recv_publish().payload, topic.encode())

    def test_retained_messages_count_in_the_turn_budget(self):
        """One SUBSCRIBE of ten '#' filters over 5,000 retained messages: each
        filter walks the whole store (a repeated filter replaces its
        subscription and gets the retained messages again [MQTT-3.8.4-3]).
        Ten filters are well under a turn's 1,024, but the retained messages
        they meet count too, so the walk goes on over later turns (before,
        it was done in one: 200 such filters over 200,000 messages held the
        loop 11 s) and an honest client is served in between."""
        pub = self.raw("retainer")
        pub.send(b"".join(publish_pkt("r/%d" % i, b"v", retain=True) for i in range(5000)))
        pub.ping()  # all stored: handled in order before the PINGRESP
        honest, big = self.clients()
        offset = self.broker.log_size()
        big.send(subscribe_pkt(1, [("#", 0)] * 10))
        line = self.broker.wait_log(r"client big: SUBSCRIBE of 10 filters .* goes on at the next loop turn",
                                    offset=offset, timeout=60)
        self.assertIsNotNone(line, "the retained walk is spread over loop turns")
        self.honest_round_trip(honest, 1)
        ack = big.expect(SUBACK, timeout=60)
        self.assertEqual(list(ack.body[2:]), [0] * 10)
        self.assertTrue(big.recv_publish(timeout=60).retain)

    def test_a_hundred_subscribes_in_one_write(self):
        """A hundred SUBSCRIBEs of 1,000 filters sent at once, then a hundred
        UNSUBSCRIBEs of the same."""
        honest, big = self.clients()
        packets = [subscribe_pkt(k + 1, [("g%d/%d" % (k, i), 0) for i in range(1000)]) for k in range(100)]
        acks = self.run_and_check(packets, 100, honest, big)
        self.assertTrue(all(list(a.body[2:]) == [0] * 1000 for a in acks))
        packets = [unsubscribe_pkt(k + 1, ["g%d/%d" % (k, i) for i in range(1000)]) for k in range(100)]
        self.run_and_check(packets, 100, honest, big)
        p = self.raw("pub")
        p.publish("g99/999", "gone", qos=1)
        p.publish("honest/t", "after", qos=1)
        self.assertEqual(honest.recv_publish().payload, b"after")
        big.assert_no_packet(0.5)

    def test_connection_ends_while_its_subscribe_waits(self):
        """A client taken over, and one that hangs up, while their big
        SUBSCRIBE is half done: the broker forgets that work (no use of the
        closed connection: the sanitizers check at exit) and the new
        connection with the same id is served."""
        honest, big = self.clients()
        offset = self.broker.log_size()
        big.sock.settimeout(60)
        big.send(subscribe_pkt(1, [("t%d" % i, 0) for i in range(60000)]))
        self.assertIsNotNone(self.broker.wait_log(r"client big: SUBSCRIBE of 60000 filters .* goes on",
                                                  offset=offset, timeout=60))
        again = self.raw("big")  # [MQTT-3.1.4-2] takes the session over
        self.assertEqual(again.subscribe([("again/t", 1)]), [1])
        offset = self.broker.log_size()
        again.send(subscribe_pkt(2, [("u%d" % i, 0) for i in range(60000)]))
        self.assertIsNotNone(self.broker.wait_log(r"client big: SUBSCRIBE of 60000 filters .* goes on",
                                                  offset=offset, timeout=60))
        again.close()
        self.assertIsNotNone(self.broker.wait_log(r"client big .*disconnected", offset=offset, timeout=30))
        self.honest_round_trip(honest, 1)
        last = self.raw("big")
        self.assertEqual(last.subscribe([("last/t", 1)], pid=3), [1])
        self.assert_broker_alive()


if __name__ == "__main__":
    main()
