#!/usr/bin/python3
# ctest: TIMEOUT 180
"""21 shared subscriptions, $share/{group}/{filter} (MQTT 5 section 4.8.2,
offered to 3.1.1 clients too): one delivery per message per group,
round-robin over the connected members, with real clients of both
versions (paho-mqtt MQTTv5 and MQTTv311, mosquitto_sub -V 5 and 311,
MQTT.js); unacknowledged QoS 1 messages of a member that leaves reach
another member; no retained messages on a shared subscription; malformed
share names refused; membership survives kill -9.

Run against Mosquitto 2.0.11 (WISP_E2E_BROKER=mosquitto), round-robin,
identifiers and two groups side by side pass; where it differs it is
said on the skipped test (it sends retained messages on a shared
subscription, grants No Local on one, closes the connection on a
malformed share name, and keeps a leaving member's messages)."""

import os
import queue
import shutil
import signal
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from wisp_e2e import (CONNACK, DISCONNECT_PKT, IO_TIMEOUT, PUBACK, PUBLISH, SUBACK, UNSUBACK, Broker,  # noqa: E402
                      BrokerTestCase, Closed, RawClient, main, paho_client, paho_stop,
                      ack_pkt, skip_unless_wisp, subscribe_pkt, unsubscribe_pkt)
from v5_clients import (MqttJs, paho5, paho5_get, paho5_nothing, paho5_stop, paho5_subscribe,  # noqa: E402
                        raw5, subscribe5)


def paho_subscribe(c, topic, qos):
    """Subscribes a paho 3.1.1 client and waits for its SUBACK."""
    _, mid = c.subscribe(topic, qos)
    got, granted = c.subacks.get(timeout=IO_TIMEOUT)
    assert got == mid, (got, mid)
    return list(granted)


def drain(q, into, key):
    while True:
        try:
            m = q.get_nowait()
        except queue.Empty:
            return
        into.append((key, m))


