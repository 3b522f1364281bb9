"""Option errors: same message on stderr and same exit status, no broker needed
beyond a port nobody listens on."""
import os
import tempfile
import unittest

import clitest

NOPORT = str(clitest.refused_port())

SUB_CASES = [
    [], ["--foo"], ["-t"], ["-t", "a", "-C", "0"], ["-t", "a", "-C"], ["-t", "a", "-k", "3"],
    ["-t", "a", "-k", "70000"], ["-V", "6", "-t", "a"], ["-V"], ["-t", "a", "-c"], ["-t", "a", "-c", "-I", "x"],
    ["-t", "a", "--will-payload", "x"], ["-t", "a", "--will-retain"], ["-q", "3", "-t", "a"], ["-t", "a/#/b"],
    ["-t", "a+"], ["-p", "70000", "-t", "a"], ["-t", "a", "-R", "--retained-only"], ["-F", "%z", "-t", "a"],
    ["-t", "a", "-F", "%"], ["-t", "a", "-F", "%-"], ["-t", "a", "-F", "%10"], ["-t", "a", "-F", "%1."],
    ["-t", "a", "-F", "@"], ["-t", "a", "-F", "\\"], ["-t", "a", "-F", "\\q"], ["-t", "a", "-W", "0"],
    ["-t", "a", "-U", "a/#/"], ["-t", "a", "-T", "a#"], ["-i", "a", "-I", "b", "-t", "a"],
    ["-I", "b", "-i", "a", "-t", "a"], ["-t", "a", "-x", "abc"], ["-t", "a", "-x", "-2"],
    ["-t", "a", "-x", "4294967296"], ["-t", "a", "--will-qos", "3", "--will-topic", "w"],
    ["-t", "a", "--will-topic", "w/+"], ["-L", "http://x/y"], ["-L", "mqtt://localhost"],
    ["-t", "a", "--cert", "c.pem"], ["-t", "a", "--key", "k.pem"], ["-t", "a", "-M", "0"],
    ["-t", "a", "--random-filter", "0"], ["-t", "a", "-m", "x"], ["-t", "a", "-r"], ["-t", "a", "-l"],
    ["-t", "a", "--repeat", "2"], ["-h"], ["-p"], ["-i"], ["-I"], ["-k"], ["-u"], ["-P"], ["-A"], ["-L"],
    ["--cafile"], ["--capath"], ["--cert"], ["--key"], ["--ciphers"], ["--tls-version"], ["-q"], ["-F"],
    ["-T"], ["-U"], ["-W"], ["-x"], ["--will-topic"], ["--will-payload"], ["--will-qos"],
    ["--help"], ["-t", "a", "-V", "5", "-c"], ["-t", "a", "-x", "10", "-V", "5", "-c"],
]

PUB_CASES = [
    ["--foo"], ["-t", "a", "-m", "x", "-n"], ["-t", "a", "-n", "-l"], ["-t", "a", "-s", "-m", "x"],
    ["-t", "a", "-m", "x", "-f", "y"], ["-t", "a/+", "-m", "x"], ["-t", "a/#", "-m", "x"],
    ["-t", "a", "-m", "x", "--repeat", "0"], ["-t", "a", "-m", "x", "--repeat-delay", "-1"],
    ["-t", "a", "-f", "/nonexistent/file"], ["-t", "a", "-m", "x", "-V", "5", "-c"],
    ["-t", "a", "-m", "x", "-c"], ["-t", "a", "-m"], ["-t", "a", "-f"], ["-t", "a", "-q", "5", "-m", "x"],
    ["-t", "a", "-m", "x", "--repeat"], ["-t", "a", "-m", "x", "--repeat-delay"], ["-t", "a", "-m", "x", "-C", "1"],
    ["-t", "a", "-m", "x", "-v"], ["-t", "a", "-m", "x", "-R"], ["-t", "a", "-m", "x", "-F", "%t"],
    ["-t", "a", "-m", "x", "-W", "1"], ["-t", "a", "-m", "x", "-T", "a"], ["-t", "a", "-m", "x", "-U", "a"],
    ["-t", "a", "-m", "x", "-N"], ["-t", "a", "-m", "x", "-E"], ["-t", "a", "-m", "x", "--pretty"],
    ["-t", "a", "-m", "x", "-I", "p", "-i", "q"], ["-t", "a", "-m", "x", "-k", "1"],
    ["-t", "a", "-m", "x", "--will-retain"], ["-t", "a", "-m", "x", "--will-payload", "p"],
    ["-t", "a", "-m", "x", "-L", "ftp://x/y"], ["-m", "x"], ["-t", "a"], [],
    ["-t", "a", "-m", "x", "-p", "-5"], ["-t", "a", "-m", "x", "--help"],
]


class ArgErrors(unittest.TestCase):
    def setUp(self):
        # Neither tool may pick up a user's options file here.
        self.home = tempfile.mkdtemp()
        os.environ["HOME"] = self.home
        os.environ.pop("XDG_CONFIG_HOME", None)

    def check(self, kind, args):
        base = clitest.CompareCase("run")
        usage = "--help" in args or (kind == "pub" and ("-t" not in args or "-m" not in args))
        base.compare(kind, ["-p", NOPORT] + args if "-p" not in args else args, check_stdout=not usage)

    def test_sub_errors(self):
        for args in SUB_CASES:
            with self.subTest(args=args):
                self.check("sub", args)

    def test_pub_errors(self):
        for args in PUB_CASES:
            with self.subTest(args=args):
                self.check("pub", args)

    def test_connection_refused(self):
        for kind, args in (("sub", ["-t", "a"]), ("pub", ["-t", "a", "-m", "x"]),
                           ("pub", ["-t", "a", "-m", "x", "-A", "127.0.0.1"])):
            with self.subTest(kind=kind, args=args):
                self.check(kind, args)


if __name__ == "__main__":
    unittest.main()
