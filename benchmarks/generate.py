"""Seeded generator of a realistic Linux endpoint event stream (ECS JSON).

The stream models a fleet of hosts (web servers, databases, build runners,
Kubernetes nodes, bastions, workstations).  Each host has long-lived daemons
(systemd, sshd, cron, the role's services) and interactive shells; they spawn
short-lived processes with realistic command lines, which read/write files and
open network connections, then exit.  Attack stories (reverse shells,
download-and-run, persistence, credential access, container escapes, ...) are
injected at a known low rate; their events interleave with the benign ones.

Every event is a nested ECS dict with a unique ``event.id`` (decimal string,
its position in the stream) and an ISO 8601 ``@timestamp`` with microsecond
precision.  ``ts_ns(event)`` gives the timestamp in nanoseconds.

Usage::

    from benchmarks.generate import generate
    events = generate(1_000_000, seed=7)          # list[dict], time ordered

    python benchmarks/generate.py --events 5000 --out sample.jsonl
"""

from __future__ import annotations

import argparse
import heapq
import json
import random
import sys
from datetime import datetime, timezone
from typing import Any, Callable

try:
    from . import attacks
except ImportError:  # run as a script: benchmarks/ is on sys.path
    import attacks  # type: ignore[no-redef]

START_US = int(datetime(2026, 1, 5, 8, 0, 0, tzinfo=timezone.utc).timestamp()) * 1_000_000

# ---------------------------------------------------------------------------
# vocabulary

USERS = [
    ("0", "root"), ("33", "www-data"), ("113", "postgres"), ("1000", "ubuntu"), ("1001", "deploy"),
    ("112", "jenkins"), ("65534", "nobody"), ("1002", "alice"), ("1003", "bob"), ("1004", "carol"),
    ("1005", "dmitri"), ("1006", "erin"), ("999", "gitlab-runner"), ("998", "prometheus"),
]
HUMANS = [("1000", "ubuntu"), ("1002", "alice"), ("1003", "bob"), ("1004", "carol"), ("1005", "dmitri"), ("1006", "erin")]

EXTERNAL_V4 = ["151.101.1.69", "151.101.65.69", "140.82.112.3", "140.82.113.4", "13.107.42.14", "52.84.150.39",
               "104.16.132.229", "104.16.133.229", "172.217.16.142", "142.250.185.78", "185.199.108.133",
               "91.189.91.38", "91.189.91.39", "35.186.224.25", "3.5.140.2", "54.231.131.48", "199.232.53.55"]
EXTERNAL_V6 = ["2606:4700::6810:84e5", "2a00:1450:4001:82b::200e", "2606:50c0:8000::153", "2620:2d:4000:1::16",
               "2a04:4e42:200::645", "2001:67c:1360:8001::24"]
ATTACKER_V4 = ["203.0.113.45", "198.51.100.23", "198.51.100.7", "45.9.148.99", "194.87.102.11", "185.220.101.4"]
ATTACKER_V6 = ["2001:db8:bad::17", "2001:db8:c0de::4"]

SERVICES = {
    "postgres": ("/usr/lib/postgresql/15/bin/postgres", ["-D", "/var/lib/postgresql/15/main"], "113", "postgres"),
    "redis-server": ("/usr/bin/redis-server", ["127.0.0.1:6379"], "0", "root"),
    "nginx": ("/usr/sbin/nginx", ["-g", "daemon on; master_process on;"], "33", "www-data"),
    "php-fpm8.2": ("/usr/sbin/php-fpm8.2", ["--nodaemonize", "--fpm-config", "/etc/php/8.2/fpm/php-fpm.conf"], "33", "www-data"),
    "java": ("/usr/lib/jvm/java-17-openjdk-amd64/bin/java", ["-Xmx2g", "-jar", "/opt/app/orders-service.jar"], "1001", "deploy"),
    "node": ("/usr/bin/node", ["/srv/web/server.js"], "1001", "deploy"),
    "containerd-shim-runc-v2": ("/usr/bin/containerd-shim-runc-v2", ["-namespace", "k8s.io", "-address", "/run/containerd/containerd.sock"], "0", "root"),
    "kubelet": ("/usr/bin/kubelet", ["--config=/var/lib/kubelet/config.yaml"], "0", "root"),
    "gitlab-runner": ("/usr/bin/gitlab-runner", ["run", "--working-directory", "/home/gitlab-runner"], "999", "gitlab-runner"),
    "dockerd": ("/usr/bin/dockerd", ["-H", "fd://", "--containerd=/run/containerd/containerd.sock"], "0", "root"),
    "gnome-shell": ("/usr/bin/gnome-shell", [], "1002", "alice"),
}

