"""How a run ends when the connection does not go as planned, compared
with mosquitto_pub/mosquitto_sub: a server that closes before or after the
CONNACK, -W while reconnecting, SIGINT on the publisher (the will), client
ids (empty, long, over 65535 bytes), credentials refused before
connecting, an empty -s. A scripted fake broker (one thread, loopback)
stands in for a real one where the case needs a misbehaving server."""
import os
import signal
import struct
import tempfile
import threading
import unittest

import clitest


class FakeBroker(clitest.FakeBroker):
    """Accepts clients in turn and, for each, reads the CONNECT (its client
    id is recorded), then per `mode`: "before" closes at once; "after"
    sends CONNACK and closes; "on_publish" sends CONNACK and closes at the
    first PUBLISH; "assign" (v5) sends a CONNACK assigning `assigned` and
    then acknowledges QoS 1 and a DISCONNECT ends it."""

    def __init__(self, mode, assigned="srv-given-1"):
        self.mode, self.assigned = mode, assigned
        self.ids = []
        self.lock = threading.Lock()
        super().__init__()

    def connections(self):
        with self.lock:
            return len(self.ids)

    def session(self, conn):
        f = conn.makefile("rb")
        first, body = self.read_packet(f)
        if first is None:
            return
        plen = struct.unpack(">H", body[:2])[0]
        version = body[2 + plen]
        pos = 2 + plen + 4  # level, flags, keepalive
        if version == 5:
            n, mult = 0, 1  # property length varint
            while True:
                b = body[pos]
                pos += 1
                n += (b & 0x7F) * mult
                mult *= 128
                if not b & 0x80:
                    break
            pos += n
        idlen = struct.unpack(">H", body[pos:pos + 2])[0]
        with self.lock:
            self.ids.append(body[pos + 2:pos + 2 + idlen].decode("utf-8", "replace"))
        if self.mode == "before":
            return
        if version == 5:
            props = b""
            if self.mode == "assign":
                a = self.assigned.encode()
                props = bytes([0x12]) + struct.pack(">H", len(a)) + a
            conn.sendall(bytes([0x20, 3 + len(props), 0, 0, len(props)]) + props)
        else:
            conn.sendall(bytes([0x20, 2, 0, 0]))
        if self.mode == "after":
            return
        while True:
            first, body = self.read_packet(f)
            if first is None or first >> 4 == 14:
                return
            if first >> 4 == 3:
                if self.mode == "on_publish":
                    return
                if (first >> 1) & 3 == 1:
                    tlen = struct.unpack(">H", body[:2])[0]
                    conn.sendall(bytes([0x40, 2]) + body[2 + tlen:4 + tlen])


