"""MQTT v5 in wisp_pub/wisp_sub against mosquitto_pub/sub 2.0.11: -V 5, -D
properties for every command, v5 fields in -F and %j/%J, reason codes.

Three parts, each comparing the same command line run through both tools
(stdout, stderr with program names normalised, exit status):
- option errors: every way -D can be wrong, no broker needed;
- round trips through a Debian Mosquitto broker (it speaks v5 fully, so
  the comparison does not depend on the wisp broker; e2e_clients_v5_wisp
  runs them through the wisp broker too): properties a publisher sets
  and a subscriber prints, will and subscribe properties, CONNACK refusals;
- a scripted fake broker (one per test, on a loopback port) that answers
  with chosen v5 reason codes and sends what Mosquitto never does (topic
  aliases, several subscription identifiers), so each reason text and exit
  status is checked.
Synchronisation as in clitest: retained sentinels, a probe's SUBACK, the
fake broker's own log of packets; no sleeps.
"""
import os
import re
import signal
import struct
import unittest

import clitest

NOPORT = str(clitest.refused_port())
PROPS_FMT = "%t|%q|%r|%l|%P|%C|%D|%F|%R|%S|%A|%p"

# -D mistakes, each with mosquitto's message and status (compared, not written out).
D_ERRORS = [
    ["-D"], ["-D", "publish"], ["-D", "publish", "content-type"], ["-D", "publish", "user-property", "k"],
    ["-D", "publsh", "content-type", "x"], ["-D", "suback", "user-property", "a", "b"],
    ["-D", "publish", "no-such-property", "1"], ["-D", "publish", "session-expiry-interval", "1"],
    ["-D", "connect", "content-type", "x"], ["-D", "connect", "server-keep-alive", "5"],
    ["-D", "connect", "reason-string", "x"], ["-D", "connect", "assigned-client-identifier", "x"],
    ["-D", "will", "topic-alias", "1"], ["-D", "subscribe", "topic-alias", "1"],
    ["-D", "publish", "subscription-identifier", "1"], ["-D", "subscribe", "content-type", "x"],
    ["-D", "auth", "authentication-method", "x"], ["-D", "puback", "user-property", "a", "b"],
    ["-D", "pubrec", "user-property", "a", "b"], ["-D", "pubrel", "user-property", "a", "b"],
    ["-D", "pubcomp", "user-property", "a", "b"], ["-D", "connack", "user-property", "a", "b"],
    ["-D", "connack", "session-expiry-interval", "5"], ["-D", "disconnect", "will-delay-interval", "5"],
    ["-D", "publish", "message-expiry-interval", "-1"], ["-D", "publish", "message-expiry-interval", "4294967296"],
    ["-D", "publish", "payload-format-indicator", "256"], ["-D", "publish", "topic-alias", "65536"],
    ["-D", "subscribe", "subscription-identifier", "268435456"], ["-D", "publish", "topic-alias", "0"],
    ["-D", "connect", "maximum-packet-size", "0"], ["-D", "connect", "receive-maximum", "0"],
    ["-D", "connect", "request-problem-information", "2"], ["-D", "connect", "request-response-information", "2"],
    ["-D", "publish", "content-type", "a", "-D", "publish", "content-type", "b"],
    ["-D", "connect", "session-expiry-interval", "30", "-x", "60"],
    ["-D", "connect", "session-expiry-interval", "30", "-x", "60", "--quiet"],
    ["-D", "connect", "session-expiry-interval", "30", "-c", "-i", "id"],
    ["-D", "will", "user-property", "a", "b", "-D", "will", "will-delay-interval", "1",
     "-D", "will", "will-delay-interval", "2"],
    ["-D", "disconnect", "session-expiry-interval", "1", "-D", "disconnect", "session-expiry-interval", "2"],
    ["-D", "unsubscribe", "user-property", "a", "b", "-D", "unsubscribe", "reason-string", "x"],
    ["-D", "publish", "content-type", "\udcff"], ["-D", "publish", "user-property", "\udcff", "v"],
    ["-D", "publish", "correlation-data", "x" * 65536], ["-D", "PUBLISH", "Topic-Alias", "0"],
    # libmosquitto's UTF-8 check also refuses controls and noncharacters.
    ["-D", "publish", "content-type", "a\x01b"], ["-D", "publish", "response-topic", "\x7f"],
    ["-D", "publish", "user-property", "\u0085", "v"], ["-D", "will", "content-type", "\ufdd0"],
    ["-D", "connect", "authentication-method", "\U0001ffff"], ["-D", "publish", "content-type", "\ufffe"],
    ["-D", "publish", "content-type", "\u00a0\ud7ff\U0010fffd"], ["--will-topic", "w\x1f"],
    # Properties, then v3: mosquitto refuses them at connect or will time.
    ["-D", "connect", "user-property", "a", "b", "-V", "311"],
    ["-D", "will", "user-property", "a", "b", "--will-topic", "w", "-V", "mqttv31"],
    ["-V", "7"], ["-V", "mqttv50"],
]


