#!/usr/bin/python3
# ctest: TIMEOUT 180
"""12 $SYS: with sys_interval 1, every topic README.md's $SYS list documents
is published and retained, and the counters track reality: connected and
offline clients, subscriptions, retained messages, received messages, and
dropped messages when a subscriber stalls (issue 14).

The documented topics are read from README.md's table, so a topic added
there is checked here, and a topic the broker publishes but the README does
not list fails the test."""

import os
import re
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from wisp_e2e import (DISCONNECT_PKT, PUBLISH, REPO_ROOT, BrokerTestCase, RawClient,  # noqa: E402
                      main, publish_pkt, skip_unless_wisp)

SYS = "$SYS/broker/"


def expand(pattern):
    """`a/{b,c}/{d,e}` -> the four topics."""
    m = re.search(r"\{([^{}]*)\}", pattern)
    if not m:
        return [pattern]
    out = []
    for alt in m.group(1).split(","):
        out += expand(pattern[:m.start()] + alt + pattern[m.end():])
    return out


def documented_topics():
    """The topics of README.md's "$SYS topics" table (first column)."""
    with open(os.path.join(REPO_ROOT, "README.md")) as f:
        text = f.read()
    section = text.split("### `$SYS` topics", 1)[1].split("\n#", 1)[0]
    topics = set()
    for line in section.splitlines():
        if not line.startswith("| `"):
            continue
        first_cell = line.split("|")[1]
        for name in re.findall(r"`([^`]+)`", first_cell):
            topics.update(SYS + t for t in expand(name))
    return topics


class SysWatcher:
    """A raw client subscribed to $SYS/#: the retained figures arrive at
    once, then one update per topic every sys_interval."""

    def __init__(self, test, client_id="sys-watch"):
        self.test = test
        self.client = test.raw(client_id)
        self.values = {}
        self.retain_flags = {}
        self.ticks = 0  # live (not retained) uptime messages seen: one per tick
        test.assertEqual(self.client.subscribe([("$SYS/#", 0)]), [0])

    def pump_until(self, done, what, timeout=10.0):
        """Reads $SYS messages until done(values) holds; bounded in time."""
        deadline = time.monotonic() + timeout
        while not done(self.values):
            left = deadline - time.monotonic()
            if left <= 0:
                self.test.fail("$SYS never showed %s; last values:\n%s" % (
                    what, "\n".join("  %s = %s" % kv for kv in sorted(self.values.items()))))
            try:
                pkt = self.client.recv_packet(left)
            except socket.timeout:
                continue
            if pkt.type != PUBLISH:
                continue
            topic = pkt.topic
            self.retain_flags.setdefault(topic, pkt.retain)
            self.values[topic] = pkt.payload.decode()
            if topic == SYS + "uptime" and not pkt.retain:
                self.ticks += 1  # a live update, not the retained copy
        return self.values

    def wait(self, want, timeout=10.0):
        """Until every topic in want ({suffix: value or callable}) matches."""
        def ok(values):
            for suffix, expected in want.items():
                v = values.get(SYS + suffix)
                if v is None or not (expected(v) if callable(expected) else v == str(expected)):
                    return False
            return True
        return self.pump_until(ok, repr(want), timeout)

    def next_tick(self):
        """Waits for a complete update published after this call."""
        target = self.ticks + 2  # the tick in progress may be half read: the next one is whole
        self.pump_until(lambda _v: self.ticks >= target, "two more ticks")


class SysCase(BrokerTestCase):

    def broker_options(self):
        return {"config": {"sys_interval": 1}}


