#!/usr/bin/python3
# ctest: TIMEOUT 240
"""Durability (issues #8 and #14): the README's promise, "kill -9 never loses
an acknowledged message", in every fsync mode, with clients that behave as
real ones do.

CrashTest runs rounds on one data directory for each fsync mode (no,
everysec - the default, so left unset - and always). In each round:

- a persistent publisher (clean session 0) pipelines QoS 1 and QoS 2
  PUBLISHes and holds back some PUBRELs, so QoS 2 flows are open in every
  state: unanswered, PUBREC'd without a PUBREL sent, PUBREL sent;
- a persistent subscriber is online and keeps some acknowledgements back,
  so messages are in flight to it (sent, not yet acknowledged) in every
  state; another persistent subscriber is offline and its queue grows;
- the online subscriber's output buffer is small (max_output_buffer 1024),
  so its messages also wait in its queue and move into flight when a flush
  makes room;
- after a random delay the broker must answer a PINGREQ (it is alive: our
  SIGKILL is what stops it), traffic goes on for a few milliseconds, the
  publisher sends a burst of QoS 2 PUBLISHes, and the broker is killed with
  SIGKILL.

The next broker starts on the same directory and the clients reconnect with
clean session 0, doing what a real client does [MQTT-4.4.0-1]: the
publisher re-sends every PUBLISH it did not complete with DUP set, its
packet id and in the original order - a QoS 2 one it got no PUBREC for, and
also one it got a PUBREC for but sent no PUBREL (as a client whose PUBREC
was lost does) - and PUBREL for the others [MQTT-4.3.3]. The subscribers
keep their QoS 2 receiver state (ids awaiting PUBREL) across the reconnect,
as [MQTT-4.3.3-2]'s Method B asks, and what they never acknowledged must
come back as a re-delivery: the PUBLISH with DUP and its packet id, or the
PUBREL [MQTT-4.4.0-1]. A sentinel published after the re-sends
marks the point by which each subscriber must have everything: every
message whose PUBACK or PUBREC the publisher got reaches both subscribers,
QoS 1 at least once, QoS 2 exactly once, counted over all rounds (a QoS 2
message delivered in round 1 and again in round 3 is a failure); no QoS 2
message, acknowledged or not, arrives twice (a kill inside the broker's
write() itself can still make one not yet acknowledged arrive twice, rarely:
see TornWriteTest); the retained message is the
last one published. Every broker is checked: the killed ones died of our
SIGKILL with no sanitizer report in their log, the last one exits 0 on
SIGTERM with none.

The seed is fixed (printed); WISP_CRASH_SEED replays another one and
WISP_CRASH_ROUNDS (default 4 per mode) runs longer.
"""
import os
import random
import select
import shutil
import signal
import socket
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from wisp_e2e import (  # noqa: E402
    CONNACK, DISCONNECT_PKT, IS_MOSQUITTO, PINGREQ_PKT, PINGRESP, PUBACK, PUBCOMP, PUBLISH, PUBREC,
    PUBREL, SANITIZER_RE, SUBACK, Broker, RawClient, ack_pkt, connect_pkt, main, publish_pkt,
    subscribe_pkt,
)

ROUNDS = int(os.environ.get("WISP_CRASH_ROUNDS", "4"))
SEED = int(os.environ.get("WISP_CRASH_SEED", "20261129"))

PIPELINE = 200        # unanswered PUBLISHes the publisher keeps on the wire
HELD_PUBRELS = 30     # PUBREC'd QoS 2 flows whose PUBREL it holds back, at most
MAX_PER_ROUND = 20000  # messages per round: bounds the offline queue and the time
BURST = 20            # QoS 2 PUBLISHes sent just before the SIGKILL
# After the payload's name: with it, the online subscriber's window of
# max_inflight messages does not fit into max_output_buffer (CrashTest).
PAD = b"|" + b"." * 100