def _arg(a):
    return a.encode("utf-8", "surrogateescape")


# Argument errors and the fake broker involve no real broker: run once, in
# the Mosquitto variant.
NO_BROKER_NEEDED = unittest.skipIf(clitest.BROKER == "wisp", "runs in the mosquitto variant")


@NO_BROKER_NEEDED
class V5ArgErrors(unittest.TestCase):
    def setUp(self):
        self.home = os.path.join(clitest.tempfile.mkdtemp(), "")
        os.environ["HOME"] = self.home
        os.environ.pop("XDG_CONFIG_HOME", None)

    def check(self, kind, args):
        base = clitest.CompareCase("run")
        base.compare(kind, [_arg(a) for a in ["-p", NOPORT] + args])

    def test_pub(self):
        for d in D_ERRORS:
            with self.subTest(args=d):
                self.check("pub", ["-t", "a", "-m", "x"] + d)

    COMMANDS = ["connect", "connack", "publish", "puback", "pubrec", "pubrel", "pubcomp", "subscribe", "suback",
                "unsubscribe", "unsuback", "disconnect", "auth", "will"]
    PROPERTIES = ["payload-format-indicator", "message-expiry-interval", "content-type", "response-topic",
                  "correlation-data", "subscription-identifier", "session-expiry-interval",
                  "assigned-client-identifier", "server-keep-alive", "authentication-method", "authentication-data",
                  "request-problem-information", "will-delay-interval", "request-response-information",
                  "response-information", "server-reference", "reason-string", "receive-maximum",
                  "topic-alias-maximum", "topic-alias", "maximum-qos", "retain-available", "user-property",
                  "maximum-packet-size", "wildcard-subscription-available", "subscription-identifier-available",
                  "shared-subscription-available"]

    def test_command_property_matrix(self):
        """Every property for the commands a client sends properties on,
        and every command for two properties: accepted or refused with
        the same words. (All 14 x 27 pairs, pub and sub, matched when this
        was written; the subset keeps the run short.)"""
        pairs = [(c, p) for c in ("connect", "publish", "will", "subscribe") for p in self.PROPERTIES]
        pairs += [(c, p) for c in self.COMMANDS for p in ("user-property", "session-expiry-interval")]
        for c, p in pairs:
            with self.subTest(command=c, property=p):
                self.check("pub", ["-t", "a", "-m", "x", "-D", c, p] + (["k", "1"] if p == "user-property" else ["1"]))

    def test_sub(self):
        # mosquitto_sub 2.0.11 has no %T, no 2.1 float fields, no
        # --no-local or --retain-handling: the same refusals.
        for d in D_ERRORS + [["-F", "%T"], ["-F", "%f"], ["-F", "%d"], ["--no-local"],
                             ["--retain-handling", "1"], ["-D", "subscribe", "user-property", "a", "b", "-F", "%5T"]]:
            with self.subTest(args=d):
                self.check("sub", ["-t", "a"] + d)