class SharedSubscriptionTest(BrokerTestCase):

    def paho5(self, client_id, **kw):
        c = paho5(self.broker.port, client_id, **kw)
        self.on_cleanup(lambda: paho5_stop(c))
        return c

    def publisher(self):
        p = self.paho("shared-pub")
        return p

    def test_round_robin_over_every_kind_of_client(self):
        """Five members of one group (paho v5, paho 3.1.1, mosquitto_sub
        -V 5 and -V 311, MQTT.js 5): every message is delivered exactly
        once across the group, and round-robin gives each the same share."""
        topic = "$share/workers/rr/t"
        p5 = self.paho5("rr-p5")
        self.assertEqual(paho5_subscribe(p5, topic, qos=1), [1])
        import paho.mqtt.client as mqtt
        p3 = self.paho("rr-p3", protocol=mqtt.MQTTv311)
        self.assertEqual(paho_subscribe(p3, topic, 1), [1])
        m5 = self.sub(topic, qos=1, extra=["-V", "5"]).wait_subscribed()
        m3 = self.sub(topic, qos=1, extra=["-V", "311"]).wait_subscribed()
        js = MqttJs(self.broker.port, """
const c = mqtt.connect({host: '127.0.0.1', port: PORT, protocolVersion: 5, clientId: 'rr-js'});
c.on('connect', () => c.subscribe('$share/workers/rr/t', {qos: 1},
  (err) => { if (err) process.exit(1); say('SUBSCRIBED'); }));
c.on('message', (topic, payload) => say('MSG ' + payload.toString()));
""")
        self.on_cleanup(js.kill)
        js.wait_line("SUBSCRIBED")

        pub = self.publisher()
        total = 20
        for i in range(total):
            pub.publish("rr/t", "m%d" % i, qos=1).wait_for_publish(IO_TIMEOUT)

        got = []  # (member, payload)
        deadline = time.monotonic() + IO_TIMEOUT * 2
        while len(got) < total and time.monotonic() < deadline:
            drain(p5.received, got, "p5")
            drain(p3.received, got, "p3")
            for name, s in (("m5", m5), ("m3", m3)):
                while True:
                    try:
                        item = s.lines.get_nowait()
                    except queue.Empty:
                        break
                    if item is not None:
                        got.append((name, item[3]))
            while True:
                try:
                    line = js.lines.get_nowait()
                except queue.Empty:
                    break
                if line and line.startswith("MSG "):
                    got.append(("js", line[4:]))
            time.sleep(0.05)
        payloads = [m if isinstance(m, str) else m.payload.decode() for _, m in got]
        self.assertEqual(sorted(payloads), sorted("m%d" % i for i in range(total)), got)
        per_member = {}
        for member, _ in got:
            per_member[member] = per_member.get(member, 0) + 1
        self.assertEqual(per_member, {"p5": 4, "p3": 4, "m5": 4, "m3": 4, "js": 4})
        # Nothing more: no member got a second copy.
        paho5_nothing(p5)
        m5.assert_nothing(0.2)

    def test_group_and_ordinary_subscription_side_by_side(self):
        """An ordinary subscriber gets every message; two groups on the same
        filter each get one copy; QoS is min(message, member's granted)."""
        a = self.paho5("gs-a")
        b = self.paho5("gs-b")
        c = self.paho5("gs-c")
        plain = self.paho5("gs-plain")
        self.assertEqual(paho5_subscribe(a, "$share/one/gs/#", qos=0), [0])
        self.assertEqual(paho5_subscribe(b, "$share/one/gs/#", qos=1), [1])
        self.assertEqual(paho5_subscribe(c, "$share/two/gs/+", qos=1), [1])
        self.assertEqual(paho5_subscribe(plain, "gs/x", qos=1), [1])
        pub = self.publisher()
        for i in range(4):
            pub.publish("gs/x", str(i), qos=1).wait_for_publish(IO_TIMEOUT)
        self.assertEqual(sorted(paho5_get(c).payload for _ in range(4)), [b"0", b"1", b"2", b"3"])
        self.assertEqual(sorted(paho5_get(plain).payload for _ in range(4)), [b"0", b"1", b"2", b"3"])
        one = [paho5_get(a), paho5_get(a), paho5_get(b), paho5_get(b)]
        self.assertEqual(sorted(m.payload for m in one), [b"0", b"1", b"2", b"3"])
        self.assertEqual([m.qos for m in one], [0, 0, 1, 1])
        for x in (a, b, c, plain):
            paho5_nothing(x, 0.2)

    def _hand_over(self, leave):
        """A raw 3.1.1 member that never acknowledges its QoS 1 messages,
        and a paho v5 member; `leave` makes the raw one leave."""
        raw = self.raw("ho-raw")
        self.assertEqual(list(raw.subscribe([("$share/g/ho/t", 1)])), [1])
        other = self.paho5("ho-other")
        self.assertEqual(paho5_subscribe(other, "$share/g/ho/t", qos=1), [1])
        pub = self.publisher()
        for i in range(4):
            pub.publish("ho/t", str(i), qos=1).wait_for_publish(IO_TIMEOUT)
        held = sorted(raw.expect(PUBLISH).payload for _ in range(2))  # never acknowledged
        seen = sorted(paho5_get(other).payload for _ in range(2))
        self.assertEqual(sorted(held + seen), [b"0", b"1", b"2", b"3"])
        leave(raw)
        handed = sorted(paho5_get(other).payload for _ in range(2))
        self.assertEqual(handed, held)
        paho5_nothing(other, 0.3)
        # The group goes on with the member left.
        pub.publish("ho/t", "after", qos=1).wait_for_publish(IO_TIMEOUT)
        self.assertEqual(paho5_get(other).payload, b"after")

    @skip_unless_wisp("Mosquitto 2.0.11 keeps them for the member that left")
    def test_unacked_messages_reach_another_member_on_unsubscribe(self):
        def leave(raw):
            raw.send(unsubscribe_pkt(9, ["$share/g/ho/t"]))
            raw.expect(UNSUBACK)
        self._hand_over(leave)

    @skip_unless_wisp("Mosquitto 2.0.11 keeps them for the member that left")
    def test_unacked_messages_reach_another_member_on_disconnect(self):
        self._hand_over(lambda raw: raw.close())

    @skip_unless_wisp("Mosquitto 2.0.11 sends retained messages on shared subscriptions")
    def test_no_retained_on_shared_subscription(self):
        """Retained messages go to a new Non-shared Subscription only
        (MQTT 5 section 3.3.1.3): none on a shared one (mosquitto_sub -V 311, paho
        v5); live messages do arrive."""
        self.pub("nr/t", "kept", qos=1, retain=True)
        m3 = self.sub("$share/g/nr/t", qos=1, extra=["-V", "311"]).wait_subscribed()
        m3.assert_nothing(0.5)
        p5 = self.paho5("nr-p5")
        self.assertEqual(paho5_subscribe(p5, "$share/h/nr/#", qos=1), [1])
        paho5_nothing(p5)
        self.pub("nr/t", "live", qos=1)
        self.assertEqual(m3.get()[3], "live")
        self.assertEqual(paho5_get(p5).payload, b"live")

    @skip_unless_wisp("Mosquitto 2.0.11 closes the connection instead")
    def test_malformed_share_names(self):
        """[MQTT-4.8.2-1] a ShareName of at least one character,
        [MQTT-4.8.2-2] without '/', '+', '#' and followed by '/' and a
        filter: 0x8F for v5, 0x80 for 3.1.1."""
        bad = ["$share//t", "$share/+/t", "$share/g#/t", "$share/g", "$share/g/"]
        old = self.raw("bad-311")
        self.assertEqual(list(old.subscribe([(f, 1) for f in bad])), [0x80] * len(bad))
        c = raw5(self, "bad-5")
        c.send(subscribe5(3, [(f, 1) for f in bad] + [("$share/g/t", 1)]))
        self.assertEqual(c.expect(SUBACK).body, b"\x00\x03\x00" + bytes([0x8F] * len(bad) + [0x01]))

    @skip_unless_wisp("Mosquitto 2.0.11 grants it")
    def test_no_local_on_shared_is_protocol_error(self):
        """[MQTT-3.8.3-4] No Local on a shared subscription: DISCONNECT 0x82
        and the connection closes."""
        c = raw5(self, "nl-shared")
        c.send(subscribe5(1, [("$share/g/t", 0x05)]))
        try:
            pkt = c.recv_packet()
        except Closed:
            self.fail("closed without DISCONNECT")
        self.assertEqual((pkt.first, pkt.body), (0xE0, b"\x82"))
        c.wait_closed()

    def test_identifier_and_user_properties_as_for_ordinary_subscriptions(self):
        """A member's Subscription Identifier comes with the message
        [MQTT-3.3.4-3] and the publisher's User Properties are forwarded
        unchanged [MQTT-3.3.2-17], as on an ordinary subscription."""
        from paho.mqtt.properties import Properties
        from paho.mqtt.packettypes import PacketTypes

        m = self.paho5("id-m")
        self.assertEqual(paho5_subscribe(m, "$share/g/id/t", qos=1, sub_id=7), [1])
        pub = self.paho5("id-pub")
        props = Properties(PacketTypes.PUBLISH)
        props.UserProperty = [("k", "v"), ("k", "w")]
        pub.publish("id/t", "x", qos=1, properties=props).wait_for_publish(IO_TIMEOUT)
        got = paho5_get(m)
        self.assertEqual(got.properties.SubscriptionIdentifier, [7])
        self.assertEqual(got.properties.UserProperty, [("k", "v"), ("k", "w")])

    def test_connack_announces_shared_subscriptions(self):
        """Shared Subscription Available is absent from the v5 CONNACK, which
        means 1: the broker supports them [MQTT-3.2.2.3.15]."""
        c = self.raw(connect=False)
        from v5_clients import connect5
        c.send(connect5("ssa"))
        ack = c.expect(CONNACK)
        props_len = ack.body[2]
        props = ack.body[3:3 + props_len]
        i = 0
        ids = []
        widths = {0x11: 4, 0x21: 2, 0x22: 2, 0x24: 1, 0x25: 1, 0x27: 4, 0x28: 1, 0x29: 1, 0x2A: 1, 0x13: 2}
        while i < len(props):
            pid = props[i]
            ids.append(pid)
            i += 1
            if pid in widths:
                if pid == 0x2A:
                    self.assertEqual(props[i], 1)
                i += widths[pid]
            else:  # a string property (0x12, 0x15, 0x1A, 0x1C, 0x1F) or a pair (0x26)
                n = int.from_bytes(props[i:i + 2], "big")
                i += 2 + n
                if pid == 0x26:
                    n = int.from_bytes(props[i:i + 2], "big")
                    i += 2 + n
        c.send(DISCONNECT_PKT)


