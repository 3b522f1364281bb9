"""wisp_pub against mosquitto_pub: for each command line, what a subscriber
receives (topic, QoS, retain, payload), the tool's own output and its exit
status must be the same."""
import os
import subprocess
import tempfile
import unittest

import clitest

FMT = "%t|%q|%r|%l|%x"


class PubBehaviour(clitest.CompareCase):
    def setUp(self):
        os.environ["HOME"] = self.broker.dir
        os.environ.pop("XDG_CONFIG_HOME", None)

    def received(self, prog, args, count, stdin=None, sub_qos="2"):
        """Runs `prog args` while a mosquitto_sub, subscribed before (its
        SUBACK seen), waits for `count` messages: all of them must arrive."""
        t = self.current
        sub = self.bg(clitest.MosqSub(self.port, [t, t + "/#"], FMT,
                                      ["-q", sub_qos, "-C", str(count), "-W", "15"]))
        sub.wait_subscribed([int(sub_qos)] * 2)
        rc, out, err = clitest.run(prog, args, stdin=stdin)
        src, sout, serr = sub.finish()
        self.assertEqual(src, 0, "%s: the subscriber did not get %d message(s):\n%s"
                         % (prog, count, sub.describe()))
        msgs = sub.messages(sout)
        self.assertEqual(len(msgs), count, sub.describe())
        return rc, clitest.normalise(out.decode(), prog), clitest.normalise(err.decode(), prog), msgs

    def both(self, args, count=1, stdin=None):
        res = {}
        for name, prog in clitest.tools("pub").items():
            self.current = self.topic()
            a = [x.replace("TOPIC", self.current) for x in args]
            res[name] = self.received(prog, ["-p", self.port] + a, count, stdin)
            self.clear(self.current)
        self.assertEqual(res["wisp"], res["mosquitto"], args)

    def test_messages(self):
        cases = [
            (["-t", "TOPIC", "-m", "hello"], 1),
            (["-t", "TOPIC", "-m", "hello", "-q", "1"], 1),
            (["-t", "TOPIC", "-m", "hello", "-q", "2"], 1),
            (["-t", "TOPIC", "-m", "kept", "-r", "-q", "1"], 1),
            (["-t", "TOPIC", "-n"], 1),
            (["-t", "TOPIC", "-m", "x", "--repeat", "3"], 3),
            (["-t", "TOPIC", "-m", "x", "--repeat", "3", "--repeat-delay", "0.2", "-q", "1"], 3),
            (["-t", "TOPIC", "-m", "x", "-i", "pub-id", "-k", "10", "-V", "mqttv31"], 1),
            (["-t", "TOPIC", "-m", "x", "-I", "pfx", "-V", "311", "--nodelay", "-A", "127.0.0.1"], 1),
            (["-t", "TOPIC", "-m", "x", "-u", "user", "-P", "secret", "-M", "1"], 1),
            (["-t", "TOPIC", "-m", "x", "-c", "-i", "persistent-pub", "-q", "1"], 1),
            (["-t", "TOPIC", "-m", "x", "--will-topic", "TOPIC/will", "--will-payload", "bye", "--will-qos", "1",
              "--will-retain"], 1),
            (["-t", "TOPIC", "-m", "x", "-d", "-i", "debug-pub", "-q", "2"], 1),
            (["-t", "TOPIC", "-m", "x", "--quiet"], 1),
        ]
        for args, count in cases:
            with self.subTest(args=args):
                self.both(args, count)

    def test_url(self):
        res = {}
        for name, prog in clitest.tools("pub").items():
            self.current = self.topic()
            url = "mqtt://u:p@127.0.0.1:%s/%s" % (self.port, self.current)
            res[name] = self.received(prog, ["-L", url, "-m", "via url"], 1)
        self.assertEqual(res["wisp"], res["mosquitto"])

    def test_stdin_and_file(self):
        data = b"line one\nline two\r\n\nlast without newline"
        self.both(["-t", "TOPIC", "-s"], 1, stdin=data)
        self.both(["-t", "TOPIC", "-l", "-q", "1"], 4, stdin=data)
        self.both(["-t", "TOPIC", "-l"], 4, stdin=data)
        with tempfile.NamedTemporaryFile(delete=False) as f:
            f.write(b"\x00binary\xffpayload")
        try:
            self.both(["-t", "TOPIC", "-f", f.name, "-q", "2"], 1)
        finally:
            os.unlink(f.name)

    def test_stdin_line_as_it_arrives(self):
        # -l publishes each line before EOF: the subscriber sees the first
        # line while the publisher still waits for more input.
        t = self.topic()
        sub = self.bg(clitest.MosqSub(self.port, [t], "%p", ["-C", "1"]))
        sub.wait_subscribed([0])
        pub = subprocess.Popen([clitest.WISP_PUB, "-p", self.port, "-t", t, "-l"], stdin=subprocess.PIPE)
        self.addCleanup(lambda: pub.poll() is None and (pub.kill(), pub.wait()))
        pub.stdin.write(b"first\n")
        pub.stdin.flush()
        rc, out, err = sub.finish()
        self.assertEqual((rc, sub.messages(out)), (0, ["first"]), sub.describe())
        self.assertIsNone(pub.poll())
        pub.stdin.close()
        self.assertEqual(pub.wait(timeout=clitest.TIMEOUT), 0)


if __name__ == "__main__":
    unittest.main()