class V5RoundTrip(clitest.CompareCase):
    """Through a Debian Mosquitto broker."""

    def setUp(self):
        os.environ["HOME"] = self.broker.dir
        os.environ.pop("XDG_CONFIG_HOME", None)

    PROPS = ["-D", "publish", "user-property", "k1", "v1", "-D", "publish", "user-property", "k2", "v 2",
             "-D", "publish", "user-property", "k1", "again", "-D", "publish", "content-type", "text/json",
             "-D", "publish", "response-topic", "resp/t", "-D", "publish", "correlation-data", "corr-1",
             "-D", "publish", "payload-format-indicator", "1"]

    def test_formats_with_properties(self):
        # Retained, so each tool gets the same message on its own. No
        # message expiry here: its remaining time differs between the runs.
        cases = [("plain", self.PROPS),
                 ("empty", ["-D", "publish", "content-type", "", "-D", "publish", "correlation-data", "",
                            "-D", "publish", "response-topic", "", "-D", "publish", "user-property", "", ""]),
                 ("none", ["-V", "5"])]
        formats = ["%j", "%J", PROPS_FMT, "%-12P|%10C|%-8R|%.3C|%5.2R|%05F|%-3F|%4S|%04A|%D%D",
                   "%P %P", "%E|%5E|%-5E|%05E"]
        for name, props in cases:
            t = "%s/%s" % (self.topic(), name)
            for qos in ("0", "1", "2"):
                # mosquitto_pub 2.0.11 crashes on empty property strings
                # above QoS 0 (it copies them as NULL); wisp_pub sends them.
                publisher = clitest.WISP_PUB if name == "empty" else "mosquitto_pub"
                rc, out, err = clitest.run(publisher, ["-p", self.port, "-t", t, "-m", '{"v":[1,2]}', "-r",
                                                       "-q", qos] + props)
                self.assertEqual(rc, 0, err)
                for fmt in formats:
                    for extra in ([], ["--pretty"]) if "%j" in fmt.lower() else ([],):
                        for v in ("5",) + (("mqttv5", "311") if fmt in (PROPS_FMT, "%j") else ()):
                            with self.subTest(props=name, qos=qos, fmt=fmt, extra=extra, v=v):
                                rc, out, err = self.compare("sub", ["-p", self.port, "-t", t, "-C", "1", "-q", qos,
                                                                    "-V", v, "-F", fmt] + extra, mask=True)
                                self.assertEqual(rc, 0)
                                if name == "plain" and v != "311" and fmt == PROPS_FMT:
                                    self.assertIn("k1:v1 k2:v 2 k1:again|text/json|corr-1|1|resp/t|||", out)
            self.clear(t)

    def probe(self, topic, fmt=PROPS_FMT, extra=()):
        sub = self.bg(clitest.MosqSub(self.port, [topic], fmt, ["-V", "5", "-q", "2"] + list(extra)))
        sub.wait_subscribed([2])
        return sub

    def test_publish_properties(self):
        """What a v5 subscriber sees of each tool's publish: the same
        properties, whatever the QoS and message mode."""
        cases = [
            ["-m", "hello"] + self.PROPS,
            ["-m", "exp", "-D", "publish", "message-expiry-interval", "86400", "-q", "1"],
            ["-n", "-D", "publish", "user-property", "only", "one", "-q", "2"],
            ["-m", "ta", "-D", "publish", "topic-alias", "3", "--repeat", "3", "-q", "1"],
            ["-l", "-D", "publish", "topic-alias", "2", "-D", "publish", "content-type", "line", "-q", "2"],
            ["-m", "v5", "-V", "5", "-q", "1"],
            ["-m", "d", "-D", "disconnect", "session-expiry-interval", "0", "-D", "disconnect", "user-property",
             "bye", "now", "-D", "connect", "user-property", "hi", "there", "-D", "connect", "receive-maximum", "5",
             "-D", "connect", "topic-alias-maximum", "4", "-D", "connect", "request-problem-information", "1",
             "-D", "connect", "maximum-packet-size", "100000", "-D", "connect", "request-response-information", "0"],
            # Ignored by mosquitto_pub (they are SUBSCRIBE and UNSUBSCRIBE properties).
            ["-m", "s", "-D", "subscribe", "subscription-identifier", "9", "-D", "unsubscribe", "user-property",
             "a", "b"],
            # v5 properties on a v3 publish: mosquitto_pub connects, sends nothing, exits 0.
            ["-m", "gone", "-D", "publish", "user-property", "a", "b", "-V", "311", "-q", "1"],
        ]
        for args in cases:
            count = 3 if "--repeat" in args else 2 if "-l" in args else 0 if "gone" in args else 1
            stdin = b"one\ntwo\n" if "-l" in args else None
            with self.subTest(args=args):
                outs = {}
                for name, prog in clitest.tools("pub").items():
                    t = self.topic()
                    # %j too: it lists the properties in the order they came.
                    sub = self.probe(t, PROPS_FMT + "|%j", ["-W", "10"] + (["-C", str(count)] if count else []))
                    # -d traces, except for -l: when the acks come between
                    # lines depends on timing, for both tools.
                    debug = [] if "-l" in args else ["-d"]
                    rc, out, err = clitest.run(prog, ["-p", self.port, "-t", t, "-i", "fixed"] + debug + args,
                                               stdin=stdin)
                    if count:
                        src, sout, serr = sub.finish()
                        self.assertEqual(src, 0, sub.describe())
                        # The remaining expiry may have counted down a second.
                        msgs = [re.sub(r'"message-expiry-interval":\d+', "E",
                                       clitest.mask_times(m.encode()).decode().replace(t, "T"))
                                for m in sub.messages(sout)]
                    else:  # nothing may arrive: the probe times out empty
                        src, sout, serr = sub.finish()
                        self.assertEqual(src, 27, sub.describe())
                        msgs = sub.messages(sout)
                    outs[name] = (rc, clitest.normalise(out.decode(), prog).replace(t, "T"),
                                  clitest.normalise(err.decode(), prog), msgs)
                self.assertEqual(outs["wisp"], outs["mosquitto"])
                self.assertEqual(outs["wisp"][0], 0)
        # Message expiry arrives as set (the broker may count one second down).
        t = self.topic()
        sub = self.probe(t, "%E", ["-C", "1", "-W", "10"])
        rc, out, err = clitest.run(clitest.WISP_PUB, ["-p", self.port, "-t", t, "-m", "x", "-D", "publish",
                                                      "message-expiry-interval", "86400"])
        src, sout, serr = sub.finish()
        self.assertIn(sub.messages(sout), (["86400"], ["86399"]), sub.describe())

    def live(self, args, publish, count):
        """Both subscribers at once (each with its own args), then
        publish(); -C count plus a retained sentinel."""
        t = self.topic()
        mark = self.sentinel(t)
        procs = {}
        for name, prog in clitest.tools("sub").items():
            procs[name] = self.bg(clitest.BgTool([prog, "-p", self.port, "-t", t, "-C", str(count + 1)] + args))
        for p in procs.values():
            p.wait_for(mark)
        publish(t)
        outs = {}
        for name, p in procs.items():
            rc, out, err = p.finish()
            self.assertEqual(rc, 0, p.describe())
            outs[name] = (rc, clitest.mask_times(out).replace(t.encode(), b"T"), err)
        self.clear(t)
        self.assertEqual(outs["wisp"], outs["mosquitto"], args)
        return outs["wisp"]

    def test_live_qos_and_subscription_identifier(self):
        def publish(t):
            for q in ("0", "1", "2"):
                self.pub(t, "q" + q, "-q", q, *self.PROPS)
        for args in (["-V", "5", "-q", "2", "-F", "%m|%q|" + PROPS_FMT],
                     ["-V", "5", "-q", "1", "-F", "%j"],
                     ["-q", "2", "-F", "%J", "--pretty", "-D", "subscribe", "user-property", "a", "b"],
                     ["-q", "2", "-F", "%S|%05S|%-4S|%j", "-D", "subscribe", "subscription-identifier", "77"],
                     ["-V", "5", "-v", "-q", "2"]):
            with self.subTest(args=args):
                rc, out, err = self.live(args, publish, 3)
                if "subscription-identifier" in args:
                    self.assertIn(b'77|00077|77  |', out)
                    self.assertIn(b'"subscription-identifier":77', out)

    def test_retain_as_published_and_no_retain(self):
        t = self.topic()
        self.pub(t, "kept", "-r", "-q", "1")
        for args in (["-V", "5", "--retain-as-published", "-F", "%r %p"], ["-V", "5", "-R", "-W", "1"],
                     ["-F", "%r %p", "--retain-as-published"], ["-V", "311", "--retain-as-published", "-F", "%r"],
                     ["-U", t + "/other", "-D", "unsubscribe", "user-property", "u", "v", "-D", "disconnect",
                      "session-expiry-interval", "0", "-D", "disconnect", "reason-string", "bye", "-d", "-i", "rap"]):
            with self.subTest(args=args):
                self.compare("sub", ["-p", self.port, "-t", t, "-C", "1"] + args)
        self.clear(t)

    @unittest.skipIf(clitest.BROKER == "wisp", "the wisp broker publishes a will without its v5 properties")
    def test_will_properties(self):
        """A will with properties, sent when SIGINT ends the subscriber (v5:
        DISCONNECT 0x04 keeps the will)."""
        outs = {}
        for name, prog in clitest.tools("sub").items():
            t = self.topic()
            will = t + "/will"
            probe = self.probe(will, extra=["-C", "1", "-W", "10"])
            mark = self.sentinel(t)
            sub = self.bg(clitest.BgTool([prog, "-p", self.port, "-t", t, "--will-topic", will, "--will-payload",
                                          "gone", "--will-qos", "1",
                                          "-D", "will", "user-property", "why", "sigint",
                                          "-D", "will", "content-type", "text/plain",
                                          "-D", "will", "response-topic", "r/w", "-D", "will", "correlation-data", "cd",
                                          "-D", "will", "payload-format-indicator", "1",
                                          "-D", "will", "message-expiry-interval", "86400",
                                          "-D", "will", "will-delay-interval", "0"]))
            sub.wait_for(mark)
            sub.proc.send_signal(signal.SIGINT)
            rc, out, err = sub.finish()
            src, sout, serr = probe.finish()
            self.assertEqual(src, 0, probe.describe())
            outs[name] = (rc, out.replace(mark, b"M"), err, [m.replace(will, "W") for m in probe.messages(sout)])
            self.clear(t)
        self.assertEqual(outs["wisp"], outs["mosquitto"])
        self.assertEqual(outs["wisp"][3], ["W|1|0|4|why:sigint|text/plain|cd|1|r/w|||gone"])

    def test_session_expiry_with_properties(self):
        """-c -x with other CONNECT properties keeps a v5 session: a QoS 1
        message sent while the subscriber is away reaches it next time.
        (-D connect session-expiry-interval cannot go with -c: -c adds one
        too, a duplicate; V5ArgErrors checks that refusal.)"""
        for name, prog in clitest.tools("sub").items():
            t = self.topic() + "/" + name
            cid = "sess-%s-%d" % (name, os.getpid())
            first = ["-p", self.port, "-t", t, "-q", "1", "-i", cid, "-c", "-x", "60", "-D", "connect",
                     "user-property", "a", "b", "-D", "connect", "receive-maximum", "10"]
            rc, out, err = clitest.run(prog, first + ["-E"])
            self.assertEqual((rc, err), (0, b""))
            self.pub(t, "while away", "-q", "1")
            rc, out, err = clitest.run(prog, first + ["-C", "1", "-F", "%p"])
            self.assertEqual((rc, out, err), (0, b"while away\n", b""), name)
            clitest.run(prog, ["-p", self.port, "-t", t, "-i", cid, "-V", "5", "-E"])  # ends the session