@skip_unless_wisp("Wisp's $SYS topics")
class SharedSysTest(BrokerTestCase):
    """$SYS/broker/subscriptions/shared_groups counts the groups; the
    groups' own tree handles are not counted as subscriptions."""

    def broker_options(self):
        return {"config": {"sys_interval": 1}}

    def wait_sys(self, c, topic, want):
        """The value `topic` has once it reaches `want` (bounded: a few
        updates of one second)."""
        last = None
        for _ in range(200):
            pkt = c.recv_publish(timeout=IO_TIMEOUT)
            if pkt.topic == topic:
                last = pkt.payload
                if last == want:
                    return
        self.fail("%s never became %r (last %r)" % (topic, want, last))

    def test_shared_groups_counted(self):
        a = self.raw("sys-a")
        self.assertEqual(list(a.subscribe([("$share/g/sys/t", 0), ("$share/h/sys/t", 0)])), [0, 0])
        b = self.raw("sys-b")
        self.assertEqual(list(b.subscribe([("$share/g/sys/t", 0)])), [0])
        watch = self.raw("sys-watch")
        watch.subscribe([("$SYS/broker/subscriptions/shared_groups", 0), ("$SYS/broker/subscriptions/count", 0)])
        self.wait_sys(watch, "$SYS/broker/subscriptions/shared_groups", b"2")
        self.wait_sys(watch, "$SYS/broker/subscriptions/count", b"5")
        b.send(unsubscribe_pkt(2, ["$share/g/sys/t"]))
        b.expect(UNSUBACK)
        a.close()
        self.wait_sys(watch, "$SYS/broker/subscriptions/shared_groups", b"0")