class Peer:
    """One client: its connection, driven by CrashTest.drive()'s select loop
    (non-blocking, so the publisher, the subscribers and the broker all keep
    moving), and its session state, which outlives the connection as a
    clean-session-0 client's does."""

    def __init__(self, client_id):
        self.client_id = client_id
        self.sock = None
        self.open = False     # connected, and the broker has not closed it
        self.frozen = False   # the broker is dead: take what it sent, send nothing
        self.inbuf = bytearray()
        self.outbuf = bytearray()
        self.session_present = None  # of the last CONNACK
        self.pingresps = 0

    def connect(self, port):
        self.close()
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.setblocking(False)
        self.inbuf, self.outbuf = bytearray(), bytearray()
        self.open, self.frozen, self.session_present = True, False, None
        self.send(connect_pkt(self.client_id, clean=False, keepalive=0))

    def send(self, data):
        """Queues data for the broker; False when it will never be sent."""
        if not self.open or self.frozen:
            return False
        self.outbuf += data
        return True

    def flush(self):
        while self.open and self.outbuf and not self.frozen:
            try:
                n = self.sock.send(self.outbuf)
            except BlockingIOError:
                return
            except OSError:
                self.open = False
                return
            del self.outbuf[:n]

    def read(self):
        try:
            data = self.sock.recv(1 << 16)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self.open = False
            return
        buf = self.inbuf
        buf += data
        pos = 0
        while len(buf) - pos >= 2:
            length, mult, i = 0, 1, pos + 1
            while i < len(buf):
                length += (buf[i] & 0x7F) * mult
                mult *= 128
                i += 1
                if not buf[i - 1] & 0x80:
                    break
                if i - pos > 4:
                    raise AssertionError("%s: bad Remaining Length from the broker" % self.client_id)
            else:
                break
            if len(buf) < i + length:
                break
            self.on_packet(buf[pos], bytes(buf[i:i + length]))
            pos = i + length
        del buf[:pos]

    def on_packet(self, first, body):
        ptype = first >> 4
        if ptype == CONNACK:
            if body[1] != 0:
                raise AssertionError("%s: CONNACK return code %d" % (self.client_id, body[1]))
            self.session_present = bool(body[0] & 1)
        elif ptype == PINGRESP:
            self.pingresps += 1
        else:
            self.on_other(ptype, first & 0x0F, body)

    def on_other(self, ptype, flags, body):
        raise AssertionError("%s: unexpected packet type %d: %r" % (self.client_id, ptype, body[:32]))

    def disconnect(self):
        self.send(DISCONNECT_PKT)
        self.sock.setblocking(True)
        self.sock.settimeout(5)
        self.sock.sendall(self.outbuf)
        self.outbuf = bytearray()
        self.close()

    def close(self):
        if self.sock is not None:
            self.sock.close()
        self.sock = None
        self.open = False


class Flow:
    """An outbound QoS 1/2 flow of the publisher. state: "sent" (no PUBACK or
    PUBREC yet), "rec" (PUBREC'd, PUBREL not sent), "rel" (PUBREL sent)."""

    __slots__ = ("topic", "key", "qos", "retain", "state")

    def __init__(self, topic, key, qos, retain):
        self.topic, self.key, self.qos, self.retain = topic, key, qos, retain
        self.state = "sent"

    def publish_pkt(self, pid, dup):
        return publish_pkt(self.topic, self.key + PAD, qos=self.qos, retain=self.retain, dup=dup, pid=pid)


class Publisher(Peer):
    """Pipelines QoS 1 and 2 PUBLISHes (the payload names the message) and
    records which ones the broker acknowledged: PUBACK, or PUBREC for QoS 2,
    after which the broker owns the message [MQTT-4.3.3]."""

    def __init__(self, rng):
        super().__init__("crash-pub")
        self.rng = rng
        self.flows = {}   # packet id -> Flow, in the order first sent
        self.acked = {}   # payload -> QoS, of every message acknowledged
        self.qos_of = {}  # payload -> QoS, of every message published
        self.held = []    # packet ids of "rec" flows, oldest first
        self.hold = False
        self.last_pid = 0
        self.resent = {"PUBLISH, no PUBREC yet": 0, "PUBLISH after PUBREC": 0, "PUBLISH QoS 1": 0,
                       "PUBREL": 0}

    def unanswered(self):
        return sum(1 for f in self.flows.values() if f.state == "sent")

    def publish(self, topic, key, qos, retain=False):
        for _ in range(65535):
            self.last_pid = self.last_pid % 65535 + 1
            if self.last_pid not in self.flows:
                break
        else:
            raise AssertionError("no free packet id")
        f = Flow(topic, key, qos, retain)
        self.flows[self.last_pid] = f
        self.qos_of[key] = qos
        self.send(f.publish_pkt(self.last_pid, False))

    def release(self, pid):
        # Once the PUBREL may have left, the PUBLISH is never sent again
        # [MQTT-4.3.3-1]: re-sending it could make the broker route it again.
        if self.send(ack_pkt(PUBREL, pid)):
            self.flows[pid].state = "rel"

    def on_other(self, ptype, flags, body):
        pid = int.from_bytes(body[:2], "big")
        f = self.flows.get(pid)
        want = {PUBACK: (1, "sent"), PUBREC: (2, "sent"), PUBCOMP: (2, "rel")}.get(ptype)
        if want is None or f is None or (f.qos, f.state) != want:
            raise AssertionError("crash-pub: packet type %d for packet id %d (%s)"
                                 % (ptype, pid, f and (f.qos, f.state)))
        if ptype == PUBACK:
            self.acked[f.key] = 1
            del self.flows[pid]
        elif ptype == PUBCOMP:
            del self.flows[pid]
        else:
            self.acked[f.key] = 2
            if self.hold and self.rng.random() < 0.3:
                f.state = "rec"
                self.held.append(pid)
                if len(self.held) > HELD_PUBRELS:
                    self.release(self.held.pop(0))
            else:
                self.release(pid)

    def resume(self):
        """After a reconnect: every unfinished flow again, in its order."""
        self.held = []
        for pid, f in self.flows.items():
            if f.state == "rec" and self.rng.random() < 0.5:
                f.state = "sent"  # a client that lost the PUBREC
                self.resent["PUBLISH after PUBREC"] += 1
            elif f.state == "sent":
                self.resent["PUBLISH QoS 1" if f.qos == 1 else "PUBLISH, no PUBREC yet"] += 1
            if f.state == "sent":
                self.send(f.publish_pkt(pid, True))
            else:
                self.resent["PUBREL"] += 1
                self.release(pid)


