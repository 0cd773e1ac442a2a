"""Seeded generator of rule sets and event streams for matcher equivalence.

Values are drawn from small pools with case variants and the characters
whose case folding differs between ``str.lower`` and ``re.IGNORECASE``
(U+0130, U+0131, U+017F, U+212A), so that literal hits, misses and near
misses all occur; rules use every literal-bearing operator plus negations,
numbers, ``or`` across fields, multi-valued fields and sequences.
"""

from __future__ import annotations

import random

NAMES = ["bash", "BASH", "sh", "curl", "Curl", "wget", "nc", "ncat", "python3", "perl", "ſh", "baſh",
         "İd", "id", "ıd", "\u212aill", "kill", "socat", "busybox", "crontab"]
PATHS = ["/usr/bin/curl", "/tmp/x.sh", "/tmp/.hidden/run", "/dev/shm/a", "/etc/passwd", "/etc/shadow",
         "/home/u/.ssh/id_rsa", "/HOME/U/.SSH/ID_RSA", "/usr/lib/libc.so", "/var/tmp/kit.py", "/bin/sh",
         "/opt/app/ſtart", "/tmp/İnst"]
ARGS = ["-c", "-e", "--help", "http://evil.example/x", "HTTP://EVIL.EXAMPLE/Y", "/dev/tcp/1.2.3.4/80", "-i",
        "base64", "-d", "İ"]
ACTIONS = ["exec", "open", "connect", "end", "rename"]
CATS = ["process", "file", "network"]


def _q(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _pick(r: random.Random, pool: list[str]) -> str:
    s = r.choice(pool)
    if r.random() < 0.2:
        s = "".join(c.upper() if r.random() < 0.5 else c for c in s)
    return s


def _frag(r: random.Random, s: str) -> str:
    if len(s) < 3:
        return s
    a = r.randrange(0, len(s) - 2)
    b = r.randrange(a + 3, len(s) + 1)
    return s[a:b]


def leaf(r: random.Random) -> str:
    field, pool = r.choice([("process.name", NAMES), ("process.executable", PATHS), ("file.path", PATHS),
                            ("process.args", ARGS), ("process.command_line", ARGS + PATHS)])
    s = _pick(r, pool)
    k = r.randrange(17)
    if k == 0:
        return f"{field} == {_q(s)}"
    if k == 1:
        return f"{field} : {_q(s)}"
    if k == 2:
        return f"{field} in ({', '.join(_q(_pick(r, pool)) for _ in range(r.randrange(1, 5)))})"
    if k == 3:
        return f"{field} in~ ({', '.join(_q(_pick(r, pool)) for _ in range(r.randrange(1, 4)))})"
    if k == 4:
        return f"{field} : {_q(s[: r.randrange(1, len(s) + 1)] + '*')}"
    if k == 5:
        return f"{field} like~ {_q('*' + _frag(r, s) + '*')}"
    if k == 6:
        return f"{field} like {_q('*' + s[-r.randrange(1, len(s) + 1):])}"
    if k == 7:
        f = _frag(r, s)
        return f"{field} : {_q(f[0] + '?' + f[1:] + '*') if len(f) > 1 else _q(f)}"
    if k == 8:
        return f"{field} regex {_q('.*' + _frag(r, s).replace('.', '[.]') + '.*')}"
    if k == 9:
        return f"{field} regex~ {_q(s[:3].replace('.', '[.]') + '.*')}"
    if k == 10:
        return f"startsWith{r.choice(['', '~'])}({field}, {_q(s[:r.randrange(1, len(s) + 1)])})"
    if k == 11:
        return f"endsWith{r.choice(['', '~'])}({field}, {_q(s[-r.randrange(1, len(s) + 1):])})"
    if k == 12:
        return f"stringContains{r.choice(['', '~'])}({field}, {_q(_frag(r, s))})"
    if k == 13:
        return f"not {field} : {_q(s)}"
    if k == 14:
        return f"process.pid {r.choice(['==', '>', '<', '!='])} {r.randrange(10)}"
    if k == 15:
        return f"{field} regex {_q('(' + '|'.join(_frag(r, _pick(r, pool)).replace('.', '[.]') for _ in range(2)) + ').*')}"
    return f"event.action == {_q(r.choice(ACTIONS))}"


def expr(r: random.Random, depth: int = 0) -> str:
    if depth >= 2 or r.random() < 0.4:
        return leaf(r)
    op = r.choice(["and", "or", "and"])
    return f"({expr(r, depth + 1)} {op} {expr(r, depth + 1)})"


def rules(r: random.Random, n: int, sequences: bool = True) -> list[str]:
    out = []
    for _ in range(n):
        if sequences and r.random() < 0.2:
            steps = " ".join(f"[{r.choice(CATS)} where {expr(r, 1)}]" for _ in range(r.randrange(2, 4)))
            until = f" until [process where event.action == \"end\"]" if r.random() < 0.3 else ""
            out.append(f"sequence by process.pid with maxspan=5s {steps}{until}")
        else:
            out.append(f"{r.choice(CATS)} where {expr(r)}")
    return out


def events(r: random.Random, n: int) -> list[tuple[str, int, dict]]:
    out = []
    t = 0
    for i in range(n):
        t += r.choice([1, 100_000_000, 700_000_000, 2_000_000_000])
        f: dict = {"process.pid": r.randrange(6), "event.action": r.choice(ACTIONS)}
        if r.random() < 0.9:
            f["process.name"] = _pick(r, NAMES)
        if r.random() < 0.8:
            f["process.executable"] = _pick(r, PATHS)
        if r.random() < 0.6:
            f["file.path"] = _pick(r, PATHS)
        if r.random() < 0.7:
            f["process.args"] = [_pick(r, ARGS) for _ in range(r.randrange(0, 4))]
        if r.random() < 0.5:
            f["process.command_line"] = " ".join(_pick(r, ARGS + PATHS) for _ in range(r.randrange(1, 4)))
        out.append((r.choice(CATS), t, f))
    return out