ROLES = {
    "web": ["nginx", "php-fpm8.2", "node"],
    "app": ["java", "redis-server"],
    "db": ["postgres"],
    "build": ["gitlab-runner", "dockerd"],
    "k8s": ["kubelet", "containerd-shim-runc-v2"],
    "bastion": [],
    "ws": ["gnome-shell"],
}
ROLE_WEIGHTS = [("web", 30), ("app", 20), ("db", 10), ("build", 10), ("k8s", 20), ("bastion", 5), ("ws", 5)]

LOG_FILES = ["/var/log/syslog", "/var/log/auth.log", "/var/log/kern.log", "/var/log/nginx/access.log",
             "/var/log/nginx/error.log", "/var/log/postgresql/postgresql-15-main.log", "/var/log/apt/history.log",
             "/var/log/dpkg.log", "/var/log/cloud-init.log"]
WORDS = ["config", "data", "report", "backup", "index", "cache", "session", "upload", "build", "release", "metrics",
         "invoice", "customer", "orders", "assets", "images", "thumbs", "notes", "draft", "export"]
EXTS = ["json", "log", "txt", "yaml", "csv", "tmp", "gz", "py", "conf", "html", "js", "png", "sql", "pid", "lock"]
PKGS = ["curl", "openssl", "libssl3", "nginx", "python3-pip", "git", "htop", "jq", "postgresql-client", "vim", "tzdata"]
DOMAINS = ["api.github.com", "registry.npmjs.org", "pypi.org", "deb.debian.org", "archive.ubuntu.com",
           "hooks.slack.com", "s3.amazonaws.com", "storage.googleapis.com", "grafana.internal.example.net",
           "vault.internal.example.net", "artifacts.example.net"]


_ISO_CACHE: dict[int, str] = {}