class Subscriber(Peer):
    """Counts the messages it delivers to its application: a QoS 2 PUBLISH
    whose packet id awaits PUBREL is the same message again and is not
    delivered twice [MQTT-4.3.3-2] (Method B). With lag > 0 it keeps its
    last `lag` acknowledgements back, so messages are in flight to it.
    What it never acknowledged, the broker must re-send after a reconnect
    [MQTT-4.4.0-1]: the PUBLISH with DUP [MQTT-3.3.1-1] and its packet id,
    or the PUBREL."""

    def __init__(self, client_id):
        super().__init__(client_id)
        self.awaiting_pubrel = {}  # packet id -> payload
        self.count = {}     # payload -> deliveries
        self.withheld = []  # (packet type, packet id, payload) of acks kept back
        self.unsent = []    # the same, for acks the dead broker never got
        self.owed = {}      # packet id -> (ack type, payload) the broker must re-send
        self.problems = []
        self.lag = 0
        self.suback = None
        self.dup_flags = 0  # PUBLISHes received with DUP set

    def connect(self, port):
        for ptype, pid, key in self.withheld + self.unsent:
            self.owed[pid] = (ptype, key)
        self.withheld, self.unsent = [], []
        super().connect(port)

    def set_lag(self, lag):
        self.lag = lag
        self.ack(None)

    def ack(self, entry):
        if entry is not None:
            self.withheld.append(entry)
        while len(self.withheld) > self.lag:
            ptype, pid, key = self.withheld.pop(0)
            if not self.send(ack_pkt(ptype, pid)):
                self.unsent.append((ptype, pid, key))

    def redelivered(self, ptype, pid, key, dup):
        if pid not in self.owed:
            return
        want, want_key = self.owed.pop(pid)
        if ptype == PUBREL and want == PUBCOMP:
            return
        if ptype == PUBLISH and want != PUBCOMP and want_key == key and dup:
            return
        self.problems.append("%s: unacknowledged %r (packet id %d) came back as %s %r%s [MQTT-4.4.0-1]"
                             % (self.client_id, want_key, pid, "PUBLISH" if ptype == PUBLISH else "PUBREL",
                                key, "" if dup or ptype != PUBLISH else " without DUP [MQTT-3.3.1-1]"))

    def on_other(self, ptype, flags, body):
        if ptype == PUBLISH:
            qos = (flags >> 1) & 3
            tlen = int.from_bytes(body[:2], "big")
            pid = int.from_bytes(body[2 + tlen:4 + tlen], "big")
            key = body[4 + tlen:].split(b"|", 1)[0]
            if flags & 8:
                self.dup_flags += 1
            self.redelivered(PUBLISH, pid, key, bool(flags & 8))
            if qos == 1:
                self.count[key] = self.count.get(key, 0) + 1
                self.ack((PUBACK, pid, key))
            elif qos == 2:
                if pid not in self.awaiting_pubrel:
                    self.awaiting_pubrel[pid] = key
                    self.count[key] = self.count.get(key, 0) + 1
                elif self.awaiting_pubrel[pid] != key:
                    raise AssertionError("%s: packet id %d, awaiting PUBREL for %r, reused for %r "
                                         "[MQTT-2.3.1-2]" % (self.client_id, pid, self.awaiting_pubrel[pid], key))
                self.ack((PUBREC, pid, key))
            else:
                raise AssertionError("%s: QoS 0 delivery of %r" % (self.client_id, key))
        elif ptype == PUBREL:
            pid = int.from_bytes(body[:2], "big")
            self.redelivered(PUBREL, pid, None, False)
            self.ack((PUBCOMP, pid, self.awaiting_pubrel.pop(pid, None)))
        elif ptype == SUBACK:
            self.suback = body[2:]
        else:
            super().on_other(ptype, flags, body)


