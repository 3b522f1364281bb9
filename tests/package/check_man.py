#!/usr/bin/python3
"""The man pages in docs/man/ say only what the programs do, and all of it.

For each program's page: every option in the program's --help is under
OPTIONS, and every option under OPTIONS is accepted by the program (run with
it, the program does not call it unknown). For wisp.json(5): every key path
documented is accepted by `wisp --check-config` (the error, if any, is about
that key's value, never "unknown key"), and every key of the schema tables in
broker/src/config/config.c is documented.

    check_man.py SRC_DIR WISP WISP_PUB WISP_SUB WISP_SENSOR WISP_PASSWD

Nothing here connects anywhere: each probe ends in an argument that makes the
program stop before it would (an invalid QoS, --help, --check-config of a file
that does not exist).
"""
import json
import os
import re
import subprocess
import sys
import tempfile

OPT_RE = re.compile(r"(?<![\w-])(--?[A-Za-z][\w-]*)")
TIMEOUT = 20


def fail(msg):
    print("FAIL: " + msg)
    return 1


def man_sections(path):
    """{section name: [lines]} of a man(7) page."""
    sections, name = {}, ""
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.rstrip("\n")
            if line.startswith(".SH "):
                name = line[4:].strip().strip('"')
                sections[name] = []
            elif name:
                sections[name].append(line)
    return sections


def tp_heads(lines):
    """The line after each .TP: the entry's head."""
    return [lines[i + 1] for i, l in enumerate(lines[:-1]) if l.strip() == ".TP"]


def man_options(path):
    """[(option, takes_value)] from the page's OPTIONS section."""
    sections = man_sections(path)
    if "OPTIONS" not in sections:
        raise SystemExit("FAIL: %s has no OPTIONS section" % path)
    out = []
    for head in tp_heads(sections["OPTIONS"]):
        text = head.replace("\\-", "-")
        takes_value = "\\fI" in head or head.startswith(".I")
        for opt in OPT_RE.findall(text.split(None, 1)[1] if text.startswith(".") else text):
            out.append((opt, takes_value))
    return out


def run(argv, env=None, cwd=None):
    p = subprocess.run(argv, capture_output=True, text=True, timeout=TIMEOUT, env=env, cwd=cwd,
                       stdin=subprocess.DEVNULL)
    return p.returncode, p.stdout + p.stderr


def check_program(page, argv0, tail, unknown_markers, env):
    """Compares a page's OPTIONS with the program's --help and parser."""
    errors = 0
    documented = man_options(page)
    names = {o for o, _ in documented}
    if not names:
        return fail("%s: no options found under OPTIONS" % page)
    _, help_text = run([argv0, "--help"], env=env)
    helped = set(OPT_RE.findall(help_text))
    if not helped:
        return fail("%s --help printed no options:\n%s" % (argv0, help_text))
    for opt in sorted(helped - names):
        errors += fail("%s: option %s is in `%s --help` but not under OPTIONS" %
                       (os.path.basename(page), opt, os.path.basename(argv0)))
    for opt, takes_value in documented:
        argv = [argv0, opt] + (["1"] if takes_value else []) + tail
        _, out = run(argv, env=env)
        for marker in unknown_markers:
            if marker.format(opt=opt, short=opt.lstrip("-")) in out:
                errors += fail("%s documents %s, but %s does not know it:\n  %s\n%s" %
                               (os.path.basename(page), opt, os.path.basename(argv0), " ".join(argv), out))
    print("%s: %d options documented, %d in --help, all known" %
          (os.path.basename(page), len(names), len(helped)))
    return errors