class V5Refused(clitest.CompareCase):
    broker_conf = "allow_anonymous false\n"
    wisp_limits = None

    @classmethod
    def setUpClass(cls):
        if clitest.BROKER != "mosquitto":
            raise unittest.SkipTest("a Mosquitto broker refusing anonymous clients")
        super().setUpClass()

    def test_connack_refused(self):
        for v in ("5", "mqttv5", "311", "31"):
            for kind, extra in (("pub", ["-m", "x"]), ("sub", [])):
                with self.subTest(v=v, kind=kind):
                    rc, out, err = self.compare(kind, ["-p", self.port, "-t", "a", "-V", v, "-d", "-i", "x"] + extra)
                    self.assertEqual(rc, 135 if "5" in v else 5)


def _varint(n):
    out = bytearray()
    while True:
        b = n % 128
        n //= 128
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _packet(first, body):
    return bytes([first]) + _varint(len(body)) + body


def _str(s):
    s = s.encode() if isinstance(s, str) else s
    return struct.pack(">H", len(s)) + s


def _props(raw):
    return _varint(len(raw)) + raw


class FakeBroker(clitest.FakeBroker):
    """One TCP listener answering v5 clients from a script: `connack`
    (reason code), `suback` (codes), `puback` (reason for PUBACK/PUBREC),
    `publish` (PUBLISH packets sent after the SUBACK), then DISCONNECT or
    EOF ends the connection. Serves any number of clients in turn."""

    def __init__(self, connack=0, suback=None, puback=0, publish=(), disconnect=None):
        self.connack, self.suback, self.puback, self.publish = connack, suback, puback, list(publish)
        self.disconnect = disconnect  # reason of a DISCONNECT sent instead of SUBACK/PUBACK
        super().__init__()

    def session(self, conn):
        f = conn.makefile("rb")
        while True:
            first, body = self.read_packet(f)
            if first is None:
                return
            kind = first >> 4
            if kind == 1:  # CONNECT
                conn.sendall(_packet(0x20, bytes([0, self.connack]) + _props(b"")))
                if self.connack >= 0x80:
                    return
            elif kind in (3, 8) and self.disconnect is not None:
                conn.sendall(_packet(0xE0, bytes([self.disconnect]) + _props(b"")))
                return
            elif kind == 8:  # SUBSCRIBE
                codes = self.suback if self.suback is not None else [0]
                conn.sendall(_packet(0x90, body[:2] + _props(b"") + bytes(codes)))
                for p in self.publish:
                    conn.sendall(p)
            elif kind == 10:  # UNSUBSCRIBE
                conn.sendall(_packet(0xB0, body[:2] + _props(b"") + bytes([0])))
            elif kind == 3:  # PUBLISH
                qos = (first >> 1) & 3
                tlen = struct.unpack(">H", body[:2])[0]
                mid = body[2 + tlen:4 + tlen]
                if qos == 1:
                    conn.sendall(_packet(0x40, mid + bytes([self.puback]) + _props(b"")))
                elif qos == 2:
                    conn.sendall(_packet(0x50, mid + bytes([self.puback]) + _props(b"")))
            elif kind == 5:  # PUBREC
                conn.sendall(_packet(0x62, body[:2]))
            elif kind == 6:  # PUBREL
                conn.sendall(_packet(0x70, body[:2] + bytes([0]) + _props(b"")))
            elif kind == 12:  # PINGREQ
                conn.sendall(bytes([0xD0, 0]))
            elif kind == 14:  # DISCONNECT
                return