class StoreCase(unittest.TestCase):
    """Brokers sharing one data directory, killed or stopped by the test."""

    PREFIX = "wisp-store-"

    def setUp(self):
        if IS_MOSQUITTO:
            self.skipTest("mosquitto: saves its store on an interval, wisp writes before it acknowledges")
        self.data = tempfile.mkdtemp(prefix=self.PREFIX)
        self.brokers = []

    def tearDown(self):
        for b in self.brokers:
            if b.alive():
                b.proc.kill()
                b.proc.wait(timeout=10)
            b.cleanup()
        shutil.rmtree(self.data, ignore_errors=True)

    def start(self, persistence, limits=None):
        b = Broker(limits=limits, config={"persistence": dict(enabled=True, **persistence)})
        self.brokers.append(b)
        return b.start()

    def kill9(self, b):
        """SIGKILL; the broker must have been alive until then, with no sanitizer report."""
        b.proc.send_signal(signal.SIGKILL)
        status = b.proc.wait(timeout=10)
        b.exit_status = status  # stop() must not call it a crash: checked here
        self.assertEqual(status, -signal.SIGKILL, "the broker died before the SIGKILL")
        self.assertIsNone(SANITIZER_RE.search(b.log()), "sanitizer report in a killed broker's log")


class CrashTest(StoreCase):
    PREFIX = "wisp-crash-"

    def broker(self, fsync):
        persistence = {"dir": os.path.join(self.data, "store")}
        if fsync is not None:
            persistence["fsync"] = fsync
        # The offline queue must hold every message of a round: messages over
        # the queue bounds are dropped by design (and counted), which is not
        # what this test is about. A small output buffer makes the online
        # subscriber's messages wait in its queue too, and move into flight
        # when a flush makes room.
        self.current = self.start(persistence, limits={"max_queued_messages": 2 * MAX_PER_ROUND,
                                                       "max_queued_bytes": 0, "max_output_buffer": 1024})
        return self.current

    def drive(self, peers, done, what, timeout=20.0, tick=None):
        """Runs the clients until done() (tick() first in every turn); fails
        after timeout seconds, or when the broker closes a connection that is
        not frozen."""
        deadline = time.monotonic() + timeout
        while not done():
            if time.monotonic() > deadline:
                self.fail("%s: not within %.0f s" % (what, timeout))
            if tick is not None:
                tick()
            for p in peers:
                p.flush()
                if not p.open and not p.frozen:
                    self.fail("%s: the broker closed %s's connection" % (what, p.client_id))
            live = [p for p in peers if p.open]
            if not live:
                self.fail("%s: every connection is closed" % what)
            r, w, _ = select.select([p.sock for p in live],
                                    [p.sock for p in live if p.outbuf and not p.frozen], [], 0.05)
            for p in live:
                if p.sock in r:
                    p.read()

    def load_and_kill(self, b, rnd, rng, pub, live):
        """Traffic, then SIGKILL once the broker answered a PINGREQ."""
        pub.hold = True
        live.set_lag(rng.randint(1, 15))
        pub.publish("crash/state", b"retained-%d" % rnd, 1, retain=True)
        acked_before = len(pub.acked)
        seq = [0]
        kill_at = time.monotonic() + 0.05 + rng.random() * 0.6

        def publish(qos):
            seq[0] += 1
            pub.publish("crash/r%d" % rnd, b"%d:%d:%d" % (rnd, qos, seq[0]), qos)

        def tick():
            while pub.unanswered() < PIPELINE and seq[0] < MAX_PER_ROUND:
                publish(1 + rng.randrange(2))

        # A slow (sanitizer) build may need a while for the first acks.
        self.drive([pub, live], lambda: (time.monotonic() >= kill_at and len(pub.acked) > acked_before
                                         and live.withheld and pub.held), "traffic before the kill", tick=tick)
        pings = live.pingresps
        live.send(PINGREQ_PKT)
        self.drive([pub, live], lambda: live.pingresps > pings, "PINGRESP before the kill", tick=tick)
        # Traffic goes on for a few milliseconds; then a burst the broker has
        # not answered yet, or is just reading, routing or writing, when it dies.
        kill_at = time.monotonic() + rng.random() * 0.02
        self.drive([pub, live], lambda: time.monotonic() >= kill_at, "traffic before the kill", tick=tick)
        for _ in range(BURST):
            publish(2)
        pub.flush()
        self.kill9(b)
        in_flight = len(live.withheld)
        states = [f.state for f in pub.flows.values()]
        # Whatever the broker sent before it died still counts.
        pub.frozen = live.frozen = True
        self.drive([pub, live], lambda: not pub.open and not live.open, "EOF from the killed broker")
        self.assertGreater(in_flight, 0)
        return "%d published, %d acks to the broker held back, publisher flows %d unanswered, %d PUBREC'd, " \
               "%d PUBREL'd" % (seq[0] + 1, in_flight, states.count("sent"), states.count("rec"),
                                states.count("rel"))

    def recover(self, b, rnd, pub, subs):
        """Reconnects everyone, completes the publisher's flows, and waits
        until both subscribers have a sentinel published after them."""
        self.assertRegex(b.log(), r"restored 3 sessions")
        peers = [pub] + subs
        for p in peers:
            p.connect(b.port)
        for s in subs:
            s.set_lag(0)
        self.drive(peers, lambda: all(p.session_present is not None for p in peers), "CONNACK")
        for p in peers:
            self.assertTrue(p.session_present, "[MQTT-3.2.2-2] %s: session present" % p.client_id)
        pub.hold = False
        pub.resume()
        self.drive(peers, lambda: not pub.flows, "the publisher's flows to complete")
        # Delivered in order after everything queued or re-sent before it.
        sentinel = b"sentinel-%d" % rnd
        pub.publish("crash/sentinel", sentinel, 1)
        self.drive(peers, lambda: not pub.flows and all(sentinel in s.count and not s.awaiting_pubrel
                                                        for s in subs), "the sentinel at both subscribers")
        # The broker has read every acknowledgement sent before the PINGREQ.
        pings = [s.pingresps for s in subs]
        for s in subs:
            s.send(PINGREQ_PKT)
        self.drive(peers, lambda: all(s.pingresps > n for s, n in zip(subs, pings)), "PINGRESP")

    def check(self, pub, subs):
        problems = []
        for s in subs:
            problems += s.problems
            problems += ["%s: unacknowledged %r (packet id %d) never came back [MQTT-4.4.0-1]"
                         % (s.client_id, key, pid) for pid, (_, key) in s.owed.items()]
            for key, qos in pub.acked.items():
                n = s.count.get(key, 0)
                if n == 0 or (qos == 2 and n > 1):
                    problems.append("%s: acknowledged QoS %d message %r delivered %d times"
                                    % (s.client_id, qos, key, n))
            for key, n in s.count.items():
                if key not in pub.qos_of:
                    problems.append("%s: message %r was never published" % (s.client_id, key))
                elif key not in pub.acked and pub.qos_of[key] == 2 and n > 1:
                    problems.append("%s: QoS 2 message %r delivered %d times" % (s.client_id, key, n))
        if problems:
            self.fail("%d problems (of %d messages acknowledged):\n  %s"
                      % (len(problems), len(pub.acked), "\n  ".join(problems[:30])))

    def check_retained(self, b, rnd):
        with RawClient(b.port) as check:
            check.connect("crash-check")
            check.subscribe([("crash/state", 1)])
            p = check.recv_publish()
            self.assertEqual((p.payload, p.retain), (b"retained-%d" % rnd + PAD, True), "retained message")

    def run_rounds(self, fsync):
        mode = fsync or "everysec"
        rng = random.Random("%s/%d" % (mode, SEED))
        sys.stderr.write("\ncrash test (fsync %s): seed %d, %d rounds (WISP_CRASH_SEED, WISP_CRASH_ROUNDS)\n"
                         % (mode, SEED, ROUNDS))
        pub, live, off = Publisher(rng), Subscriber("crash-live"), Subscriber("crash-off")
        subs = [live, off]
        b = self.broker(fsync)
        try:
            self.assertRegex(b.log(), r"fsync %s\)" % mode)
            for s in subs:  # the sessions keep the subscription through every restart
                s.connect(b.port)
                s.send(subscribe_pkt(1, [("crash/#", 2)]))
                self.drive([s], lambda: s.suback is not None, "SUBACK")
                self.assertEqual(s.suback, b"\x02")
            off.disconnect()
            pub.connect(b.port)
            self.drive([pub, live], lambda: pub.session_present is not None, "CONNACK")
            for rnd in range(ROUNDS):
                what = self.load_and_kill(b, rnd, rng, pub, live)
                b = self.broker(fsync)
                self.recover(b, rnd, pub, subs)
                self.check(pub, subs)
                self.check_retained(b, rnd)
                off.disconnect()
                sys.stderr.write("  round %d: %s; after the restart all %d acknowledged messages delivered "
                                 "(%d re-sent with DUP)\n" % (rnd, what, len(pub.acked), live.dup_flags))
            for p in (pub, live):
                p.disconnect()
            sys.stderr.write("  the publisher re-sent: %s\n" % ", ".join(
                "%s %d" % kv for kv in pub.resent.items()))
            self.assertGreater(pub.resent["PUBLISH after PUBREC"], 0)
            self.assertGreater(pub.resent["PUBLISH, no PUBREC yet"], 0)
            self.assertGreater(live.dup_flags, 0, "in-flight messages re-sent with DUP [MQTT-3.3.1-1]")
            b.stop()
        except AssertionError as e:
            raise AssertionError("fsync %s, seed %d (WISP_CRASH_SEED=%d replays it): %s\n%s"
                                 % (mode, SEED, SEED, e, self.current.log_banner(20000))) from None

    def test_kill9_loses_no_acknowledged_message_fsync_no(self):
        self.run_rounds("no")

    def test_kill9_loses_no_acknowledged_message_fsync_everysec_default(self):
        self.run_rounds(None)

    def test_kill9_loses_no_acknowledged_message_fsync_always(self):
        self.run_rounds("always")


