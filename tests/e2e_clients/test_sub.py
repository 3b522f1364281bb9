"""wisp_sub against mosquitto_sub: the same retained messages, the same
options, byte-identical output and the same exit status."""
import os
import subprocess
import time
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
        for qos in ("0", "1", "2"):
            t = self.topic() + "/q" + qos
            outs = {}
            for name, prog in clitest.tools("sub").items():
                p = subprocess.Popen([prog, "-p", self.port, "-t", t, "-q", qos, "-C", "2", "-F", "%t %q %r %m %p"],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE)
                time.sleep(0.3)  # the subscription is in place (no wall-clock assertion)
                self.pub(t, "one", "-q", qos)
                self.pub(t, "two", "-q", qos)
                out, err = p.communicate(timeout=clitest.TIMEOUT)
                outs[name] = (p.returncode, out, err)
            self.assertEqual(outs["wisp"], outs["mosquitto"], qos)

    def live(self, args, publish):
        """Runs both tools subscribed at once, publishes, compares."""
        procs = {}
        for name, prog in clitest.tools("sub").items():
            procs[name] = subprocess.Popen([prog, "-p", self.port] + args, stdout=subprocess.PIPE,
                                           stderr=subprocess.PIPE)
        time.sleep(0.5)  # both subscribed; only ordering, no timing is asserted
        publish()
        outs = {}
        for name, p in procs.items():
            out, err = p.communicate(timeout=clitest.TIMEOUT)
            outs[name] = (p.returncode, clitest.mask_times(out), err)
        self.assertEqual(outs["wisp"], outs["mosquitto"], args)

    def test_zero_length_live(self):
        t = self.topic()
        for args in (["-v"], [], ["-N", "-v"], ["-F", "%t|%p|%l|%x|%j|%J"], ["-F", "%J", "--pretty"]):
            with self.subTest(args=args):
                self.live(["-t", t, "-C", "2"] + args,
                          lambda: (clitest.run("mosquitto_pub", ["-p", self.port, "-t", t, "-n"]),
                                   self.pub(t, "after")))

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
            if "-L" not in args:
                args = ["-p", self.port] + args
            with self.subTest(args=args):
                self.compare("sub", args)

    def test_retained_only_and_remove(self):
        base = self.topic()
        for i in range(2):
            self.pub("%s/%d" % (base, i), "r%d" % i, "-r")
        outs = {}
        for name, prog in clitest.tools("sub").items():
            p = subprocess.Popen([prog, "-p", self.port, "-t", base + "/#", "--retained-only", "-v"],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            time.sleep(0.3)
            self.pub(base + "/live", "live")
            out, err = p.communicate(timeout=clitest.TIMEOUT)
            outs[name] = (p.returncode, out, err)
        self.assertEqual(outs["wisp"], outs["mosquitto"])
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
