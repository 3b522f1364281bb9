"""wisp_sensor end to end: a bounded run of 1,000 devices delivers every
QoS 1 reading to a wisp_sub subscriber, and the retained status topics say
"online", then "offline" from the wills when the simulator is killed."""
import collections
import json
import os
import signal
import subprocess
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
        # A retained sentinel on a second filter of the same SUBSCRIBE: once
        # printed, the subscriber is in place before the fleet starts.
        sentinel_topic = "sentinel/%s" % site
        mark = self.sentinel(sentinel_topic)
        self.addCleanup(self.clear, sentinel_topic)
        sub = self.bg(clitest.BgTool([clitest.WISP_SUB, "-p", self.port, "-t", "sensors/%s/+" % site,
                                      "-t", sentinel_topic, "-q", "1", "-C", str(devices * count + 1),
                                      "-W", "100", "-v"]))
        sub.wait_for(mark)
        rc, out, err = clitest.run(SENSOR, ["-p", self.port, "-n", str(devices), "-c", str(count), "-i", "0.5",
                                            "-q", "1", "--site", site, "--json"], timeout=100)
        self.assertEqual(rc, 0, err)
        stats = json.loads(out)
        self.assertEqual(stats["published"], devices * count)
        self.assertEqual(stats["acked"], devices * count)
        src, sout, serr = sub.finish(timeout=110)
        lines = sout.decode().splitlines()
        self.assertEqual(src, 0, "%s after %d readings" % (serr, len(lines) - 1))
        self.assertEqual(lines[0].split(" ")[0], sentinel_topic)
        per_device = collections.Counter()
        for line in lines[1:]:
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
        self.addCleanup(lambda: sensor.poll() is None and (sensor.kill(), sensor.wait()))
        out, _ = online.communicate(timeout=40)
        self.assertEqual(online.returncode, 0)
        self.assertEqual(sorted(l.split()[1] for l in out.decode().splitlines()), ["online"] * n)
        # The n retained "online" printed: subscribed before the kill.
        offline = self.bg(clitest.BgTool([clitest.WISP_SUB, "-p", self.port, "-t", status, "-v", "-W", "30",
                                          "-F", "%r %t %p", "-C", str(2 * n)]))
        offline.wait_for(lambda out: out.count(b"\n") >= n)
        sensor.send_signal(signal.SIGKILL)
        sensor.wait(timeout=10)
        rc, out, err = offline.finish(timeout=40)
        self.assertEqual(rc, 0, offline.describe())
        lines = out.decode().splitlines()
        self.assertEqual(sorted(l.split()[2] for l in lines[:n]), ["online"] * n)
        self.assertEqual(sorted(l.split()[2] for l in lines[n:]), ["offline"] * n)
        # The retained state now says offline for every device.
        rc, out, _ = clitest.run(clitest.WISP_SUB, ["-p", self.port, "-t", status, "-C", str(n), "-F", "%p"])
        self.assertEqual((rc, out.decode().split()), (0, ["offline"] * n))

    def test_clean_stop_publishes_offline(self):
        site = "stop%d" % os.getpid()
        rc, out, err = clitest.run(SENSOR, ["-p", self.port, "-n", "3", "-c", "1", "-i", "0.1", "--site", site,
                                            "--per-metric", "-q", "2", "--json"])
        self.assertEqual(rc, 0, err)
        self.assertEqual(json.loads(out)["published"], 9)
        rc, out, _ = clitest.run(clitest.WISP_SUB, ["-p", self.port, "-t", "sensors/%s/+/status" % site,
                                                    "-C", "3", "-F", "%p"])
        self.assertEqual((rc, out.decode().split()), (0, ["offline"] * 3))

    def test_protocol_5_properties(self):
        """--protocol 5: v5 connections, readings marked as UTF-8 JSON
        (payload format 1, content type application/json), as a v5
        mosquitto_sub prints them."""
        site = "v5%d" % os.getpid()
        devices, count = 5, 2
        probe = self.bg(clitest.MosqSub(self.port, ["sensors/%s/+" % site], "%F|%C|%q",
                                        ["-V", "5", "-q", "1", "-C", str(devices * count), "-W", "30"]))
        probe.wait_subscribed([1])
        rc, out, err = clitest.run(SENSOR, ["-p", self.port, "-n", str(devices), "-c", str(count), "-i", "0.1",
                                            "--site", site, "--protocol", "5", "--json"])
        self.assertEqual(rc, 0, err)
        self.assertEqual(json.loads(out)["acked"], devices * count)
        rc, sout, serr = probe.finish(timeout=40)
        self.assertEqual(rc, 0, probe.describe())
        self.assertEqual(probe.messages(sout), ["1|application/json|1"] * (devices * count))
        rc, out, err = clitest.run(SENSOR, ["-p", self.port, "--protocol", "4"])
        self.assertEqual(rc, 1)
        self.assertIn(b"invalid arguments", err)


if __name__ == "__main__":
    unittest.main()
