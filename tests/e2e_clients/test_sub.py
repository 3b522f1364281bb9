"""wisp_sub against mosquitto_sub: the same retained messages, the same
options, byte-identical output and the same exit status."""
import os
import unittest

import clitest

# A zero-length retained message deletes, so b"" is covered live below.
PAYLOADS = [b"hello", b"multi word payload", b'{"a":[1,2],"b":"x"}', b"ab\x01c\"\\",
            "hé ünïcode".encode(), b"12345678901234567890", b"not json {"]

FORMATS = [
    "%t %p", "%%|%t|%p|%q|%r|%l|%m", "%x|%X", "%10t|%-10t|%5.2t|%.3t|%-8.2t|",
    "[%3p][%-3p][%03x][%8x][%-8X][%20p][%-20p]", "%010l|%-5l|%5l|%5m|%05m|%-5m",
    "%j", "%J", "\\\\|\\a|\\e|\\n|\\r|\\t|\\v|\\0|", "@@|%I|%U", "@Y-@m-@d @H:@M:@S @N",
    "%A|%C|%D|%E|%F|%P|%R|%S|%5A|%05E|%-5F|%5C|", "no specifiers at all", "%p%p%p", "%I %-30I|%30.10I|",
]


class SubOutput(clitest.CompareCase):
    def setUp(self):
        os.environ["HOME"] = self.broker.dir  # no user options file
        os.environ.pop("XDG_CONFIG_HOME", None)

    def retained(self, payload, qos="0"):
        t = self.topic()
        if payload:
            rc, out, err = clitest.run("mosquitto_pub", ["-p", self.port, "-t", t, "-r", "-q", qos,
                                                          "-s"], stdin=payload)
        else:
            rc, out, err = clitest.run("mosquitto_pub", ["-p", self.port, "-t", t, "-r", "-n"])
        self.assertEqual(rc, 0, err)
        return t

    def test_default_verbose_noeol(self):
        for payload in PAYLOADS:
            t = self.retained(payload)
            for extra in ([], ["-v"], ["-N"], ["-v", "-N"]):
                with self.subTest(payload=payload, extra=extra):
                    self.compare("sub", ["-p", self.port, "-t", t, "-C", "1"] + extra)
            self.clear(t)

    def test_formats(self):
        for payload in PAYLOADS:
            t = self.retained(payload)
            for fmt in FORMATS:
                extras = ([], ["-N"], ["--pretty"]) if "%j" in fmt.lower() else ([], ["-N"])
                for extra in extras:
                    with self.subTest(payload=payload, fmt=fmt, extra=extra):
                        self.compare("sub", ["-p", self.port, "-t", t, "-C", "1", "-F", fmt] + extra,
                                     mask="digits" if "@" in fmt[2:] else True)
            self.clear(t)

    def test_qos_levels_and_mid(self):
        # Live (not retained) messages at each QoS, so %m and %q differ.
        # A retained sentinel first: once it is printed, the subscription is
        # in place, and -C 3 with exit status 0 shows both live ones arrived.
        for qos in ("0", "1", "2"):
            t = self.topic() + "/q" + qos
            outs = {}
            mark = self.sentinel(t)
            for name, prog in clitest.tools("sub").items():
                p = self.bg(clitest.BgTool([prog, "-p", self.port, "-t", t, "-q", qos, "-C", "3",
                                            "-F", "%t %q %r %m %p"]))
                p.wait_for(mark)
                self.pub(t, "one", "-q", qos)
                self.pub(t, "two", "-q", qos)
                outs[name] = p.finish()
                self.assertEqual(outs[name][0], 0, p.describe())
            self.clear(t)
            self.assertEqual(outs["wisp"], outs["mosquitto"], qos)
            self.assertEqual(outs["wisp"][1].decode().splitlines()[1:],
                             ["%s %s 0 %s one" % (t, qos, "0" if qos == "0" else "2"),
                              "%s %s 0 %s two" % (t, qos, "0" if qos == "0" else "3")], qos)

    def live(self, args, publish):
        """Runs both tools subscribed at once, publishes, compares. args
        hold -C for the messages publish() sends plus one: a retained
        sentinel, printed once the subscription is in place."""
        t = args[args.index("-t") + 1]
        mark = self.sentinel(t)
        procs = {}
        for name, prog in clitest.tools("sub").items():
            procs[name] = self.bg(clitest.BgTool([prog, "-p", self.port] + args))
        for p in procs.values():
            p.wait_for(mark)
        publish()
        outs = {}
        for name, p in procs.items():
            rc, out, err = p.finish()
            self.assertEqual(rc, 0, p.describe())  # -C reached: every message arrived
            outs[name] = (rc, clitest.mask_times(out), err)
        self.clear(t)
        self.assertEqual(outs["wisp"], outs["mosquitto"], args)
        return outs["wisp"]

    def test_zero_length_live(self):
        t = self.topic()
        for args in (["-v"], [], ["-N", "-v"], ["-F", "%t|%p|%l|%x|%j|%J"], ["-F", "%J", "--pretty"]):
            with self.subTest(args=args):
                rc, out, err = self.live(["-t", t, "-C", "3"] + args,
                                         lambda: (self.pub(t, None), self.pub(t, "after")))
                if "%J" not in args:  # %J: "after" is not JSON, an error for both
                    self.assertIn(b"after", out)

    def test_retained_filters(self):
        base = self.topic()
        for i in range(3):
            self.pub("%s/%d" % (base, i), "r%d" % i, "-r")
        cases = [
            ["-t", base + "/#", "-C", "3", "-v"],
            ["-t", base + "/#", "-C", "2", "-v", "-T", base + "/1"],
            ["-t", base + "/+", "-C", "3", "-v", "-q", "1"],
            ["-t", base + "/0", "-t", base + "/2", "-C", "2", "-v"],
            ["-t", base + "/#", "-E"],
            ["-t", base + "/#", "-R", "-W", "1"],
            ["-t", base + "/#", "-W", "1", "-v"],
            ["-t", base + "/#", "-U", base + "/#", "-E"],
            ["-t", base + "/#", "-C", "3", "-v", "-k", "5", "-i", "fixed-id", "-V", "mqttv31"],
            ["-t", base + "/#", "-C", "3", "-v", "-V", "311", "-I", "prefix", "--nodelay", "-A", "127.0.0.1"],
            ["-t", base + "/#", "-C", "3", "-v", "-u", "user", "-P", "pw"],
            ["-L", "mqtt://127.0.0.1:%s/%s/#" % (self.port, base), "-C", "3", "-v"],
            ["-t", base + "/#", "-C", "3", "-v", "--will-topic", "w", "--will-payload", "x", "--will-qos", "1",
             "--will-retain"],
            ["-t", base + "/#", "-C", "3", "-v", "-c", "-i", "persist-%d" % os.getpid()],
            ["-t", base + "/#", "-C", "3", "-v", "-M", "5", "--quiet"],
        ]
        for args in cases:
            # What both must show, so that "both printed nothing" cannot pass:
            # -C n lines (exit 0); -W 1 all three then the timeout (27);
            # -E and -R nothing (0 and 27).
            if "-C" in args:
                want = (0, int(args[args.index("-C") + 1]))
            else:
                want = (27 if "-W" in args else 0, 0 if "-E" in args or "-R" in args else 3)
            if "-L" not in args:
                args = ["-p", self.port] + args
            with self.subTest(args=args):
                rc, out, err = self.compare("sub", args)
                self.assertEqual((rc, len(out.splitlines())), want, out)

    def test_retained_only_and_remove(self):
        base = self.topic()
        for i in range(2):
            self.pub("%s/%d" % (base, i), "r%d" % i, "-r")
        kept = sorted(("%s/%d r%d" % (base, i, i)).encode() for i in range(2))
        outs = {}
        for name, prog in clitest.tools("sub").items():
            # Both retained ones printed: subscribed, so the live message ends the run.
            p = self.bg(clitest.BgTool([prog, "-p", self.port, "-t", base + "/#", "--retained-only", "-v"]))
            p.wait_for(lambda out: all(k in out for k in kept))
            self.pub(base + "/live", "live")
            outs[name] = p.finish()
        self.assertEqual(outs["wisp"], outs["mosquitto"])
        rc, out, err = outs["wisp"]
        self.assertEqual((rc, sorted(out.splitlines()), err), (0, kept, b""))
        # --remove-retained clears them (wisp does it here; mosquitto checks).
        rc, out, err = clitest.run(clitest.WISP_SUB, ["-p", self.port, "-t", base + "/#", "--remove-retained",
                                                      "-C", "2", "-v", "-T", base + "/live"])
        self.assertEqual(rc, 0, err)
        rc, out, err = clitest.run("mosquitto_sub", ["-p", self.port, "-t", base + "/#", "-W", "1"])
        self.assertEqual((rc, out), (27, b""))

    def test_debug_trace(self):
        t = self.retained(b"dbg", "1")
        self.compare("sub", ["-p", self.port, "-t", t, "-C", "1", "-d", "-i", "dbg-client", "-q", "2"])
        self.clear(t)

    def test_options_file(self):
        t = self.retained(b"from options file")
        conf = os.path.join(self.broker.dir, "xdg")
        os.makedirs(conf, exist_ok=True)
        for name in ("wisp_sub", "mosquitto_sub"):
            with open(os.path.join(conf, name), "w") as f:
                f.write("# comment\n-p %s\n-v\n-F %%t says %%p\n" % self.port)
        os.environ["XDG_CONFIG_HOME"] = conf
        try:
            self.compare("sub", ["-t", t, "-C", "1"])
            os.unlink(os.path.join(conf, "wisp_sub"))  # falls back to mosquitto's file
            self.compare("sub", ["-t", t, "-C", "1"])
        finally:
            os.environ.pop("XDG_CONFIG_HOME")
        self.clear(t)


if __name__ == "__main__":
    unittest.main()