@skip_unless_wisp("Wisp's ACL file")
class SharedAclTest(BrokerTestCase):
    """The ACL is asked about the filter a shared subscription reads, not
    about the $share/... string."""

    def broker_options(self):
        self.dir = tempfile.mkdtemp(prefix="wisp-shared-acl-")
        self.addCleanup(shutil.rmtree, self.dir, True)
        acl = os.path.join(self.dir, "acl")
        with open(acl, "w") as f:
            f.write("topic read acl/ok/#\ntopic write acl/#\n")
        return {"config": {"auth": {"acl_file": acl}}}

    def test_acl_on_the_inner_filter(self):
        c = self.raw("acl-m")
        self.assertEqual(list(c.subscribe([("$share/g/acl/ok/#", 1), ("$share/g/acl/no/#", 1),
                                           ("$share/acl/ok/#", 1)])), [1, 0x80, 0x80])
        self.pub("acl/ok/t", "yes", qos=1)
        self.assertEqual(c.recv_publish().payload, b"yes")
        self.pub("acl/no/t", "no", qos=1)
        c.assert_no_packet(0.3)


@skip_unless_wisp("kills and restarts the broker on its own store")
class SharedDurabilityTest(BrokerTestCase):
    """Group membership is a subscription like any other: after kill -9
    the members of a persistent session are back in their group."""

    def broker_options(self):
        return {"config": {"persistence": {"enabled": True, "dir": self.data, "fsync": "no"}}}

    def setUp(self):
        self.data = tempfile.mkdtemp(prefix="wisp-shared-store-")
        self.killed = []
        super().setUp()

    def tearDown(self):
        super().tearDown()
        for b in self.killed:
            b.cleanup()
        shutil.rmtree(self.data, ignore_errors=True)

    def restart_after_kill9(self):
        self.broker.proc.send_signal(signal.SIGKILL)
        self.assertEqual(self.broker.proc.wait(timeout=10), -signal.SIGKILL)
        self.broker.exit_status = -signal.SIGKILL
        self.killed.append(self.broker)
        self.broker = Broker(**self.broker_options()).start()

    def test_kill9_keeps_group_membership(self):
        import paho.mqtt.client as mqtt
        a = paho_client(self.broker.port, "k9-a", clean_session=False, protocol=mqtt.MQTTv311)
        self.assertEqual(paho_subscribe(a, "$share/g/k9/t", 1), [1])
        paho_stop(a)
        b = paho5(self.broker.port, "k9-b", clean_start=False, session_expiry=3600)
        self.assertEqual(paho5_subscribe(b, "$share/g/k9/t", qos=1), [1])
        paho5_stop(b)

        self.restart_after_kill9()

        a = paho_client(self.broker.port, "k9-a", clean_session=False, protocol=mqtt.MQTTv311)
        self.on_cleanup(lambda: paho_stop(a))
        self.assertTrue(a.session_present)
        b = paho5(self.broker.port, "k9-b", clean_start=False, session_expiry=3600)
        self.on_cleanup(lambda: paho5_stop(b))
        pub = RawClient(self.broker.port)
        self.on_cleanup(pub.close)
        self.assertEqual(pub.connect("k9-pub"), 0)
        for i in range(4):
            pub.publish("k9/t", str(i).encode(), qos=1, pid=i + 1)
        got_a = sorted(a.received.get(timeout=IO_TIMEOUT).payload for _ in range(2))
        got_b = sorted(paho5_get(b).payload for _ in range(2))
        self.assertEqual(sorted(got_a + got_b), [b"0", b"1", b"2", b"3"])
        paho5_nothing(b, 0.3)
        self.assertTrue(a.received.empty())

    def member(self, cid):
        c = RawClient(self.broker.port)
        self.on_cleanup(c.close)
        self.assertEqual(c.connect(cid, clean=False), 0)
        return c

    def publish_acked(self, topic, payloads):
        pub = RawClient(self.broker.port)
        self.on_cleanup(pub.close)
        self.assertEqual(pub.connect("st-pub"), 0)
        for i, p in enumerate(payloads):
            pub.publish(topic, p, qos=1, pid=i + 1)  # asserts the PUBACK
        pub.close()

    def drain(self, c, n):
        return sorted(c.recv_publish(timeout=IO_TIMEOUT).payload for _ in range(n))

    def test_member_back_after_kill9_takes_what_the_other_held(self):
        """A member holding the group's messages unacknowledged (in flight
        and queued) when the broker is killed: after the restart every
        member is restored offline, and the first that connects gets them
        all, as when a member leaves (README: hands its queued and
        unacknowledged messages to a member still connected). Before, they
        waited for the member that held them, for good if it never came."""
        held = self.member("st-held")
        held.subscribe([("$share/g/st/t", 1)])
        taker = self.member("st-taker")
        taker.subscribe([("$share/g/st/t", 1)])
        taker.close()  # offline: every message goes to `held`
        sent = [b"%02d" % i for i in range(30)]
        self.publish_acked("st/t", sent)
        first = held.expect(PUBLISH)  # in flight, never acknowledged
        self.assertEqual(first.qos, 1)
        self.restart_after_kill9()
        taker = self.member("st-taker")
        self.assertTrue(taker.session_present)
        self.assertEqual(self.drain(taker, len(sent)), sent)
        taker.assert_no_packet(0.3)

    def test_member_joining_takes_what_a_member_left_alone_holds(self):
        """A member that left while alone in its group keeps what it held
        and what came after; a member that joins takes it."""
        alone = self.member("st-alone")
        alone.subscribe([("$share/g2/st/u", 1)])
        self.publish_acked("st/u", [b"a0", b"a1"])
        self.assertEqual(alone.expect(PUBLISH).qos, 1)  # never acknowledged
        alone.close()
        self.assertTrue(self.broker.wait_log(r"client st-alone .*(closed|disconnected)", timeout=IO_TIMEOUT))
        self.publish_acked("st/u", [b"a2"])
        joiner = self.member("st-joiner")
        # The messages may come before the SUBACK (MQTT 5 section 3.8.4).
        joiner.send(subscribe_pkt(1, [("$share/g2/st/u", 1)]))
        got, subacked = [], False
        while len(got) < 3 or not subacked:
            p = joiner.recv_packet(timeout=IO_TIMEOUT)
            if p.type == SUBACK:
                subacked = True
            elif p.type == PUBLISH:
                got.append(p.payload)
                joiner.send(ack_pkt(PUBACK, p.pid))
        self.assertEqual(sorted(got), [b"a0", b"a1", b"a2"])


if __name__ == "__main__":
    main()
