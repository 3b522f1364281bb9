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


    def read_sys(self, suffixes):
        """One retained reading of the topics `suffixes`, by a client that
        subscribes to them alone and leaves: (values, PUBLISHes it got,
        their payload bytes), which the broker counts as sent."""
        c = self.raw()
        self.assertEqual(c.subscribe([(SYS + t, 0) for t in suffixes]), [0] * len(suffixes))
        values, count, nbytes = {}, 0, 0
        while len(values) < len(suffixes):
            pkt = c.recv_packet(5)
            if pkt.type == PUBLISH:
                values[pkt.topic[len(SYS):]] = int(pkt.payload)
                count += 1
                nbytes += len(pkt.payload)
        c.send(DISCONNECT_PKT)
        c.wait_closed()
        return values, count, nbytes

    def read_sys_until(self, suffixes, done, timeout=10.0):
        """Readings (read_sys) until done(values) holds; the last one."""
        deadline = time.monotonic() + timeout
        while True:
            values, _, _ = self.read_sys(suffixes)
            if done(values) or time.monotonic() > deadline:
                return values
            time.sleep(0.3)

    def offline_session(self, client_id, filt):
        """A persistent session subscribed to filt at QoS 1, its client gone."""
        c = self.raw(client_id, clean=False)
        self.assertEqual(c.subscribe([(filt, 1)]), [1])
        c.send(DISCONNECT_PKT)
        self.assertTrue(c.wait_closed())

    def test_publish_bytes_count_payloads(self):
        """publish/bytes/{received,sent} are the payload bytes of the
        PUBLISHes in and out (Mosquitto's meaning), and messages/sent counts
        the queued messages a session gets when it comes back. Nothing else
        subscribes to $SYS here, so the figures are exact."""
        received = ["publish/bytes/received", "messages/received"]
        sent = ["publish/bytes/sent", "messages/sent"]
        base, _, _ = self.read_sys(received)
        self.offline_session("sys-bytes-durable", "bytes/#")
        pub = self.raw("sys-bytes-pub")
        for i in range(10):
            pub.publish("bytes/t", b"p" * 500, qos=1, pid=1 + i)
        now = self.read_sys_until(received, lambda v: v["messages/received"] >= base["messages/received"] + 10)
        self.assertEqual(now, {"publish/bytes/received": base["publish/bytes/received"] + 5000,
                               "messages/received": base["messages/received"] + 10})
        # The ten queued messages go out when the session comes back.
        before, n, nbytes = self.read_sys(sent)
        back = self.raw("sys-bytes-durable", clean=False)
        for _ in range(10):
            self.assertEqual(len(back.recv_publish().payload), 500)
        want = {"messages/sent": before["messages/sent"] + 10 + n,
                "publish/bytes/sent": before["publish/bytes/sent"] + 5000 + nbytes}
        deadline = time.monotonic() + 10
        while True:
            now, n, nbytes = self.read_sys(sent)
            if all(now[k] >= v for k, v in want.items()) or time.monotonic() > deadline:
                break
            want["messages/sent"] += n
            want["publish/bytes/sent"] += nbytes
            time.sleep(0.3)
        # A reader may be sent a tick's update as it leaves: a little slack.
        self.assertTrue(want["messages/sent"] <= now["messages/sent"] <= want["messages/sent"] + 2, (now, want))
        self.assertTrue(want["publish/bytes/sent"] <= now["publish/bytes/sent"] <= want["publish/bytes/sent"] + 40,
                        (now, want))


    def test_messages_stored_counts_each_message_held_once(self):
        """messages/stored and store/messages/bytes are Mosquitto's message
        store: retained messages plus those queued for sessions, each once
        however many sessions hold it, and their payload bytes."""
        names = ["messages/stored", "store/messages/bytes", "retained messages/count", "store/messages/count"]
        # The first tick's figures were taken before any $SYS one was retained.
        base = self.read_sys_until(names, lambda v: v["retained messages/count"] > 0)
        self.assertEqual(base["messages/stored"], base["retained messages/count"])  # only $SYS's
        for cid in ("sys-held-a", "sys-held-b"):
            self.offline_session(cid, "held/#")
        pub = self.raw("sys-held-pub")
        for i in range(10):
            pub.publish("held/q", b"q" * 100, qos=1, pid=1 + i)
        for i in range(3):  # retained and queued for both: still one message each
            pub.publish("held/r/%d" % i, b"r" * 50, qos=1, retain=True, pid=20 + i)
        now = self.read_sys_until(names, lambda v: v["store/messages/count"] == 26)
        self.assertEqual(now["retained messages/count"], base["retained messages/count"] + 3)
        self.assertEqual(now["messages/stored"], base["messages/stored"] + 13)
        self.assertEqual(now["messages/stored"], now["retained messages/count"] + 10)
        # The $SYS values' own lengths grow with their numbers (by about 50
        # bytes over this test): slack of 100, well under one copy more.
        self.assertTrue(1150 <= now["store/messages/bytes"] - base["store/messages/bytes"] <= 1150 + 100,
                        (base, now))
        for cid in ("sys-held-a", "sys-held-b"):
            back = self.raw(cid, clean=False)
            for _ in range(13):
                back.recv_publish()
            back.send(DISCONNECT_PKT)
            self.assertTrue(back.wait_closed())
        now = self.read_sys_until(names, lambda v: v["store/messages/count"] == 0)
        self.assertEqual(now["messages/stored"], now["retained messages/count"])
        self.assertTrue(150 <= now["store/messages/bytes"] - base["store/messages/bytes"] <= 150 + 100, (base, now))


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
