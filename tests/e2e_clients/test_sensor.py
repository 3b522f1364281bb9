"""wisp_sensor end to end: a bounded run of 1,000 devices delivers every
QoS 1 reading to a wisp_sub subscriber, and the retained status topics say
"online", then "offline" from the wills when the simulator is killed."""
import collections
import json
import os
import signal
import subprocess
import time
import unittest

import clitest

SENSOR = os.environ.get("WISP_SENSOR", "wisp_sensor")


class Sensor(clitest.CompareCase):
    # mosquitto drops QoS 1 messages for a subscriber past 1000 queued by
    # default; a fleet bursting 1000 readings at once must not hit that.
    broker_conf = "allow_anonymous true\nmax_queued_messages 0\n"
    wisp_limits = {"max_queued_messages": 100000}
    def test_every_qos1_reading_arrives(self):
        site = "count%d" % os.getpid()
        devices, count = 1000, 3
        sub = subprocess.Popen([clitest.WISP_SUB, "-p", self.port, "-t", "sensors/%s/+" % site, "-q", "1",
                                "-C", str(devices * count), "-W", "100", "-v"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        time.sleep(0.5)  # subscribed before the fleet starts; no timing asserted
        rc, out, err = clitest.run(SENSOR, ["-p", self.port, "-n", str(devices), "-c", str(count), "-i", "0.5",
                                            "-q", "1", "--site", site, "--json"], timeout=100)
        self.assertEqual(rc, 0, err)
        stats = json.loads(out)
        self.assertEqual(stats["published"], devices * count)
        self.assertEqual(stats["acked"], devices * count)
        sout, serr = sub.communicate(timeout=110)
        self.assertEqual(sub.returncode, 0, "%s after %d readings" % (serr, len(sout.splitlines())))
        per_device = collections.Counter()
        for line in sout.decode().splitlines():
            topic, payload = line.split(" ", 1)
            reading = json.loads(payload)
            self.assertEqual(topic.split("/")[-1], reading["device"])
            for key in ("ts", "temperature", "humidity", "battery"):
                self.assertIn(key, reading)
            per_device[reading["device"]] += 1
        self.assertEqual(len(per_device), devices)
        self.assertEqual(set(per_device.values()), {count})

    def test_status_online_then_offline_on_kill(self):
        site = "will%d" % os.getpid()
        n = 5
        status = "sensors/%s/+/status" % site
        online = subprocess.Popen([clitest.WISP_SUB, "-p", self.port, "-t", status, "-C", str(n), "-v",
                                   "-W", "30"], stdout=subprocess.PIPE)
        sensor = subprocess.Popen([SENSOR, "-p", self.port, "-n", str(n), "-i", "60", "--site", site, "--quiet"],
                                  stdout=subprocess.DEVNULL)
        out, _ = online.communicate(timeout=40)
        self.assertEqual(online.returncode, 0)
        self.assertEqual(sorted(l.split()[1] for l in out.decode().splitlines()), ["online"] * n)
        offline = subprocess.Popen([clitest.WISP_SUB, "-p", self.port, "-t", status, "-v", "-W", "30",
                                    "-F", "%r %t %p", "-C", str(2 * n)], stdout=subprocess.PIPE)
        time.sleep(0.5)  # the retained "online" lines arrive first
        sensor.send_signal(signal.SIGKILL)
        sensor.wait(timeout=10)
        out, _ = offline.communicate(timeout=40)
        lines = out.decode().splitlines()
        self.assertEqual(sorted(l.split()[2] for l in lines[n:]), ["offline"] * n)
        # The retained state now says offline for every device.
        rc, out, _ = clitest.run(clitest.WISP_SUB, ["-p", self.port, "-t", status, "-C", str(n), "-F", "%p"])
        self.assertEqual(out.decode().split(), ["offline"] * n)

    def test_clean_stop_publishes_offline(self):
        site = "stop%d" % os.getpid()
        rc, out, err = clitest.run(SENSOR, ["-p", self.port, "-n", "3", "-c", "1", "-i", "0.1", "--site", site,
                                            "--per-metric", "-q", "2", "--json"])
        self.assertEqual(rc, 0, err)
        self.assertEqual(json.loads(out)["published"], 9)
        rc, out, _ = clitest.run(clitest.WISP_SUB, ["-p", self.port, "-t", "sensors/%s/+/status" % site,
                                                    "-C", "3", "-F", "%p"])
        self.assertEqual(out.decode().split(), ["offline"] * 3)


if __name__ == "__main__":
    unittest.main()