def _iso(us: int) -> str:
    s, frac = divmod(us, 1_000_000)
    head = _ISO_CACHE.get(s)
    if head is None:
        if len(_ISO_CACHE) > 100_000:
            _ISO_CACHE.clear()
        head = _ISO_CACHE[s] = datetime.fromtimestamp(s, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{head}.{frac:06d}Z"


def ts_ns(event: dict) -> int:
    """Timestamp of a generated event in ns (exact: the generator keeps it)."""
    return event["_ts_us"] * 1000 if "_ts_us" in event else _parse_iso_ns(event["@timestamp"])


def _parse_iso_ns(text: str) -> int:
    head, frac = text.rstrip("Z").split(".")
    dt = datetime.strptime(head, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=timezone.utc)
    return int(dt.timestamp()) * 10**9 + int((frac + "000000000")[:9])


# ---------------------------------------------------------------------------
# model


class Host:
    __slots__ = ("idx", "name", "id", "role", "ip", "ip6", "next_pid", "spawners", "daemons", "in_container")

    def __init__(self, idx: int, rng: random.Random):
        self.idx = idx
        self.role = rng.choices([r for r, _ in ROLE_WEIGHTS], [w for _, w in ROLE_WEIGHTS])[0]
        dc = rng.choice(["fra1", "ams3", "iad2", "sfo1", "sgp1"])
        self.name = f"{self.role}-{idx:04d}.{dc}.example.net"
        self.id = f"{rng.getrandbits(128):032x}"
        self.ip = f"10.{rng.randint(0, 63)}.{rng.randint(0, 255)}.{rng.randint(2, 254)}"
        self.ip6 = f"fd00:{idx:x}::{rng.randint(1, 0xffff):x}"
        self.next_pid = rng.randint(900, 40000)
        self.spawners: list[Proc] = []
        self.daemons: dict[str, Proc] = {}
        self.in_container = self.role == "k8s"


class Proc:
    __slots__ = ("host", "pid", "entity_id", "name", "exe", "args", "cmd", "uid", "uname", "parent", "kind",
                 "left", "cwd", "start_us", "profile", "container")

    def to_ecs(self) -> dict:
        d = {"pid": self.pid, "entity_id": self.entity_id, "name": self.name, "executable": self.exe,
             "args": self.args, "args_count": len(self.args), "command_line": self.cmd,
             "working_directory": self.cwd}
        p = self.parent
        if p is not None:
            d["parent"] = {"pid": p.pid, "entity_id": p.entity_id, "name": p.name, "executable": p.exe,
                           "command_line": p.cmd, "args": p.args, "args_count": len(p.args)}
        return d


def _quote(a: str) -> str:
    if a and all(c.isalnum() or c in "-_./=:,@%+" for c in a):
        return a
    return "'" + a.replace("'", "'\\''") + "'"


def cmdline(args: list[str]) -> str:
    return " ".join(_quote(a) for a in args)


# Benign child command builders, by spawner kind.  Each returns
# (argv, executable, profile) where profile is the activity the child performs:
# a list of "f" (file event) / "n" (network event) steps before it exits.


def _rand_file(r: random.Random, uname: str) -> str:
    home = "/root" if uname == "root" else f"/home/{uname}"
    c = r.random()
    if c < 0.25:
        return f"/tmp/{r.choice(['tmp', 'pip-', 'npm-', 'sess_', ''])}{r.getrandbits(40):010x}.{r.choice(EXTS)}"
    if c < 0.45:
        return f"{home}/{r.choice(['.cache', 'projects', 'work', '.local/share', 'Downloads'])}/{r.choice(WORDS)}-{r.randint(1, 999)}.{r.choice(EXTS)}"
    if c < 0.6:
        return r.choice(LOG_FILES)
    if c < 0.75:
        return f"/var/lib/{r.choice(['apt/lists', 'docker/overlay2', 'postgresql/15/main/base', 'kubelet/pods', 'dpkg/info'])}/{r.getrandbits(48):012x}"
    if c < 0.85:
        return f"/srv/{r.choice(['web', 'app', 'data'])}/{r.choice(WORDS)}/{r.choice(WORDS)}-{r.randint(1, 9999)}.{r.choice(EXTS)}"
    if c < 0.93:
        return f"/run/{r.choice(['user/1000', 'systemd/transient', 'containerd', 'lock'])}/{r.choice(WORDS)}.{r.choice(['pid', 'lock', 'sock'])}"
    return f"/etc/{r.choice(['nginx/conf.d', 'apt/sources.list.d', 'ssl/certs', 'default', 'logrotate.d'])}/{r.choice(WORDS)}.{r.choice(['conf', 'list', 'pem', 'cfg'])}"


def _shell_child(r: random.Random, uname: str) -> tuple[list[str], str, str]:
    home = "/root" if uname == "root" else f"/home/{uname}"
    w = r.choice(WORDS)
    c = r.randrange(40)
    table = [
        lambda: (["ls", "-la", r.choice(["/var/log", home, "/etc", "/tmp", "/srv/web"])], "/usr/bin/ls", ""),
        lambda: (["cat", r.choice(LOG_FILES + [f"{home}/.bashrc", "/etc/os-release", "/etc/hosts", "/proc/cpuinfo"])], "/usr/bin/cat", "f"),
        lambda: (["grep", "-rn", r.choice(["ERROR", "timeout", "Failed password", "404", w]), r.choice(LOG_FILES)], "/usr/bin/grep", "f"),
        lambda: (["tail", "-n", str(r.choice([50, 100, 200])), r.choice(LOG_FILES)], "/usr/bin/tail", "f"),
        lambda: (["ps", "aux"], "/usr/bin/ps", ""),
        lambda: (["top", "-b", "-n", "1"], "/usr/bin/top", ""),
        lambda: (["df", "-h"], "/usr/bin/df", ""),
        lambda: (["free", "-m"], "/usr/bin/free", ""),
        lambda: (["vim", f"{home}/{w}.{r.choice(EXTS)}"], "/usr/bin/vim.basic", "ff"),
        lambda: (["git", r.choice(["pull", "status", "log", "fetch", "diff"])], "/usr/bin/git", "nff"),
        lambda: (["curl", "-s", f"https://{r.choice(DOMAINS)}/{w}"], "/usr/bin/curl", "n"),
        lambda: (["curl", "-fsSL", "-o", f"/tmp/{w}.tar.gz", f"https://{r.choice(DOMAINS)}/releases/{w}.tar.gz"], "/usr/bin/curl", "nf"),
        lambda: (["wget", "-q", f"https://{r.choice(DOMAINS)}/{w}.deb"], "/usr/bin/wget", "nf"),
        lambda: (["python3", f"{home}/scripts/{w}.py"], "/usr/bin/python3.11", "fnf"),
        lambda: (["python3", "-m", "pip", "install", "--user", r.choice(["requests", "boto3", "rich", "pyyaml"])], "/usr/bin/python3.11", "nnff"),
        lambda: (["systemctl", r.choice(["status", "restart", "is-active"]), r.choice(["nginx", "postgresql", "ssh", "cron", "docker"])], "/usr/bin/systemctl", ""),
        lambda: (["journalctl", "-u", r.choice(["nginx", "ssh", "kubelet"]), "--since", "1 hour ago"], "/usr/bin/journalctl", "f"),
        lambda: (["sudo", "apt-get", "update"], "/usr/bin/sudo", "nnf"),
        lambda: (["apt-get", "install", "-y", r.choice(PKGS)], "/usr/bin/apt-get", "nff"),
        lambda: (["docker", "ps"], "/usr/bin/docker", "f"),
        lambda: (["docker", "logs", "--tail", "100", f"{w}-{r.randint(1, 9)}"], "/usr/bin/docker", "f"),
        lambda: (["kubectl", "get", "pods", "-n", r.choice(["default", "prod", "monitoring"])], "/usr/local/bin/kubectl", "n"),
        lambda: (["ssh", f"{r.choice(['deploy', 'ubuntu'])}@10.{r.randint(0, 63)}.{r.randint(0, 255)}.{r.randint(2, 254)}"], "/usr/bin/ssh", "n"),
        lambda: (["scp", f"{w}.tar.gz", f"deploy@10.{r.randint(0, 63)}.0.{r.randint(2, 254)}:/srv/"], "/usr/bin/scp", "fn"),
        lambda: (["tar", "-czf", f"/tmp/{w}.tar.gz", f"{home}/{w}"], "/usr/bin/tar", "ff"),
        lambda: (["find", r.choice(["/var/log", home, "/srv"]), "-name", f"*.{r.choice(EXTS)}", "-mtime", "+7"], "/usr/bin/find", ""),
        lambda: (["chmod", r.choice(["644", "600", "755", "g+w"]), f"{home}/{w}.{r.choice(EXTS)}"], "/usr/bin/chmod", ""),
        lambda: (["chown", f"{uname}:{uname}", f"{home}/{w}"], "/usr/bin/chown", ""),
        lambda: (["mkdir", "-p", f"{home}/{w}/{r.choice(WORDS)}"], "/usr/bin/mkdir", ""),
        lambda: (["rm", "-f", f"/tmp/{w}.{r.choice(EXTS)}"], "/usr/bin/rm", "f"),
        lambda: (["cp", f"{home}/{w}.conf", f"{home}/{w}.conf.bak"], "/usr/bin/cp", "ff"),
        lambda: (["mv", f"/tmp/{w}.json", f"{home}/{w}.json"], "/usr/bin/mv", "f"),
        lambda: (["less", r.choice(LOG_FILES)], "/usr/bin/less", "f"),
        lambda: (["id"], "/usr/bin/id", ""),
        lambda: (["uname", "-a"], "/usr/bin/uname", ""),
        lambda: (["hostname"], "/usr/bin/hostname", ""),
        lambda: (["date"], "/usr/bin/date", ""),
        lambda: (["sed", "-i", f"s/{w}/{r.choice(WORDS)}/g", f"{home}/{w}.conf"], "/usr/bin/sed", "ff"),
        lambda: (["awk", "{print $1}", r.choice(LOG_FILES)], "/usr/bin/gawk", "f"),
        lambda: (["make", "-j4"], "/usr/bin/make", "fff"),
    ]
    return table[c]()


def _cron_child(r: random.Random) -> tuple[list[str], str, str]:
    c = r.randrange(5)
    return [
        (["/bin/sh", "-c", "cd / && run-parts --report /etc/cron.hourly"], "/usr/bin/dash", "f"),
        (["/bin/sh", "-c", "/usr/local/bin/backup.sh > /var/log/backup.log 2>&1"], "/usr/bin/dash", "ffn"),
        (["/bin/sh", "-c", "test -x /usr/sbin/anacron || ( cd / && run-parts --report /etc/cron.daily )"], "/usr/bin/dash", ""),
        (["/usr/sbin/logrotate", "/etc/logrotate.conf"], "/usr/sbin/logrotate", "fff"),
        (["/usr/bin/certbot", "-q", "renew"], "/usr/bin/certbot", "nf"),
    ][c]


def _service_child(r: random.Random, svc: str) -> tuple[list[str], str, str]:
    w = r.choice(WORDS)
    if svc == "php-fpm8.2":
        return r.choice([(["/usr/sbin/sendmail", "-t", "-i"], "/usr/sbin/sendmail", "n"),
                         (["convert", f"/srv/web/uploads/{w}.png", "-resize", "200x200", f"/srv/web/thumbs/{w}.png"], "/usr/bin/convert", "ff")])
    if svc == "nginx":
        return (["nginx", "-s", "reload"], "/usr/sbin/nginx", "f")
    if svc == "java":
        return r.choice([(["/bin/sh", "-c", "ulimit -n"], "/usr/bin/dash", ""),
                         (["/usr/bin/git", "rev-parse", "HEAD"], "/usr/bin/git", "f")])
    if svc == "node":
        return (["/usr/bin/node", f"/srv/web/workers/{w}.js"], "/usr/bin/node", "nf")
    if svc == "postgres":
        return (["postgres: 15/main: autovacuum worker"], "/usr/lib/postgresql/15/bin/postgres", "ff")
    if svc == "gitlab-runner":
        return r.choice([(["bash", "--login"], "/usr/bin/bash", "SHELL"),
                         (["docker", "build", "-t", f"registry.example.net/{w}:latest", "."], "/usr/bin/docker", "nff")])
    if svc == "dockerd":
        return (["runc", "--root", "/var/run/docker/runtime-runc/moby", "--log-format", "json", "create"], "/usr/bin/runc", "f")
    if svc == "containerd-shim-runc-v2":
        return r.choice([(["/bin/sh", "-c", f"/app/{w} --serve"], "/bin/sh", "SHELL"),
                         (["/usr/local/bin/python", f"/app/{w}.py"], "/usr/local/bin/python", "nff")])
    if svc == "kubelet":
        return (["/usr/sbin/iptables", "-w", "5", "-t", "nat", "-L", "KUBE-SERVICES"], "/usr/sbin/iptables-legacy", "")
    if svc == "redis-server":
        return (["redis-rdb-bgsave"], "/usr/bin/redis-server", "f")
    return (["gnome-terminal-server"], "/usr/libexec/gnome-terminal-server", "SHELL")


# ---------------------------------------------------------------------------


class Generator:
    def __init__(self, seed: int = 7, hosts: int = 2000, attack_rate: float = 0.0008,
                 mean_gap_us: int = 1800, start_us: int = START_US):
        self.r = random.Random(seed)
        self.hosts = [Host(i, self.r) for i in range(hosts)]
        self.host_weights = [self.r.paretovariate(1.3) for _ in self.hosts]
        self.cum_w = []
        acc = 0.0
        for w in self.host_weights:
            acc += w
            self.cum_w.append(acc)
        self.attack_rate = attack_rate
        self.mean_gap_us = mean_gap_us
        self.now = start_us
        self.active: list[Proc] = []
        self.pending: list[tuple[int, int, dict]] = []
        self._seq = 0
        self.injected: dict[str, int] = {}

    # -- entities ----------------------------------------------------------------
    def _pid(self, h: Host) -> int:
        h.next_pid += self.r.randint(1, 7)
        if h.next_pid > 4_194_000:
            h.next_pid = 300
        return h.next_pid

    def new_proc(self, h: Host, parent: Proc | None, args: list[str], exe: str, uid: str, uname: str,
                 kind: str = "short", profile: str = "", cwd: str | None = None, start_us: int | None = None) -> Proc:
        p = Proc()
        p.host = h
        p.pid = self._pid(h)
        p.start_us = self.now if start_us is None else start_us
        p.entity_id = f"{h.idx:04x}{p.pid:06x}{p.start_us & 0xffffffffff:010x}"
        p.exe = exe
        p.name = exe.rsplit("/", 1)[-1]
        p.args = args
        p.cmd = cmdline(args)
        p.uid, p.uname = uid, uname
        p.parent = parent
        p.kind = kind
        p.profile = profile
        p.left = len(profile)
        p.cwd = cwd or (parent.cwd if parent is not None else "/")
        p.container = h.in_container and parent is not None and parent.name in ("containerd-shim-runc-v2", "sh") and h.role == "k8s"
        return p

    def _base(self, h: Host) -> None:
        if h.daemons:
            return
        t = self.now - self.r.randint(3600, 86400 * 20) * 1_000_000
        systemd = self.new_proc(h, None, ["/sbin/init", "splash"], "/usr/lib/systemd/systemd", "0", "root", "daemon", start_us=t)
        systemd.pid = 1
        systemd.entity_id = f"{h.idx:04x}000001{t & 0xffffffffff:010x}"
        h.daemons["systemd"] = systemd
        h.daemons["sshd"] = self.new_proc(h, systemd, ["/usr/sbin/sshd", "-D"], "/usr/sbin/sshd", "0", "root", "daemon", start_us=t + 2_000_000)
        h.daemons["cron"] = self.new_proc(h, systemd, ["/usr/sbin/cron", "-f"], "/usr/sbin/cron", "0", "root", "daemon", start_us=t + 2_500_000)
        for svc in ROLES[h.role]:
            exe, args, uid, uname = SERVICES[svc]
            h.daemons[svc] = self.new_proc(h, systemd, [svc if svc != "java" else "java"] + args, exe, uid, uname, "daemon",
                                           start_us=t + self.r.randint(3, 60) * 1_000_000, cwd="/")
        h.spawners = list(h.daemons.values())[1:]

    def pick_host(self) -> Host:
        import bisect
        x = self.r.random() * self.cum_w[-1]
        h = self.hosts[bisect.bisect_left(self.cum_w, x)]
        self._base(h)
        return h

    # -- event builders ------------------------------------------------------------
    def _envelope(self, h: Host, category: str, etype: str, action: str, ts_us: int) -> dict:
        return {"@timestamp": _iso(ts_us), "_ts_us": ts_us,
                "event": {"kind": "event", "category": [category], "type": [etype], "action": action,
                          "module": "kestrel", "dataset": f"kestrel.{category}"},
                "host": {"name": h.name, "id": h.id, "os": {"type": "linux", "name": "Ubuntu", "kernel": "6.8.0-49-generic"}}}

    def proc_event(self, p: Proc, etype: str = "start", ts_us: int | None = None, exit_code: int = 0) -> dict:
        ts = self.now if ts_us is None else ts_us
        e = self._envelope(p.host, "process", etype, "exec" if etype == "start" else "end", ts)
        pe = p.to_ecs()
        if etype == "end":
            pe["exit_code"] = exit_code
        e["process"] = pe
        e["user"] = {"id": p.uid, "name": p.uname}
        if p.container:
            e["container"] = {"id": f"{p.host.idx:08x}{p.parent.pid:056x}"[:64]}
        return e

    def file_event(self, p: Proc, path: str, etype: str = "creation", ts_us: int | None = None) -> dict:
        ts = self.now if ts_us is None else ts_us
        action = {"creation": "creation", "change": "modification", "deletion": "deletion"}[etype]
        e = self._envelope(p.host, "file", etype, action, ts)
        name = path.rsplit("/", 1)[-1]
        f = {"path": path, "name": name, "directory": path.rsplit("/", 1)[0] or "/"}
        if "." in name[1:]:
            f["extension"] = name.rsplit(".", 1)[-1]
        e["file"] = f
        e["process"] = {"pid": p.pid, "entity_id": p.entity_id, "name": p.name, "executable": p.exe}
        e["user"] = {"id": p.uid, "name": p.uname}
        return e

    def net_event(self, p: Proc, dip: str, dport: int, ts_us: int | None = None, direction: str = "egress",
                  transport: str = "tcp") -> dict:
        ts = self.now if ts_us is None else ts_us
        action = "connection_attempted" if direction == "egress" else "connection_accepted"
        e = self._envelope(p.host, "network", "start", action, ts)
        v6 = ":" in dip
        e["source"] = {"ip": p.host.ip6 if v6 else p.host.ip, "port": self.r.randint(32768, 60999)}
        e["destination"] = {"ip": dip, "port": dport}
        e["network"] = {"transport": transport, "type": "ipv6" if v6 else "ipv4", "direction": direction}
        e["process"] = {"pid": p.pid, "entity_id": p.entity_id, "name": p.name, "executable": p.exe}
        e["user"] = {"id": p.uid, "name": p.uname}
        return e

    # -- benign activity -------------------------------------------------------------
    def _benign_exec(self) -> dict:
        r = self.r
        h = self.pick_host()
        sp = r.choice(h.spawners)
        if sp.name == "sshd":
            if r.random() < 0.5 or len(h.spawners) > 12:
                # a login: a shell session for a human (or deploy) user
                uid, uname = r.choice(HUMANS + [("1001", "deploy"), ("0", "root")])
                sess = self.new_proc(h, sp, ["sshd: " + uname + "@pts/" + str(r.randint(0, 9))], "/usr/sbin/sshd", "0", "root", "short", "n")
                sh = self.new_proc(h, sess, ["-bash"], "/usr/bin/bash", uid, uname, "shell",
                                   cwd="/root" if uname == "root" else f"/home/{uname}")
                sh.left = r.randint(5, 60)
                h.spawners.append(sh)
                self.active.append(sess)
                self.pending_push(self.now + r.randint(1000, 50000), self.proc_event(sh, "start", self.now + r.randint(1000, 50000)))
                return self.proc_event(sess)
            sp = r.choice(h.spawners)
        if sp.name == "cron":
            args, exe, prof = _cron_child(r)
            uid, uname = "0", "root"
        elif sp.name == "systemd":
            args, exe, prof = r.choice([
                (["/usr/lib/systemd/systemd-tmpfiles", "--clean"], "/usr/lib/systemd/systemd-tmpfiles", "fff"),
                (["/usr/bin/apt-get", "-qq", "update"], "/usr/bin/apt-get", "nnff"),
                (["/usr/sbin/logrotate", "/etc/logrotate.conf"], "/usr/sbin/logrotate", "ff"),
                (["/usr/lib/update-notifier/package-data-downloader"], "/usr/lib/update-notifier/package-data-downloader", "n"),
                (["/usr/bin/unattended-upgrade"], "/usr/bin/unattended-upgrade", "nff"),
            ])
            uid, uname = "0", "root"
        elif sp.kind == "shell":
            args, exe, prof = _shell_child(r, sp.uname)
            uid, uname = sp.uid, sp.uname
            sp.left -= 1
            if sp.left <= 0:
                h.spawners.remove(sp)
                self.pending_push(self.now + r.randint(100, 5000), self.proc_event(sp, "end", self.now + r.randint(100, 5000)))
        else:
            args, exe, prof = _service_child(r, sp.name)
            uid, uname = sp.uid, sp.uname
        kind = "short"
        if prof == "SHELL":
            prof, kind = "", "shell"
        p = self.new_proc(h, sp, args, exe, uid, uname, kind, prof)
        if kind == "shell":
            p.left = r.randint(3, 20)
            h.spawners.append(p)
        else:
            self.active.append(p)
        return self.proc_event(p)

    def _benign_activity(self) -> dict:
        r = self.r
        if not self.active:
            return self._benign_exec()
        i = r.randrange(len(self.active))
        p = self.active[i]
        if p.left <= 0:
            self.active[i] = self.active[-1]
            self.active.pop()
            return self.proc_event(p, "end", exit_code=0 if r.random() < 0.95 else r.choice([1, 2, 127, 130]))
        step = p.profile[len(p.profile) - p.left]
        p.left -= 1
        if step == "f":
            et = r.choices(["creation", "change", "deletion"], [45, 45, 10])[0]
            return self.file_event(p, _rand_file(r, p.uname), et)
        c = r.random()
        if c < 0.55:
            dip = r.choice(EXTERNAL_V4)
        elif c < 0.7:
            dip = r.choice(EXTERNAL_V6)
        elif c < 0.95:
            dip = f"10.{r.randint(0, 63)}.{r.randint(0, 255)}.{r.randint(2, 254)}"
        else:
            dip = f"fd00:{r.randint(0, len(self.hosts)):x}::{r.randint(1, 0xffff):x}"
        port = r.choices([443, 80, 53, 22, 5432, 6379, 9200, 8080, 3306], [50, 10, 15, 5, 6, 4, 3, 5, 2])[0]
        return self.net_event(p, dip, port, transport="udp" if port == 53 else "tcp")

    def pending_push(self, ts_us: int, ev: dict) -> None:
        ev["_ts_us"] = ts_us
        ev["@timestamp"] = _iso(ts_us)
        self._seq += 1
        heapq.heappush(self.pending, (ts_us, self._seq, ev))

    # -- main loop ----------------------------------------------------------------------
    def generate(self, n: int, schedule: dict[int, tuple[str, int]] | None = None) -> list[dict]:
        """``n`` events; ``schedule`` maps an output position to (story, host
        index): the story starts when the stream reaches that position."""
        r = self.r
        schedule = dict(schedule or {})
        out: list[dict] = []
        gap = self.mean_gap_us
        story_names = list(attacks.STORIES)
        while len(out) < n:
            self.now += int(r.expovariate(1.0 / gap)) + 1
            while self.pending and self.pending[0][0] <= self.now and len(out) < n:
                out.append(heapq.heappop(self.pending)[2])
            if len(out) >= n:
                break
            for pos in [p for p in schedule if p <= len(out)]:
                name, hidx = schedule.pop(pos)
                self.inject(name, self.hosts[hidx])
            if self.attack_rate and r.random() < self.attack_rate:
                name = r.choice(story_names)
                self.inject(name)
                continue
            ev = self._benign_exec() if r.random() < 0.22 else self._benign_activity()
            out.append(ev)
        for i, ev in enumerate(out):
            ev["event"]["id"] = str(i)
        return out

    def inject(self, name: str, host: Host | None = None, t0: int | None = None) -> None:
        h = host or self.pick_host()
        self._base(h)
        t0 = self.now if t0 is None else t0
        for ts, ev in attacks.STORIES[name](self, h, t0):
            ev["_story"] = name  # private marker (strip_private removes it)
            self.pending_push(ts, ev)
        self.injected[name] = self.injected.get(name, 0) + 1


def generate(n: int, seed: int = 7, **kw: Any) -> list[dict]:
    """``n`` time-ordered ECS event dicts (with a private ``_ts_us`` key)."""
    import gc

    enabled = gc.isenabled()
    gc.disable()  # millions of new dicts: the cyclic GC would dominate
    try:
        return Generator(seed=seed, **kw).generate(n)
    finally:
        if enabled:
            gc.enable()


def strip_private(ev: dict) -> dict:
    ev.pop("_ts_us", None)
    ev.pop("_story", None)
    return ev


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=10_000)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--hosts", type=int, default=2000)
    ap.add_argument("--out", default="-")
    a = ap.parse_args(argv)
    import gc

    gc.disable()
    g = Generator(seed=a.seed, hosts=a.hosts)
    evs = g.generate(a.events)
    f = sys.stdout if a.out == "-" else open(a.out, "w")
    for ev in evs:
        f.write(json.dumps(strip_private(ev), separators=(",", ":")) + "\n")
    print(f"injected stories: {g.injected}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