@skip_unless_wisp("README.md's $SYS list is wisp's")
class SysTopicsTest(SysCase):

    def test_every_documented_topic_is_published_and_retained(self):
        documented = documented_topics()
        self.assertGreater(len(documented), 40, "README.md's $SYS table was not parsed")
        first = SysWatcher(self, "sys-first")
        first.next_tick()  # every topic has been published at least once
        # A subscriber arriving now gets every figure at once, retained
        # [MQTT-3.3.1-8]; nothing else may be under $SYS.
        late = SysWatcher(self, "sys-late")
        late.pump_until(lambda v: documented <= set(v), "every documented topic", timeout=5)
        not_retained = sorted(t for t in documented if not late.retain_flags[t])
        self.assertEqual(not_retained, [], "documented $SYS topics delivered without retain")
        undocumented = sorted(set(late.values) - documented)
        self.assertEqual(undocumented, [], "$SYS topics missing from README.md's $SYS list")
        self.assertTrue(late.values[SYS + "version"].startswith("wisp version "))
        self.assertRegex(late.values[SYS + "uptime"], r"^\d+ seconds$")

    def test_clients_and_subscriptions_track_reality(self):
        w = SysWatcher(self)
        w.wait({"clients/connected": 1, "clients/disconnected": 0, "subscriptions/count": 1})
        a = self.raw("sys-a")
        b = self.raw("sys-b", clean=False)
        self.assertEqual(a.subscribe([("x/1", 0), ("x/2", 1), ("x/+", 2)]), [0, 1, 2])
        self.assertEqual(b.subscribe([("y/#", 1)]), [1])
        w.wait({"clients/connected": 3, "clients/active": 3, "clients/total": 3,
                "subscriptions/count": 5})
        a.unsubscribe(["x/2"])
        w.wait({"subscriptions/count": 4})
        # b goes offline: its persistent session and subscription stay
        offset = self.broker.log_size()
        b.send(DISCONNECT_PKT)
        self.assertTrue(b.wait_closed())
        self.assertIsNotNone(self.broker.wait_log(r"client sys-b\b.*disconnect", offset, timeout=5))
        w.wait({"clients/connected": 2, "clients/disconnected": 1, "clients/inactive": 1,
                "clients/total": 3, "subscriptions/count": 4})
        # a closes: a clean session ends with its subscriptions
        a.close()
        w.wait({"clients/connected": 1, "clients/total": 2, "subscriptions/count": 2,
                "clients/maximum": lambda v: int(v) >= 3})

    def test_retained_and_received_counts_track_reality(self):
        w = SysWatcher(self)
        w.next_tick()
        base_retained = int(w.values[SYS + "retained messages/count"])
        base_received = int(w.values[SYS + "messages/received"])
        pub = self.raw("sys-pub")
        for i in range(3):
            pub.publish("r/%d" % i, "v", qos=1, retain=True, pid=1 + i)
        pub.publish("plain", "v", qos=1, pid=10)
        w.wait({"retained messages/count": base_retained + 3,
                "messages/received": base_received + 4,
                "publish/messages/received": base_received + 4})
        pub.publish("r/0", b"", qos=1, retain=True, pid=11)  # [MQTT-3.3.1-10] deletes it
        w.wait({"retained messages/count": base_retained + 2,
                "messages/received": base_received + 5})


    def test_load_rates_move_under_a_known_load(self):
        """Mosquitto's load/publish/{received,sent} (PUBLISH packets, here
        the same figures as load/messages/...) and load/sockets (connections
        accepted) rise with a few connections and publishes."""
        w = SysWatcher(self)
        w.next_tick()
        base_received = float(w.values[SYS + "load/publish/received/1min"])
        base_sockets = float(w.values[SYS + "load/sockets/1min"])
        sub = self.raw("sys-load-sub")
        self.assertEqual(sub.subscribe([("load/t", 0)]), [0])
        pub = self.raw("sys-load-pub")
        self.raw("sys-load-idle")
        for i in range(5):
            pub.publish("load/t", "v", qos=1, pid=1 + i)
        # 5 PUBLISHes and 3 sockets within a tick add about 5 and 3 to the
        # one-minute rates (per minute, damped by 1 - e^(-1/60)).
        w.wait({"load/publish/received/1min": lambda v: float(v) >= base_received + 2,
                "load/sockets/1min": lambda v: float(v) >= base_sockets + 1,
                "load/publish/sent/1min": lambda v: float(v) > 0})
        # A late subscriber gets one tick's retained figures: the aliases
        # carry the value of the topic they stand for.
        late = SysWatcher(self, "sys-load-late")
        names = [k + "/" + win for k in ("received", "sent") for win in ("1min", "5min", "15min")]
        late.pump_until(lambda v: all(SYS + "load/publish/" + n in v and SYS + "load/messages/" + n in v
                                      for n in names) and all(SYS + "load/sockets/" + win in v for win in ("5min", "15min")),
                        "the load/publish and load/sockets figures")
        for n in names:
            self.assertEqual(late.values[SYS + "load/publish/" + n], late.values[SYS + "load/messages/" + n], n)
        for win in ("5min", "15min"):
            self.assertGreater(float(late.values[SYS + "load/sockets/" + win]), 0)


@skip_unless_wisp("per-reason drop counters are wisp's")
class SysDroppedTest(SysCase):

    # Small, so that the stalled subscriber's output fills fast. (It also
    # bounds what a $SYS/# subscription gets at once: the watcher here
    # waits for the figures it needs, not for every retained topic.)
    LIMITS = {"max_output_buffer": 1024}

    def test_dropped_messages_of_a_stalled_subscriber(self):
        """A subscriber that stops reading loses QoS 0 messages past
        max_output_buffer: output_full and the total count them, and the
        total is the sum of the reasons."""
        w = SysWatcher(self)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2048)
        sock.settimeout(5)
        sock.connect(("127.0.0.1", self.broker.port))
        stalled = RawClient.__new__(RawClient)
        stalled.sock, stalled.buf, stalled.timeout, stalled.stash = sock, b"", 5.0, []
        stalled.session_present = None
        self.on_cleanup(stalled.close)
        self.assertEqual(stalled.connect("sys-stalled"), 0)
        self.assertEqual(stalled.subscribe([("big/t", 0)]), [0])
        pub = self.raw("sys-pub")
        payload = b"x" * 16384
        for i in range(20):  # bounded; the socket buffers fill well before
            pub.send(b"".join(publish_pkt("big/t", payload) for _ in range(64)))
            pub.publish("sync", "s", qos=1, pid=1 + i)
            if self.broker.wait_log(r"client sys-stalled: dropping messages", timeout=0):
                break
        reasons = ("queue_full", "queue_bytes", "output_full", "offline_qos0", "no_memory")

        def consistent(values):
            try:
                total = int(values[SYS + "publish/messages/dropped"])
                parts = sum(int(values[SYS + "messages/dropped/" + r]) for r in reasons)
                return int(values[SYS + "messages/dropped/output_full"]) > 0 and total == parts
            except KeyError:
                return False
        w.pump_until(consistent, "output_full > 0 and the total equal to the sum of the reasons")
        self.assert_broker_alive()


if __name__ == "__main__":
    main()