def server_publish(topic, payload, props=b"", qos=0, mid=1):
    body = _str(topic) + (struct.pack(">H", mid) if qos else b"") + _props(props) + payload
    return _packet(0x30 | (qos << 1), body)


@NO_BROKER_NEEDED
class V5ReasonCodes(unittest.TestCase):
    """Reason codes and server-side properties from a scripted broker."""

    def setUp(self):
        os.environ["HOME"] = clitest.tempfile.mkdtemp()
        os.environ.pop("XDG_CONFIG_HOME", None)

    def fake(self, **kw):
        b = FakeBroker(**kw)
        self.addCleanup(b.close)
        return b

    def compare(self, kind, args, broker):
        base = clitest.CompareCase("run")
        w = base.compare(kind, ["-p", broker.port] + args, mask=True)
        self.assertEqual(broker.errors, [])
        return w

    # Every v5 CONNACK code [MQTT-3.2.2.2] plus some no server may send.
    CONNACK_CODES = [0x80, 0x81, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89, 0x8A, 0x8C, 0x90, 0x95, 0x97,
                     0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9F, 0x8B, 0x8E, 0x96, 0x98, 0xA2, 0xA0, 0xFE]

    def test_connack_codes(self):
        for code in self.CONNACK_CODES:
            b = self.fake(connack=code)
            for kind, extra in (("pub", ["-m", "x"]), ("sub", [])):
                with self.subTest(code=hex(code), kind=kind):
                    rc, out, err = self.compare(kind, ["-t", "a", "-V", "5", "-d", "-i", "x"] + extra, b)
                    self.assertEqual(rc, code)

    def test_suback_codes(self):
        for codes in ([0x80], [0x87, 0x91], [0x8F, 0x97, 0x9E, 0xA1, 0xA2], [0x01, 0x87], [0x02, 0x00]):
            b = self.fake(suback=codes)
            topics = []
            for i in range(len(codes)):
                topics += ["-t", "t/%d" % i]
            with self.subTest(codes=codes):
                self.compare("sub", topics + ["-V", "5", "-E", "-d", "-i", "fixed"], b)

    def test_puback_codes(self):
        for code in (0x10, 0x80, 0x83, 0x87, 0x90, 0x91, 0x97, 0x99):
            b = self.fake(puback=code)
            for qos in ("1", "2"):
                with self.subTest(code=hex(code), qos=qos):
                    rc, out, err = self.compare("pub", ["-t", "a", "-m", "x", "-V", "5", "-q", qos, "-d", "-i", "f",
                                                        "--repeat", "2"], b)
                    self.assertEqual(rc, 0)
                    if code >= 0x80:
                        self.assertIn("Warning: Publish 1 failed: ", err)

    def test_server_disconnect(self):
        """A v5 DISCONNECT from the server ends the run: mosquitto_sub
        quietly with status 0, mosquitto_pub with 'not connected' (4)."""
        for reason in (0x00, 0x81, 0x87, 0x8B, 0x8E, 0x93, 0x9C):
            b = self.fake(disconnect=reason)
            with self.subTest(reason=hex(reason)):
                self.compare("sub", ["-t", "a", "-V", "5", "-d", "-i", "f", "-C", "1"], b)
                self.compare("pub", ["-t", "a", "-m", "x", "-V", "5", "-d", "-i", "f", "-q", "1"], b)

    def test_server_properties(self):
        """What Mosquitto never sends: topic aliases, at each QoS, next to
        other properties. %j keeps mosquitto_sub's quirk (topic-alias shows
        the length of the last correlation data before it)."""
        alias = struct.pack(">BH", 0x23, 2)
        subids = bytes([0x0B]) + _varint(300)
        corr = bytes([0x09]) + _str("abc")
        user = bytes([0x26]) + _str("k") + _str("v")
        pubs = [server_publish("al/one", b"first", alias + user),
                server_publish("al/one", b"second", subids + corr + alias, qos=1, mid=7),
                server_publish("al/two", b"third", corr + alias + subids, qos=2, mid=8)]
        b = self.fake(publish=pubs)
        for fmt in ("%t|%A|%S|%P|%p", "%j", "%J"):
            for extra in ([], ["-D", "connect", "topic-alias-maximum", "3"]):
                with self.subTest(fmt=fmt, extra=extra):
                    rc, out, err = self.compare("sub", ["-t", "al/#", "-C", "3", "-V", "5", "-q", "2", "-F", fmt,
                                                        "-d"] + extra, b)
                    self.assertEqual(rc, 0)
                    if fmt.startswith("%t"):
                        self.assertEqual([x for x in out.splitlines() if "|" in x],
                                         ["al/one|2||k:v|first", "al/one|2|300||second", "al/two|2|300||third"])

    def test_protocol_error_ends_the_run(self):
        """A topic-less PUBLISH with an alias never set: both give up with
        the protocol error (exit 2) instead of reconnecting."""
        b = self.fake(publish=[server_publish("", b"x", struct.pack(">BH", 0x23, 1))])
        for extra in ([], ["-D", "connect", "topic-alias-maximum", "3"]):
            with self.subTest(extra=extra):
                rc, out, err = self.compare("sub", ["-t", "#", "-C", "1", "-V", "5", "-F", "%t"] + extra, b)
                self.assertEqual(rc, 2)
        # A property a PUBLISH may not carry [MQTT-3.3.2.3], and a
        # truncated PUBLISH, end it the same way.
        for name, pkt in (("reason-string", server_publish("a", b"x", bytes([0x1F]) + _str("why"))),
                          ("malformed", _packet(0x30, b"\x00"))):
            b = self.fake(publish=[pkt])
            with self.subTest(name):
                rc, out, err = self.compare("sub", ["-t", "#", "-C", "1", "-V", "5", "-F", "%t"], b)
                self.assertEqual(rc, 2)
        # Payload format 1 with a payload that is not UTF-8 is printed as
        # it is: neither client checks it.
        b = self.fake(publish=[server_publish("a", b"\xff\xfe", bytes([1, 1]))])
        rc, out, err = self.compare("sub", ["-t", "#", "-C", "1", "-V", "5", "-F", "%t %x %F"], b)
        self.assertEqual((rc, out), (0, "a fffe 1\n"))

    def test_alias_resolution(self):
        """wisp_sub resolves a topic alias the server set earlier (what a
        broker assigning aliases sends, wisp's included) and takes a PUBLISH
        with several subscription identifiers [MQTT-3.3.4-3]; mosquitto_sub
        2.0.11 refuses the first with a protocol error and the second as a
        duplicate property, so this one is wisp's own and not a comparison."""
        alias = struct.pack(">BH", 0x23, 2)
        subids = bytes([0x0B]) + _varint(5) + bytes([0x0B]) + _varint(300)
        pubs = [server_publish("al/one", b"first", alias + subids), server_publish("", b"second", alias),
                server_publish("", b"third", alias, qos=1, mid=3), server_publish("", b"fourth", alias, qos=2, mid=4),
                server_publish("al/two", b"fifth", alias), server_publish("", b"sixth", alias, qos=2, mid=5)]
        b = self.fake(publish=pubs)
        rc, out, err = clitest.run(clitest.WISP_SUB, ["-p", b.port, "-t", "al/#", "-C", "6", "-q", "2", "-F", "%t|%A|%q|%p|%S",
                                                      "-D", "connect", "topic-alias-maximum", "2"])
        self.assertEqual((rc, err), (0, b""))
        self.assertEqual(out.decode().splitlines(), ["al/one|2|0|first|5", "al/one|2|0|second|",  "al/one|2|1|third|",
                                                     # QoS 2 is delivered on PUBREL, after "fifth" set alias 2
                                                     # anew: the topic is the one the alias meant on arrival.
                                                     "al/two|2|0|fifth|", "al/one|2|2|fourth|", "al/two|2|2|sixth|"])
        self.assertEqual(b.errors, [])


if __name__ == "__main__":
    unittest.main()