class TornWriteTest(StoreCase):
    """kill -9 can tear the broker's write of a turn's records: Linux stops
    copying a write() at a page or folio boundary once a fatal signal is
    pending, and the loader truncates what follows the last whole record (a
    512 MiB write killed after 50 ms left 26 to 50 MiB here). A QoS 2 PUBLISH
    from a persistent publisher appends its records as one group; for every
    prefix of that group a tear can leave, the publisher, which got no PUBREC,
    re-sends it with DUP [MQTT-4.3.3], and the message must reach the
    subscriber: a stored packet id without the message would make the broker
    acknowledge the re-send as a duplicate and drop it. (A prefix holding the
    queued copy without the id lets the re-send be routed again: that copy
    arrives twice. Only a record group the loader keeps or drops whole would
    avoid it.)"""

    def broker(self):
        return self.start({"dir": self.data, "fsync": "no"})

    def log_path(self):
        logs = sorted(f for f in os.listdir(self.data) if f.startswith("log."))
        return os.path.join(self.data, logs[-1])

    @staticmethod
    def frames(path, start):
        """(offset, size, type) of each record frame in path from start."""
        with open(path, "rb") as f:
            data = f.read()
        out, pos = [], start
        while pos < len(data):
            size = 16 + int.from_bytes(data[pos:pos + 4], "little")
            out.append((pos, size, data[pos + 4]))
            pos += size
        assert pos == len(data), "frames do not end at the end of %s" % path
        return out

    def test_qos2_publish_torn_anywhere_is_never_lost(self):
        b = self.broker()
        with RawClient(b.port) as sub:
            sub.connect("torn-sub", clean=False)
            sub.subscribe([("torn/#", 2)])
            sub.send(DISCONNECT_PKT)
        pub = RawClient(b.port)
        pub.connect("torn-pub", clean=False)
        pub.ping()  # every earlier record is written: the broker is idle
        path = self.log_path()
        before = os.path.getsize(path)
        pub.send(publish_pkt("torn/x", b"torn", qos=2, pid=7))
        pub.expect(PUBREC)  # sent once its records were written
        self.kill9(b)
        pub.close()
        frames = self.frames(path, before)
        self.assertEqual(sorted(t for _, _, t in frames), [1, 9, 13], "MSG_PUT, QUEUE_ADD, QOS2_IN_ADD")
        saved = os.path.join(tempfile.mkdtemp(prefix="wisp-torn-"), "store")
        shutil.copytree(self.data, saved)
        self.addCleanup(shutil.rmtree, os.path.dirname(saved), True)
        for kept in range(len(frames) + 1):
            shutil.rmtree(self.data)
            shutil.copytree(saved, self.data)
            if kept < len(frames):  # torn inside the next record
                with open(path, "r+b") as f:
                    f.truncate(frames[kept][0] + frames[kept][1] // 2)
            b = self.broker()
            with RawClient(b.port) as pub:
                pub.connect("torn-pub", clean=False)
                pub.send(publish_pkt("torn/x", b"torn", qos=2, dup=True, pid=7))
                self.assertEqual(pub.expect(PUBREC).pid, 7)
                pub.send(ack_pkt(PUBREL, 7))
                self.assertEqual(pub.expect(PUBCOMP).pid, 7)
                pub.publish("torn/x", b"sentinel", qos=1, pid=8)
            got = []
            with RawClient(b.port) as sub:
                sub.connect("torn-sub", clean=False)
                while not got or got[-1] != b"sentinel":  # in order after everything before it
                    self.assertLess(len(got), 10, got)
                    got.append(sub.recv_publish().payload)
            b.stop()
            what = "the first %d of the PUBLISH's records %s kept" % (kept, [t for _, _, t in frames])
            self.assertGreaterEqual(got.count(b"torn"), 1, "acknowledged QoS 2 message lost, " + what)
            if kept in (0, len(frames)):
                self.assertEqual(got.count(b"torn"), 1, what)


class RedeliveryTest(StoreCase):
    """A PUBLISH the broker puts on the wire to a persistent subscriber is
    recorded as in flight before it leaves, so that after kill -9 it is
    re-sent as what it is: a re-delivery, with DUP set [MQTT-3.3.1-1] and its
    packet id [MQTT-4.4.0-1]. Also one that waited in the queue for room in
    the subscriber's output buffer and was sent by the flush that made the
    room: the broker is killed while idle, so no later turn writes what the
    last one left pending. (Sent anew, it gets a packet id chosen again,
    which after the 16-bit ids wrap is not the one a QoS 2 receiver still
    holds: it would deliver the message twice.)"""

    def test_messages_on_the_wire_come_back_with_dup_and_their_ids(self):
        def broker():
            return self.start({"dir": self.data, "fsync": "no"},
                              limits={"max_output_buffer": 1024, "max_inflight": 20})
        b = broker()
        sub = RawClient(b.port)
        sub.connect("redel-sub", clean=False)
        sub.subscribe([("redel/#", 1)])
        pub = RawClient(b.port)
        pub.connect("redel-pub")
        n = 20  # 120-byte messages: about 8 fit under max_output_buffer, the rest queue
        pub.send(b"".join(publish_pkt("redel/x", b"m%02d-" % i + b"x" * 100, qos=1, pid=i + 1)
                          for i in range(n)))
        for _ in range(n):
            pub.expect(PUBACK)
        sent = {}
        for _ in range(n):  # all in flight: none acknowledged
            p = sub.expect(PUBLISH)
            sent[p.payload] = (p.pid, True)
        self.kill9(b)
        sub.close()
        pub.close()
        b = broker()
        again = {}
        with RawClient(b.port) as sub:
            sub.send(connect_pkt("redel-sub", clean=False, keepalive=0))
            self.assertEqual(sub.expect(CONNACK).body, b"\x01\x00")
            for _ in range(n):
                p = sub.expect(PUBLISH)
                again[p.payload] = (p.pid, p.dup)
                sub.send(ack_pkt(PUBACK, p.pid))
            sub.ping()
        b.stop()
        wrong = sorted(k[:3] for k in sent if again.get(k) != sent[k])
        self.assertEqual(wrong, [], "not re-sent with DUP and their packet id (of %d)" % n)


class CompactionTest(StoreCase):
    """Compaction rewrites the live state into a snapshot: after several
    compactions and a restart, queued messages are all there once and in
    order, acknowledged ones stay gone, retained messages are as last set."""

    def broker(self):
        return self.start({"dir": self.data, "fsync": "no", "compact_min_size": 65536},
                          limits={"max_queued_messages": 10000})

    def test_state_survives_compactions_and_restart(self):
        b = self.broker()
        keeper = RawClient(b.port)
        keeper.connect("comp-keeper", clean=False)
        keeper.subscribe([("comp/#", 1)])
        keeper.close()
        live = RawClient(b.port)
        live.connect("comp-live", clean=False)
        live.subscribe([("comp/#", 1)])
        pub = RawClient(b.port)
        pub.connect("comp-pub")
        pub.publish("comp/ret", b"r0", qos=1, retain=True, pid=1)
        pub.publish("comp/gone", b"bye", qos=1, retain=True, pid=2)
        # A '$' topic: '#' never matches it [MQTT-4.7.2-1], so a snapshot
        # that walked the retained store with '#' dropped it.
        pub.publish("$comp/ret", b"dollar", qos=1, retain=True, pid=60001)
        n = 3000
        for i in range(n):
            pub.publish("comp/m", b"msg-%05d-" % i + b"x" * 48, qos=1, pid=3 + i % 60000)
            got = live.recv_publish()
            live.send(ack_pkt(PUBACK, got.pid))
        pub.publish("comp/ret", b"r1", qos=1, retain=True, pid=1)
        pub.publish("comp/gone", b"", qos=1, retain=True, pid=2)
        for _ in range(4):  # the last live deliveries: retained updates and the clear
            got = live.recv_publish()
            live.send(ack_pkt(PUBACK, got.pid))
        live.ping()
        live.send(b"\xe0\x00")
        live.close()
        pub.close()
        b.stop()
        snaps = [f for f in os.listdir(self.data) if f.startswith("snap.")]
        self.assertTrue(snaps, "no compaction happened: %s" % os.listdir(self.data))

        b = self.broker()
        self.assertRegex(b.log(), r"restored 2 sessions")
        live = RawClient(b.port)
        live.send(connect_pkt("comp-live", clean=False, keepalive=0))
        self.assertEqual(live.expect(2).body, b"\x01\x00")
        live.assert_no_packet(wait=1.0)  # everything it acknowledged stays acknowledged
        live.close()
        keeper = RawClient(b.port)
        keeper.send(connect_pkt("comp-keeper", clean=False, keepalive=0))
        keeper.expect(2)
        payloads = []
        while True:
            try:
                p = keeper.recv_publish(timeout=2.0)
            except Exception:  # noqa: BLE001 - drained
                break
            payloads.append(p.payload)
            keeper.send(ack_pkt(PUBACK, p.pid))
        keeper.close()
        msgs = [x for x in payloads if x.startswith(b"msg-")]
        self.assertEqual(len(msgs), n, "each queued message exactly once")
        self.assertEqual(msgs, sorted(msgs), "in order")
        check = RawClient(b.port)
        check.connect("comp-check")
        check.subscribe([("comp/ret", 1), ("comp/gone", 1)])
        p = check.recv_publish()
        self.assertEqual((p.topic, p.payload, p.retain), ("comp/ret", b"r1", True))
        check.assert_no_packet(wait=0.5)  # comp/gone was cleared
        check.subscribe([("$comp/ret", 1)], pid=2)
        p = check.recv_publish()
        self.assertEqual((p.topic, p.payload, p.retain), ("$comp/ret", b"dollar", True))
        check.close()
        b.stop()


class DamagedStoreTest(StoreCase):
    """A torn or bit-flipped log at start-up: the broker starts, keeps what is
    intact and says what it dropped; it never crashes on a bad file."""

    def broker(self):
        return self.start({"dir": self.data, "fsync": "no"})

    def fill(self, n):
        b = self.broker()
        c = RawClient(b.port)
        c.connect("keeper", clean=False)
        c.subscribe([("d/#", 1)])
        c.close()
        p = RawClient(b.port)
        p.connect("filler")
        for i in range(1, n + 1):
            p.publish("d/x", b"msg-%04d" % i, qos=1, pid=i)
        p.close()
        b.stop()

    def log_file(self):
        logs = sorted(f for f in os.listdir(self.data) if f.startswith("log."))
        self.assertTrue(logs, os.listdir(self.data))
        return os.path.join(self.data, logs[-1])

    def received(self, b):
        c = RawClient(b.port)
        c.send(connect_pkt("keeper", clean=False, keepalive=0))
        c.expect(2)
        got = []
        while True:
            try:
                p = c.recv_publish(timeout=1.0)
            except Exception:  # noqa: BLE001 - drained
                break
            got.append(p.payload)
            c.send(ack_pkt(PUBACK, p.pid))
        c.close()
        return got

    def test_torn_tail_is_truncated_and_the_rest_kept(self):
        self.fill(50)
        path = self.log_file()
        size = os.path.getsize(path)
        with open(path, "r+b") as f:
            f.truncate(size - 7)
        b = self.broker()
        got = self.received(b)
        self.assertGreaterEqual(len(got), 45)
        self.assertEqual(got, sorted(got), "order kept")
        self.assertRegex(b.log(), r"(?i)truncat")
        b.stop()

    def test_bit_flip_in_the_middle_skips_only_that_record(self):
        self.fill(50)
        path = self.log_file()
        size = os.path.getsize(path)
        with open(path, "r+b") as f:
            f.seek(size // 2)
            byte = f.read(1)
            f.seek(size // 2)
            f.write(bytes([byte[0] ^ 0x10]))
        b = self.broker()
        got = self.received(b)
        self.assertGreaterEqual(len(got), 40, "only the damaged region is lost")
        self.assertRegex(b.log(), r"(?i)damage|corrupt|skip")
        b.stop()

    def test_garbage_header_refuses_to_start_with_the_file_named(self):
        self.fill(3)
        path = self.log_file()
        with open(path, "r+b") as f:
            f.write(b"NOTWISP!")
        b = Broker(config={"persistence": {"enabled": True, "dir": self.data}})
        self.brokers.append(b)
        status, log = b.start_failing()
        self.assertEqual(status, 1)
        self.assertIn(os.path.basename(path), log)



if __name__ == "__main__":
    main()
