"""wisp_passwd beside Debian's mosquitto_passwd 2.0.11: what an edit does to
the file itself, which the broker's service must still be able to read.

- An edit keeps the file's owner, group and mode (README: root:wisp 0640;
  the probe's group_reset.sh found root:root after an edit as root).
  mosquitto_passwd rewrites the file in place, which keeps all three.
- A symbolic link is followed: its target is edited, the link stays a link,
  and no temporary file is left in either directory.
- -U on a file with Mosquitto $6$ lines (which the broker refuses) changes
  nothing and names those users: hashing the hash string as a password
  would lock them out for good (mosquitto_passwd -U leaves $6$ lines as
  they are, which Mosquitto accepts and Wisp does not).
- A password prompt that meets the end of its input says "Error: Empty
  password." and exits 1 without writing, as mosquitto_passwd does; the
  usage shows -H, as mosquitto_passwd's does.

Environment (set by CTest): WISP_PASSWD, the tool under test.
"""
import os
import shutil
import stat
import subprocess
import tempfile
import unittest

WISP_PASSWD = os.environ.get("WISP_PASSWD", "wisp_passwd")
TOOLS = {"wisp": [WISP_PASSWD, "-I", "1000"], "mosquitto": ["mosquitto_passwd"]}
TIMEOUT = 20


def run(argv, stdin=b""):
    p = subprocess.run(argv, input=stdin, capture_output=True, timeout=TIMEOUT)
    return p.returncode, p.stdout.decode(errors="replace"), p.stderr.decode(errors="replace")


class PasswdCase(unittest.TestCase):

    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="wisp-passwd-")
        self.addCleanup(shutil.rmtree, self.dir, True)

    def tool(self, kind, *args, stdin=b""):
        return run(TOOLS[kind] + list(args), stdin)

    def make(self, kind, path, users):
        for i, (user, pw) in enumerate(users.items()):
            rc, out, err = self.tool(kind, *(["-c"] if i == 0 else []), "-b", path, user, pw)
            self.assertEqual(rc, 0, err)

    def users(self, path):
        with open(path) as f:
            return [line.split(":", 1)[0] for line in f if line.strip() and not line.startswith("#")]


class FileKeptTest(PasswdCase):

    def test_edit_keeps_owner_group_and_mode(self):
        """A file chowned to another owner and group, mode 0640, then edited
        (add, change, delete, -c): both tools leave owner, group and mode."""
        if os.geteuid() != 0:
            gids = [g for g in os.getgroups() if g != os.getegid()]
            if not gids:
                self.skipTest("needs root or a supplementary group to give the file another group")
            owner, group = os.geteuid(), gids[0]
        else:
            owner, group = 65534, 65534  # nobody:nogroup, standing in for root:wisp
        for kind in TOOLS:
            path = os.path.join(self.dir, kind)
            self.make(kind, path, {"alice": "a"})
            os.chown(path, owner, group)
            os.chmod(path, 0o640)
            for args in (["-b", path, "bob", "b"], ["-b", path, "alice", "a2"], ["-D", path, "bob"],
                         ["-c", "-b", path, "carol", "c"]):
                rc, _, err = self.tool(kind, *args)
                self.assertEqual(rc, 0, "%s %s: %s" % (kind, args, err))
                st = os.stat(path)
                self.assertEqual((st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)), (owner, group, 0o640),
                                 "%s %s changed the file's owner, group or mode" % (kind, " ".join(args)))
            self.assertEqual(self.users(path), ["carol"])

    def test_symbolic_link_is_followed(self):
        """passwd -> real/passwd: the edit lands in real/passwd, the link
        stays a link, and no temporary file is left behind."""
        for kind in TOOLS:
            base = os.path.join(self.dir, kind)
            os.makedirs(os.path.join(base, "real"))
            target = os.path.join(base, "real", "passwd")
            link = os.path.join(base, "passwd")
            self.make(kind, target, {"alice": "a"})
            os.symlink("real/passwd", link)
            rc, _, err = self.tool(kind, "-b", link, "bob", "b")
            self.assertEqual(rc, 0, err)
            self.assertTrue(os.path.islink(link), "%s replaced the symbolic link with a file" % kind)
            self.assertEqual(self.users(target), ["alice", "bob"], kind)
            self.assertEqual(sorted(os.listdir(base)), ["passwd", "real"], kind)
            self.assertEqual(os.listdir(os.path.join(base, "real")), ["passwd"], kind)


class PromptTest(PasswdCase):

    def test_end_of_input_at_the_prompt_is_an_empty_password(self):
        for kind in TOOLS:
            path = os.path.join(self.dir, kind)
            rc, _, err = self.tool(kind, "-c", path, "alice")
            self.assertEqual((rc, err), (1, "Error: Empty password.\n"), kind)
            self.assertFalse(os.path.exists(path), kind)

    def test_usage_shows_the_hash_option(self):
        for kind in TOOLS:
            _, out, _ = self.tool(kind, "--help")
            usage = [ln for ln in out.splitlines() if "passwordfile username" in ln]
            self.assertEqual(len(usage), 2, out)
            for ln in usage:
                self.assertIn("-H ", ln, "%s: %s" % (kind, ln))


SIX = "roger:$6$clQ4Ocu312S0qWgl$Cv2wUxgEN73c6C6jlBkswqR4AkHsvDLWvtEXZZ8NpsBLgP1WAo/qA+WXcmEN/mjDNgdUwcxRAveqNMs2xUVQYA=="


class UpgradeTest(PasswdCase):

    def test_upgrade_refuses_mosquitto_6_lines_and_changes_nothing(self):
        path = os.path.join(self.dir, "passwd")
        text = "# sensors\nalice:secret\n%s\nbob:pw\n%s\n" % (SIX, SIX.replace("roger", "rita"))
        with open(path, "w") as f:
            f.write(text)
        rc, _, err = self.tool("wisp", "-U", path)
        self.assertEqual(rc, 1)
        self.assertIn("$6$", err)
        self.assertRegex(err, r"roger \(line 3\)\n  rita \(line 5\)")
        with open(path) as f:
            self.assertEqual(f.read(), text, "the file changed")
        # The same file without the $6$ lines is upgraded (the positive control).
        with open(path, "w") as f:
            f.write("alice:secret\nbob:pw\n")
        rc, _, err = self.tool("wisp", "-U", path)
        self.assertEqual(rc, 0, err)
        with open(path) as f:
            self.assertEqual([ln.split(":", 1)[1][:15] for ln in f], ["$pbkdf2-sha512$"] * 2)


if __name__ == "__main__":
    unittest.main(verbosity=2)