class ConnectionEnds(unittest.TestCase):
    def setUp(self):
        os.environ["HOME"] = tempfile.mkdtemp()
        os.environ.pop("XDG_CONFIG_HOME", None)

    def fake(self, mode, **kw):
        b = FakeBroker(mode, **kw)
        self.addCleanup(b.close)
        return b

    def compare(self, kind, args, **kw):
        return clitest.CompareCase("run").compare(kind, args, **kw)

    def test_pub_ends_on_a_lost_connection(self):
        """-m/-n at QoS 1 and 2: one connection, "The connection was lost.",
        7, whether the server closes before or after the CONNACK."""
        for mode, extra in (("on_publish", ["-q", "1", "-m", "x"]), ("on_publish", ["-q", "2", "-n"]),
                            ("on_publish", ["-q", "1", "-m", "x", "--repeat", "3"]),
                            ("after", ["-q", "1", "-m", "x"]), ("before", ["-m", "x"])):
            with self.subTest(mode=mode, extra=extra):
                b = self.fake(mode)
                rc, out, err = self.compare("pub", ["-p", b.port, "-t", "a"] + extra)
                self.assertEqual((rc, err), (7, "Error: The connection was lost.\n"))
                self.assertEqual(b.connections(), 2, "one connection per tool")

    def test_sub_reconnects_until_w(self):
        """mosquitto_sub retries a server that closes; -W then ends it:
        "Timed out" (27) once a CONNACK was ever accepted, a silent 255
        (its handler's exit(-1)) when none was."""
        for mode, status, err in (("after", 27, "Timed out\n"), ("before", 255, "")):
            with self.subTest(mode=mode):
                b = self.fake(mode)
                rc, out, got = self.compare("sub", ["-p", b.port, "-t", "a", "-W", "3"])
                self.assertEqual((rc, got), (status, err))
                self.assertGreaterEqual(b.connections(), 4, "both tools reconnected")

    def test_assigned_and_generated_ids_in_the_trace(self):
        """-d names the client by the id the v5 server assigned; v3.1.1
        sends no id and says (null); v3.1 sends a generated mosq-... id."""
        b = self.fake("assign")
        rc, out, err = self.compare("pub", ["-p", b.port, "-t", "a", "-m", "x", "-q", "1", "-d", "-V", "5"])
        self.assertIn("Client srv-given-1 received CONNACK (0)", out)
        b = self.fake("assign")
        rc, out, err = self.compare("pub", ["-p", b.port, "-t", "a", "-m", "x", "-d", "-V", "311"])
        self.assertEqual(b.ids, ["", ""])
        b = self.fake("assign")
        res = {}
        for name, prog in clitest.tools("pub").items():
            rc, o, e = clitest.run(prog, ["-p", b.port, "-t", "a", "-m", "x", "-d", "-V", "31"])
            self.assertEqual(rc, 0, e)
            res[name] = o.decode()
        for name, i in zip(("wisp", "mosquitto"), b.ids):
            self.assertRegex(i, r"^mosq-[0-9A-Za-z]{18}$")
            self.assertEqual(res[name].replace(i, "ID"), res["wisp"].replace(b.ids[0], "ID"))
            self.assertIn("Client %s received CONNACK (0)" % i, res[name])

    def test_long_ids_are_sent_whole(self):
        """Two 200-byte ids that share their first 150 bytes stay apart;
        65535 bytes is the most an id can be, one over is refused
        silently (mosquitto_pub sends a 65536-byte id it cannot encode
        and loses the connection; 70,000 bytes it refuses as we do)."""
        b = self.fake("assign")
        ids = ["x" * 150 + "a" * 50, "x" * 150 + "b" * 50, "y" * 65535]
        for i in ids:
            rc, out, err = clitest.run(clitest.WISP_PUB, ["-p", b.port, "-t", "a", "-m", "x", "-i", i])
            self.assertEqual((rc, err), (0, b""))
        self.assertEqual(b.ids, ids)
        for kind in ("pub", "sub"):
            with self.subTest(kind=kind):
                extra = ["-m", "x"] if kind == "pub" else []
                rc, out, err = self.compare(kind, ["-p", b.port, "-t", "a", "-i", "z" * 70000] + extra)
                self.assertEqual((rc, err), (1, ""))
        rc, out, err = clitest.run(clitest.WISP_PUB, ["-p", b.port, "-t", "a", "-m", "x", "-i", "z" * 65536])
        self.assertEqual((rc, out, err), (1, b"", b""))
        self.assertEqual(len(b.ids), 3, "nothing sent for the ids refused")

    def test_refused_before_connecting(self):
        """Errors libmosquitto raises before any connection: an empty id,
        a password without a user name on MQTT 3, an empty -s."""
        port = str(clitest.refused_port())
        cases = [("pub", ["-i", "", "-m", "x"]), ("sub", ["-i", ""]), ("pub", ["-i", "", "-m", "x", "-V", "5"]),
                 ("sub", ["-i", "", "-V", "5"]), ("pub", ["-P", "pw", "-m", "x"]),
                 ("pub", ["-P", "pw", "-m", "x", "-V", "31"]), ("sub", ["-P", "pw", "-V", "311"]),
                 ("pub", ["-i", "\udcff", "-m", "x"])]
        for kind, extra in cases:
            with self.subTest(kind=kind, extra=extra):
                extra = [os.fsencode(x) for x in extra]
                rc, out, err = self.compare(kind, [b"-p", port, b"-t", b"a"] + extra)
                self.assertEqual(rc, 1)
        rc, out, err = self.compare("pub", ["-p", port, "-t", "a", "-s"], stdin=b"")
        self.assertEqual((rc, err), (1, "Error: Zero length input.\nError loading input from stdin.\n"))
        # MQTT 5 allows a password alone: both go on to connect (refused).
        rc, out, err = self.compare("pub", ["-p", port, "-t", "a", "-m", "x", "-P", "pw", "-V", "5"])
        self.assertEqual((rc, err), (1, "Error: Connection refused\n"))


class PubSignal(clitest.CompareCase):
    def test_sigint_kills_the_publisher_and_the_will_is_sent(self):
        """mosquitto_pub has no SIGINT/SIGTERM handler: it dies by the
        signal, without DISCONNECT, so the broker publishes the will."""
        for name, prog in clitest.tools("pub").items():
            for sig in (signal.SIGINT, signal.SIGTERM):
                with self.subTest(tool=name, sig=sig):
                    t = self.topic() + "/" + name
                    probe = self.bg(clitest.MosqSub(self.port, [t, t + "/will"], "%t %p",
                                                    ["-C", "2", "-W", "15"]))
                    probe.wait_subscribed([0, 0])
                    pub = self.bg(clitest.BgTool([prog, "-p", self.port, "-t", t, "-l", "--will-topic",
                                                  t + "/will", "--will-payload", "gone"],
                                                 stdin=clitest.subprocess.PIPE))
                    # A line delivered: connected, and the -l loop waits for more.
                    pub.proc.stdin.write(b"hello\n")
                    pub.proc.stdin.flush()
                    probe.wait_for(("%s%s hello" % (clitest.MSG_MARK, t)).encode())
                    pub.proc.send_signal(sig)
                    rc, out, err = pub.finish()
                    self.assertEqual(rc, -sig, pub.describe())
                    src, sout, serr = probe.finish()
                    self.assertEqual(probe.messages(sout), ["%s hello" % t, "%s/will gone" % t], probe.describe())


if __name__ == "__main__":
    unittest.main()