def schema_keys(config_c):
    """Key paths of the schema tables in config.c: {path: True} for the ones
    reached from top_fields, and the names of keys in unreached tables."""
    text = open(config_c, encoding="utf-8").read()
    tables = {}
    for m in re.finditer(r"static const struct field (\w+)\[\] = \{(.*?)\n\};", text, re.S):
        entries = []
        body = re.sub(r"/\*.*?\*/", "", m.group(2), flags=re.S)
        for e in re.finditer(r'F_(\w+)\(\s*struct \w+,\s*(?:FT_\w+,\s*)?"([^"]+)"([^;]*?)\)\s*,'
                             r'|\{\s*\.key = "([^"]+)"', body):
            if e.group(4):
                entries.append((e.group(4), "CUSTOM", ""))
            else:
                entries.append((e.group(2), e.group(1), e.group(3)))
        tables[m.group(1)] = entries
    if "top_fields" not in tables:
        raise SystemExit("FAIL: no top_fields table in %s" % config_c)
    paths, reached = set(), set()

    def walk(table, prefix):
        reached.add(table)
        for key, kind, rest in tables[table]:
            path = prefix + key
            paths.add(path)
            sub = None
            if kind == "OBJ":
                sub = rest.split(",")[-1].strip()
                if sub in tables:
                    walk(sub, path + ".")
            elif kind == "CUSTOM":
                # An array of objects parsed by hand: listeners -> listener_fields.
                sub = key[:-1] + "_fields" if key.endswith("s") else None
                if sub in tables and sub not in reached:
                    walk(sub, path + "[].")
    walk("top_fields", "")
    loose = {key for t, entries in tables.items() if t not in reached for key, _, _ in entries}
    return paths, loose


def probe_document(path, value):
    """A JSON document with only `path` set to value: a.b[].c -> {"a":{"b":[{"c":v}]}}."""
    parts = path.split(".")
    node = value
    for part in reversed(parts):
        if part.endswith("[]"):
            node = {part[:-2]: [node]}
        else:
            node = {part: node}
    return node


def check_config_page(page, wisp, config_c):
    errors = 0
    sections = man_sections(page)
    documented = []
    for name, lines in sections.items():
        for head in tp_heads(lines):
            m = re.match(r"\.B ([a-z_][\w.\[\]]*)$", head.strip())
            if m:
                documented.append(m.group(1))
    if not documented:
        return fail("%s: no keys found" % page)
    with tempfile.TemporaryDirectory() as tmp:
        cfg = os.path.join(tmp, "probe.json")
        for key in documented:
            # A value no key accepts (objects want objects, numbers numbers...),
            # so a known key answers with an error about its own path.
            with open(cfg, "w") as f:
                json.dump(probe_document(key, [[]]), f)
            _, out = run([wisp, "--check-config", cfg], cwd=tmp)
            concrete = key.replace("[]", "[0]")
            if "unknown key" in out or (concrete + ":") not in out and (concrete + "[") not in out:
                errors += fail("%s documents %s, which `wisp --check-config` does not accept as a key:\n%s" %
                               (os.path.basename(page), key, out))
    paths, loose = schema_keys(config_c)
    for p in sorted(paths - set(documented)):
        errors += fail("%s: the configuration key %s (broker/src/config/config.c) is not documented" %
                       (os.path.basename(page), p))
    last = {k.split(".")[-1].replace("[]", "") for k in documented}
    for k in sorted(loose - last):
        errors += fail("%s: the configuration key %s (broker/src/config/config.c) is not documented" %
                       (os.path.basename(page), k))
    print("%s: %d keys documented, %d in the schema, all accepted by wisp --check-config" %
          (os.path.basename(page), len(documented), len(paths) + len(loose)))
    return errors


def main():
    if len(sys.argv) != 7:
        raise SystemExit(__doc__)
    src, wisp, pub, sub, sensor, passwd = (os.path.abspath(a) for a in sys.argv[1:])
    man = os.path.join(src, "docs", "man")
    errors = 0
    with tempfile.TemporaryDirectory() as home:
        # wisp_pub/wisp_sub read default options from ~/.config: none here.
        env = dict(os.environ, HOME=home, XDG_CONFIG_HOME=home)
        missing = os.path.join(home, "nonexistent.json")
        errors += check_program(os.path.join(man, "wisp.8"), wisp, ["--check-config", missing],
                                ["unknown option '{opt}'"], env)
        for page, prog in (("wisp_pub.1", pub), ("wisp_sub.1", sub)):
            errors += check_program(os.path.join(man, page), prog, ["-q", "9"],
                                    ["Unknown option '{opt}'"], env)
        errors += check_program(os.path.join(man, "wisp_sensor.1"), sensor, ["--help"],
                                ["unrecognized option '{opt}'", "invalid option -- '{short}'"], env)
        errors += check_program(os.path.join(man, "wisp_passwd.1"), passwd, ["-h"],
                                ["Unknown option '{opt}'"], env)
    errors += check_config_page(os.path.join(man, "wisp.json.5"), wisp,
                                os.path.join(src, "broker", "src", "config", "config.c"))
    if errors:
        print("%d problem(s): the man pages in docs/man/ and the programs disagree" % errors)
        return 1
    print("the man pages match the programs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
