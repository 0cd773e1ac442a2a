"""Benchmark scenarios: rule sets written twice, once for Kestrel and once for
the ``eql`` package, such that both mean the same thing on the generated data.

Pairing rules (see docs/benchmarks.md, "Semantics pairing"):

* Kestrel queries use Elasticsearch EQL syntax.  eql 1.0.1 parses the same
  text under ``eql.parser.elasticsearch_syntax`` (``:`` becomes a wildcard
  comparison, ``like~``/``in~`` become its case-insensitive ``==``/``in``), so
  most rules are one text used by both engines.
* eql compares every string case-insensitively; Kestrel's ``==``, ``in`` and
  ``like`` are case-sensitive.  Rules use those operators only on fields whose
  generated values never vary in case against the literal (``event.action``,
  ``process.name``, ``user.id``, ports), and ``:``/``like~``/``in~`` elsewhere.
* eql treats ``?`` in a wildcard as a literal; Kestrel as one character.  No
  compared rule uses ``?``.
* eql does not look inside arrays (``process.args : "-e"`` never matches a
  list there); Kestrel does, as Elasticsearch.  For ``process.args`` and
  ``event.type`` the eql text uses ``arrayContains`` / ``arraySearch``, which
  are eql's way to say the same thing.
* ``cidrMatch`` agrees on both sides for IPv4 and IPv6 addresses that are
  present; every generated network event has ``destination.ip``.

Each rule is a dict: id, kestrel (query), eql (query), compare (bool), note.
"""

from __future__ import annotations

import random

SHELLS = ["bash", "sh", "dash", "zsh"]
NAMES_SEEN = ["curl", "wget", "git", "ssh", "scp", "sudo", "apt-get", "docker", "kubectl", "python3.11", "node",
              "tar", "chmod", "chown", "grep", "find", "cat", "vim.basic", "systemctl", "journalctl", "make",
              "sendmail", "convert", "iptables-legacy", "runc", "logrotate", "certbot", "nginx", "id", "whoami",
              "uname", "useradd", "insmod", "nsenter", "unshadow", "base64", "shred", "truncate", "ln", "rm", "cp"]
NAMES_UNSEEN = ["socat", "tcpdump", "nmap", "masscan", "hping3", "tshark", "strace", "gdb", "ltrace", "perl", "ruby",
                "lua", "php", "busybox", "telnet", "ftp", "tftp", "rsync", "openssl", "xxd", "mkfifo", "crontab"]
PARENTS = ["nginx", "php-fpm8.2", "java", "node", "sshd", "cron", "bash", "dash", "gitlab-runner", "containerd-shim-runc-v2",
           "systemd", "kubelet", "dockerd", "sudo", "apache2", "httpd"]
EXE_DIRS = ["/tmp/*", "/var/tmp/*", "/dev/shm/*", "/usr/local/bin/*", "/opt/*", "/srv/*", "/home/*/.local/bin/*",
            "/run/user/*", "/var/lib/docker/*", "/usr/lib/jvm/*", "/usr/libexec/*", "/snap/*"]
CMD_TOKENS = ["--since", "pip install", "/dev/tcp/", "base64 -d", "-fsSL", "tar.gz", "-Xmx", "run-parts", "KUBE-SERVICES",
              "stratum+tcp", "authorized_keys", "/etc/shadow", "NOPASSWD", "ld.so.preload", "--privileged", "chmod 777",
              "history -c", "HISTFILE", "-o /tmp/", "nohup", "python -c", "import socket", "wget -q", "/etc/cron",
              "--login", "ulimit", "autovacuum", "reload", "Failed password", "renew"]
FILE_DIRS = ["/etc/cron.d/*", "/etc/systemd/system/*", "/etc/sudoers.d/*", "/var/spool/cron/*", "/etc/nginx/conf.d/*",
             "/etc/apt/sources.list.d/*", "/etc/ssl/certs/*", "/etc/logrotate.d/*", "/tmp/*", "/dev/shm/*",
             "/var/log/*", "/srv/web/uploads/*", "/root/.ssh/*", "/home/*/.ssh/*", "/etc/profile.d/*", "/usr/lib/systemd/*",
             "/var/lib/kubelet/pods/*", "/run/containerd/*"]
EXTS = ["sh", "py", "php", "ko", "so", "service", "timer", "conf", "json", "pem", "key", "elf", "bin", "jsp", "pl"]
RARE_PORTS = [4444, 1337, 31337, 9001, 6667, 5555, 8443, 3333, 23, 2375, 6379, 3306, 8080, 4443, 1080, 9050, 7777]
PORTS = [4444, 1337, 31337, 9001, 6667, 5555, 8443, 3333, 22, 23, 2375, 6379, 9200, 5432, 3306, 8080, 53, 80, 443]
CIDRS = ["203.0.113.0/24", "198.51.100.0/24", "45.9.148.0/24", "185.220.0.0/16", "194.87.0.0/16", "151.101.0.0/16",
         "140.82.112.0/20", "2001:db8::/32", "2606:4700::/32", "2a00:1450::/32", "104.16.0.0/13", "91.189.88.0/21"]
PRIVATE = '"10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "127.0.0.0/8", "fc00::/7", "::1/128"'
FILE_NAMES = ["authorized_keys", "ld.so.preload", "sudoers", "passwd", "shadow", "crontab", ".bash_history",
              "id_rsa", "known_hosts", ".bashrc", "config.json", "wp-config.php", "kubeconfig", "credentials"]


def _q(xs) -> str:
    return ", ".join(f'"{x}"' if isinstance(x, str) else str(x) for x in xs)


def _rule(rid: str, kestrel: str, eql: str | None = None, compare: bool = True, note: str = "") -> dict:
    return {"id": rid, "kestrel": kestrel.strip(), "eql": (eql or kestrel).strip(), "compare": compare, "note": note}


# --------------------------------------------------------------------------- (a)

def scenario_a() -> list[dict]:
    return [_rule(
        "a.web_server_shell",
        'process where event.action == "exec" and process.name in ("bash", "sh", "dash") and '
        'process.parent.name : ("nginx", "php-fpm*", "apache2", "httpd")',
        note="== and in on lower-case-only fields; : with wildcards (no ?)")]


# --------------------------------------------------------------------------- (b)

HAND_WRITTEN_SINGLE = [
    _rule("b.h.reverse_shell_dev_tcp",
          'process where event.action == "exec" and process.name : ("bash", "sh", "dash", "zsh") and '
          'process.command_line : ("*/dev/tcp/*", "*/dev/udp/*")'),
    _rule("b.h.netcat_exec",
          'process where event.action == "exec" and process.name : ("nc", "ncat", "netcat", "nc.traditional") and '
          'process.args : ("-e", "-c", "--exec")',
          'process where event.action == "exec" and process.name : ("nc", "ncat", "netcat", "nc.traditional") and '
          'arrayContains(process.args, "-e", "-c", "--exec")', note="args: arrayContains on the eql side"),
    _rule("b.h.curl_pipe_sh",
          'process where event.action == "exec" and process.name : ("sh", "dash", "bash") and '
          'process.command_line : ("*curl *|*sh*", "*wget *|*sh*")'),
    _rule("b.h.exec_from_tmp",
          'process where event.type : "start" and process.executable : ("/tmp/*", "/var/tmp/*", "/dev/shm/*")',
          'process where arrayContains(event.type, "start") and process.executable : ("/tmp/*", "/var/tmp/*", "/dev/shm/*")',
          note="event.type is a list: arrayContains on the eql side"),
    _rule("b.h.cron_write",
          'file where event.action in ("creation", "modification") and '
          'file.path : ("/etc/crontab", "/etc/cron.d/*", "/etc/cron.hourly/*", "/var/spool/cron/*") and '
          'not process.name in ("crontab", "dpkg", "apt-get")'),
    _rule("b.h.systemd_unit",
          'file where event.action in ("creation", "modification") and '
          'file.path : ("/etc/systemd/system/*", "/lib/systemd/system/*", "/root/.config/systemd/user/*") and '
          'file.extension in ("service", "timer")'),
    _rule("b.h.authorized_keys",
          'file where event.action in ("creation", "modification") and file.name : ("authorized_keys", "authorized_keys2") and '
          'not process.name : ("sshd", "ssh-keygen", "cloud-init")'),
    _rule("b.h.ld_preload", 'file where file.path : "/etc/ld.so.preload" and event.action != "deletion"'),
    _rule("b.h.insmod",
          'process where event.action == "exec" and (process.name == "insmod" or '
          '(process.name == "modprobe" and process.command_line : "*.ko*"))'),
    _rule("b.h.setuid",
          'process where event.action == "exec" and process.name == "chmod" and process.args : ("u+s", "+s", "4755", "6755")',
          'process where event.action == "exec" and process.name == "chmod" and arrayContains(process.args, "u+s", "+s", "4755", "6755")',
          note="args: arrayContains"),
    _rule("b.h.passwd_writer",
          'file where event.action == "modification" and file.path in ("/etc/passwd", "/etc/shadow") and '
          'not process.name in ("useradd", "usermod", "passwd", "chpasswd")'),
    _rule("b.h.nsenter_pid1",
          'process where event.action == "exec" and process.name == "nsenter" and process.command_line : "*-t 1 *"'),
    _rule("b.h.shell_backdoor_port",
          f'network where process.name : ("bash", "sh", "dash", "nc*", "python*") and destination.port in (4444, 1337, 31337, 9001) and '
          f'not cidrMatch(destination.ip, {PRIVATE})'),
    _rule("b.h.shadow_read",
          'process where event.action == "exec" and process.name in ("cat", "less", "cp", "head") and '
          'process.command_line : "*/etc/shadow*"'),
    _rule("b.h.history_clear",
          'process where event.action == "exec" and process.command_line like~ ("*_history*", "*history -c*", "*unset histfile*")',
          note="like~ = eql's case-insensitive =="),
    _rule("b.h.miner",
          'process where event.action == "exec" and (process.name in ("xmrig", "kdevtmpfsi") or process.command_line : "*stratum+tcp://*")'),
    _rule("b.h.base64_pipe",
          'process where event.action == "exec" and process.command_line : "*base64 -d*|*sh*"'),
    _rule("b.h.web_recon",
          'process where event.action == "exec" and process.parent.name : ("php-fpm*", "nginx") and '
          'process.command_line : ("*id;*", "*whoami*", "*uname -a*")'),
    _rule("b.h.external_ipv6",
          'network where cidrMatch(destination.ip, "2001:db8::/32") and event.action == "connection_attempted"'),
    _rule("b.h.root_ssh_out",
          'network where user.id == "0" and destination.port == 22 and process.name in ("ssh", "scp")'),
]


def scenario_b(n: int = 100, seed: int = 11) -> list[dict]:
    r = random.Random(seed)
    rules = list(HAND_WRITTEN_SINGLE)
    templates = []

    def t_name_in(i):
        names = r.sample(NAMES_SEEN, 1) + r.sample(NAMES_UNSEEN, 4)
        return _rule(f"b.t{i}.name_in", f'process where event.action == "exec" and process.name in ({_q(names)})')

    def t_parent_child(i):
        par = r.sample(PARENTS, 2) + [r.choice(["php-fpm*", "gitlab*", "containerd*", "kube*"])]
        ch = r.sample(SHELLS + ["python*", "perl", "curl", "wget", "nc*", "socat", "busybox"], 3)
        return _rule(f"b.t{i}.parent_child",
                     f'process where event.action == "exec" and process.parent.name : ({_q(par)}) and process.name : ({_q(ch)})')

    def t_exe(i):
        dirs = r.sample(EXE_DIRS, r.randint(1, 3))
        return _rule(f"b.t{i}.exe_dir", f'process where event.action == "exec" and process.executable : ({_q(dirs)})')

    def t_cmd(i):
        tok = r.choice(CMD_TOKENS)
        if r.random() < 0.5:
            return _rule(f"b.t{i}.cmd_contains", f'process where event.action == "exec" and process.command_line : "*{tok}*"')
        nm = r.choice(NAMES_SEEN + SHELLS)
        return _rule(f"b.t{i}.cmd_like_ci",
                     f'process where process.name : "{nm}" and process.command_line like~ ("*{tok}*", "*{r.choice(CMD_TOKENS)}*")')

    def t_file_path(i):
        dirs = r.sample(FILE_DIRS, r.randint(1, 3))
        return _rule(f"b.t{i}.file_path",
                     f'file where event.action in ("creation", "modification") and file.path : ({_q(dirs)})')

    def t_file_ext(i):
        exts = r.sample(EXTS, 3)
        d = r.choice(["/tmp/*", "/srv/*", "/var/*", "/home/*", "/etc/*", "/dev/shm/*"])
        return _rule(f"b.t{i}.file_ext", f'file where file.extension in ({_q(exts)}) and file.path : "{d}"')

    def t_net_port(i):
        ports = r.sample(RARE_PORTS, 3) + [r.choice(PORTS)] if r.random() < 0.3 else r.sample(RARE_PORTS, 4)
        return _rule(f"b.t{i}.net_port",
                     f'network where destination.port in ({_q(ports)}) and not cidrMatch(destination.ip, {PRIVATE})')

    def t_net_cidr(i):
        cidrs = r.sample(CIDRS, 2)
        procs = r.sample(["curl", "wget", "python*", "node", "git", "ssh", "bash", "sh", "nc*", "apt*"], 3)
        return _rule(f"b.t{i}.net_cidr",
                     f'network where cidrMatch(destination.ip, {_q(cidrs)}) and process.name : ({_q(procs)})')

    def t_user(i):
        uid = r.choice(["0", "33", "1001", "112", "65534"])
        nm = r.sample(NAMES_SEEN, 2)
        return _rule(f"b.t{i}.user", f'process where user.id == "{uid}" and process.name in ({_q(nm)})')

    def t_args(i):
        nm = r.choice(["chmod", "curl", "wget", "tar", "systemctl", "docker", "grep", "find", "ssh", "nc*"])
        args = r.sample(["-la", "+x", "-q", "-czf", "restart", "-rn", "logs", "-e", "-fsSL", "u+s", "--privileged",
                         "-name", "-o", "enable", "status", "-d"], 2)
        if r.random() < 0.5:
            return _rule(f"b.t{i}.args", f'process where process.name : "{nm}" and process.args : ({_q(args)})',
                         f'process where process.name : "{nm}" and arrayContains(process.args, {_q(args)})',
                         note="args: arrayContains")
        pat = r.choice(["/tmp/*", "/var/log/*", "*.tar.gz", "/etc/*", "http*"])
        return _rule(f"b.t{i}.args_wild", f'process where process.name : "{nm}" and process.args : "{pat}"',
                     f'process where process.name : "{nm}" and arraySearch(process.args, a, a : "{pat}")',
                     note="args wildcard: arraySearch")

    def t_file_name_not(i):
        names = r.sample(FILE_NAMES, 3)
        excl = r.sample(NAMES_SEEN, 3)
        return _rule(f"b.t{i}.file_name_not",
                     f'file where file.name : ({_q(names)}) and not process.name : ({_q(excl)})')

    templates = [t_name_in, t_parent_child, t_exe, t_cmd, t_file_path, t_file_ext, t_net_port, t_net_cidr, t_user,
                 t_args, t_file_name_not]
    i = 0
    while len(rules) < n:
        rules.append(templates[i % len(templates)](i))
        i += 1
    return rules[:n]


# --------------------------------------------------------------------------- (c)

def scenario_c() -> list[dict]:
    return [_rule(
        "c.download_then_tmp_write",
        'sequence by process.entity_id with maxspan=30s '
        '[process where event.action == "exec" and process.name in ("curl", "wget")] '
        '[network where destination.port in (80, 443)] '
        '[file where event.action == "creation" and file.path : ("/tmp/*", "/var/tmp/*", "/dev/shm/*")]',
        note="by-key values are lower case (eql folds join keys)")]


# --------------------------------------------------------------------------- (d)

HAND_WRITTEN_SEQ = [
    _rule("d.h.download_chmod_exec",
          'sequence by host.name, user.id with maxspan=5m '
          '[file where event.action == "creation" and file.path : ("/tmp/*", "/var/tmp/*", "/dev/shm/*")] '
          '[process where event.action == "exec" and process.name == "chmod" and process.command_line : ("*+x*", "* 755 *", "* 777 *")] '
          '[process where event.action == "exec" and process.executable : ("/tmp/*", "/var/tmp/*", "/dev/shm/*")]'),
    _rule("d.h.useradd_sudoers",
          'sequence by host.name with maxspan=10m '
          '[process where event.action == "exec" and process.name in ("useradd", "adduser")] '
          '[file where event.action in ("creation", "modification") and file.path : ("/etc/sudoers", "/etc/sudoers.d/*")]'),
    _rule("d.h.shell_outbound",
          'sequence by process.entity_id with maxspan=30s '
          '[process where event.action == "exec" and process.name in ("bash", "sh", "dash")] '
          f'[network where not cidrMatch(destination.ip, {PRIVATE})]'),
    _rule("d.h.web_shell_discovery",
          'sequence by host.name with maxspan=1m '
          '[process where event.action == "exec" and process.parent.name : ("nginx", "php-fpm*") and process.name in ("sh", "dash", "bash")] by process.entity_id '
          '[process where event.action == "exec" and process.name in ("id", "whoami", "uname", "hostname")] by process.parent.entity_id'),
    _rule("d.h.ko_then_insmod",
          'sequence by host.name with maxspan=5m '
          '[file where event.action == "creation" and file.extension == "ko"] '
          '[process where event.action == "exec" and process.name in ("insmod", "modprobe")]'),
    _rule("d.h.curl_tmp_until_exit",
          'sequence by process.entity_id with maxspan=1m '
          '[process where event.action == "exec" and process.name in ("curl", "wget")] '
          '[file where event.action == "creation"] '
          'until [process where event.action == "end"]'),
]


def scenario_d(n: int = 50, seed: int = 13) -> list[dict]:
    r = random.Random(seed)
    rules = list(HAND_WRITTEN_SEQ)
    span = lambda: r.choice(["10s", "30s", "1m", "2m", "5m"])  # noqa: E731

    def s_exec_net(i):
        names = r.sample(["curl", "wget", "git", "python3.11", "ssh", "scp", "apt-get", "sudo", "node", "docker", "kubectl",
                          "certbot", "sendmail", "nc.traditional", "bash"], 3)
        ports = r.sample(PORTS, 3)
        return _rule(f"d.t{i}.exec_net",
                     f'sequence by process.entity_id with maxspan={span()} '
                     f'[process where event.action == "exec" and process.name in ({_q(names)})] '
                     f'[network where destination.port in ({_q(ports)})]')

    def s_exec_file_end(i):
        names = r.sample(["curl", "wget", "git", "python3.11", "vim.basic", "tar", "cp", "make", "scp", "logrotate",
                          "sed", "apt-get", "convert", "docker"], 3)
        d = r.sample(FILE_DIRS + ["/home/*", "/var/lib/*"], 2)
        return _rule(f"d.t{i}.exec_file_end",
                     f'sequence by process.entity_id with maxspan={span()} '
                     f'[process where event.action == "exec" and process.name in ({_q(names)})] '
                     f'[file where event.action in ("creation", "modification") and file.path : ({_q(d)})] '
                     f'[process where event.action == "end"]')

    def s_host_pair(i):
        a = r.sample(NAMES_SEEN, 2)
        b = r.sample(NAMES_SEEN, 2)
        return _rule(f"d.t{i}.host_pair",
                     f'sequence by host.name with maxspan={span()} '
                     f'[process where event.action == "exec" and process.name in ({_q(a)})] '
                     f'[process where event.action == "exec" and process.name in ({_q(b)})]')

    def s_host_user_triple(i):
        d = r.choice(["/tmp/*", "/srv/*", "/home/*", "/var/log/*"])
        a = r.sample(["chmod", "chown", "tar", "cp", "mv", "sed", "curl", "wget"], 2)
        return _rule(f"d.t{i}.host_user_triple",
                     f'sequence by host.name, user.id with maxspan={span()} '
                     f'[file where event.action == "creation" and file.path : "{d}"] '
                     f'[process where event.action == "exec" and process.name in ({_q(a)})] '
                     f'[network where destination.port in (443, 80, 22)]')

    def s_parent_child(i):
        par = r.sample(["nginx", "php-fpm*", "java", "node", "sshd", "cron", "gitlab-runner", "containerd*", "sudo"], 2)
        ch = r.sample(["id", "whoami", "uname", "cat", "ls", "curl", "wget", "grep", "ps", "git", "docker", "python3.11"], 3)
        return _rule(f"d.t{i}.parent_child",
                     f'sequence by host.name with maxspan={span()} '
                     f'[process where event.action == "exec" and process.parent.name : ({_q(par)})] by process.entity_id '
                     f'[process where event.action == "exec" and process.name in ({_q(ch)})] by process.parent.entity_id')

    def s_until(i):
        names = r.sample(["curl", "wget", "git", "python3.11", "ssh", "scp", "apt-get", "sudo", "node", "tar", "make"], 3)
        return _rule(f"d.t{i}.until",
                     f'sequence by process.entity_id with maxspan={span()} '
                     f'[process where event.action == "exec" and process.name in ({_q(names)})] '
                     f'[file where event.action in ("creation", "modification", "deletion")] '
                     f'[network where true] '
                     f'until [process where event.action == "end"]')

    templates = [s_exec_net, s_exec_file_end, s_host_pair, s_host_user_triple, s_parent_child, s_until]
    i = 0
    while len(rules) < n:
        rules.append(templates[i % len(templates)](i))
        i += 1
    return rules[:n]


# --------------------------------------------------------------------------- (e), (f): published style

TOOLS = NAMES_UNSEEN + [f"{a}{b}" for a in ("x", "k", "z", "q") for b in ("miner", "rat", "dump", "scan", "hide",
                                                                         "sock", "load", "spy")]
HIDDEN_DIRS = ["/dev/shm/", "/var/tmp/.", "/tmp/.X11-unix/", "/run/.", "/boot/.", "/lib/modules/.",
               "/usr/share/.cache/", "/etc/.", "/root/.local/share/", "/var/lib/.pkg/"]
FRAGS = ["/dev/tcp/", "base64 -d", "curl -s", "chmod +s", "LD_PRELOAD=", "nohup ", "mkfifo ", "xmrig", "stratum+",
         "/etc/ld.so.preload", "iptables -F", "history -c", "setenforce 0", "pkill -9", "echo ssh-rsa",
         ">/dev/null 2>&1 &", "wget -O-", "python -c 'import pty", "socat exec:", "nc -e", "bash -i >&",
         "openssl s_client"]


def _re_escape(s: str) -> str:
    return "".join(f"[{c}]" if c in ".+*?(){}|^$[]" else c for c in s).replace('"', "")


def scenario_e(n: int = 1000, seed: int = 17) -> list[dict]:
    """Single-event rules in the style of published Linux detection packs: each
    names tools, paths or command-line fragments that benign fleet activity
    rarely shows (long ``in`` lists, ``:`` and ``like~`` wildcards, regex,
    cidrMatch, gated by ``event.action``), so most fire rarely or never."""
    r = random.Random(seed)
    out = []
    for i in range(n):
        k = i % 8
        compare, note = True, ""
        if k == 0:
            q = f'process where event.action == "exec" and process.name in ({_q(r.sample(TOOLS, r.randint(8, 30)))})'
        elif k == 1:
            q = f'process where event.action == "exec" and process.executable : "{r.choice(HIDDEN_DIRS)}*"'
        elif k == 2:
            f = r.choice(FRAGS).replace('"', "")
            q = f'process where event.action == "exec" and process.command_line like~ "*{f}*"'
        elif k == 3:
            q = f'process where event.action == "exec" and process.command_line regex~ ".*{_re_escape(r.choice(FRAGS))}.*"'
            compare, note = False, "regex: eql anchors at the start only"
        elif k == 4:
            q = (f'process where event.action == "exec" and process.parent.name : ({_q(r.sample(PARENTS, 2))}) '
                 f'and process.name : ({_q([x + "*" for x in r.sample(TOOLS, 3)])})')
        elif k == 5:
            ext = r.choice(["so", "ko", "elf", "bin", "sh"])
            q = f'file where event.action == "creation" and file.path : "{r.choice(HIDDEN_DIRS)}*.{ext}"'
        elif k == 6:
            q = (f'network where destination.port == {r.choice(RARE_PORTS)} and '
                 f'process.name : ({_q(r.sample(TOOLS, 4))})')
        else:
            q = (f'network where cidrMatch(destination.ip, {_q(r.sample(CIDRS, 2))}) and '
                 f'process.name in ({_q(r.sample(TOOLS, 6))})')
        out.append(_rule(f"e{i}.{k}", q, compare=compare, note=note))
    return out


def scenario_f(n: int = 200, seed: int = 19) -> list[dict]:
    """Sequence rules in the style of published Linux packs: 2-3 steps by
    process, host or host+user (some with per-step keys), each step gated by
    ``event.action`` and naming rare tools, hidden paths, command-line
    fragments (``:``, ``like~``, regex) or addresses (cidrMatch); one in ten
    ends with ``until`` process end.  A few templates follow the injected
    attack stories, so the match check has substance."""
    r = random.Random(seed)
    span = lambda: r.choice(["10s", "30s", "1m", "5m"])  # noqa: E731
    dl = ["curl", "wget"]

    def exec_net(i):
        return (f'sequence by process.entity_id with maxspan={span()} '
                f'[process where event.action == "exec" and process.name in ({_q(r.sample(TOOLS, r.randint(6, 16)))})] '
                f'[network where not cidrMatch(destination.ip, {PRIVATE})]'), True

    def drop_exec(i):
        d = r.choice(["/tmp/", "/dev/shm/", "/var/tmp/"] + HIDDEN_DIRS)
        return (f'sequence by host.name with maxspan={span()} '
                f'[file where event.action == "creation" and file.path : "{d}*"] '
                f'[process where event.action == "exec" and process.executable : "{d}*"]'), True

    def web_recon(i):
        return (f'sequence by host.name with maxspan={span()} '
                f'[process where event.action == "exec" and process.parent.name : ({_q(r.sample(PARENTS, 3))}) and '
                f'process.name in ("sh", "dash", "bash")] by process.entity_id '
                f'[process where event.action == "exec" and process.name in ({_q(r.sample(TOOLS, 5) + ["id"])})] '
                f'by process.parent.entity_id'), True

    def cmd_file(i):
        f = r.choice(FRAGS).replace('"', "")
        return (f'sequence by host.name, user.id with maxspan={span()} '
                f'[process where event.action == "exec" and process.command_line like~ "*{f}*"] '
                f'[file where event.action in ("creation", "modification") and file.path : ({_q(r.sample(FILE_DIRS, 2))})]'), True

    def regex_net(i):
        return (f'sequence by process.entity_id with maxspan={span()} '
                f'[process where event.action == "exec" and process.command_line regex~ ".*{_re_escape(r.choice(FRAGS))}.*"] '
                f'[network where destination.port in ({_q(r.sample(RARE_PORTS, 4))})]'), False

    def download_chmod_exec(i):
        d = r.choice(["/tmp", "/dev/shm", "/var/tmp"])
        return (f'sequence by host.name with maxspan={span()} '
                f'[process where event.action == "exec" and process.name in ({_q(dl + r.sample(TOOLS, 3))})] by process.parent.entity_id '
                f'[process where event.action == "exec" and process.name == "chmod" and process.command_line : "*{d}/*"] by process.parent.entity_id '
                f'[process where event.action == "exec" and process.executable : "{d}/*"] by process.parent.entity_id'), True

    def cidr_file(i):
        return (f'sequence by process.entity_id with maxspan={span()} '
                f'[network where cidrMatch(destination.ip, {_q(r.sample(CIDRS, 3))})] '
                f'[file where event.action == "creation" and file.extension in ({_q(r.sample(EXTS, 4))})]'), True

    def until_end(i):
        return (f'sequence by process.entity_id with maxspan={span()} '
                f'[process where event.action == "exec" and process.name in ({_q(dl + r.sample(TOOLS, 4))})] '
                f'[file where event.action == "creation" and file.path : ({_q(r.sample(FILE_DIRS, 3))})] '
                f'until [process where event.action == "end"]'), True

    templates = [exec_net, drop_exec, web_recon, cmd_file, regex_net, download_chmod_exec, cidr_file, exec_net,
                 drop_exec, until_end]
    out = []
    for i in range(n):
        t = templates[i % len(templates)]
        q, compare = t(i)
        out.append(_rule(f"f{i}.{t.__name__}", q, compare=compare,
                         note="" if compare else "regex: eql anchors at the start only"))
    return out


SCENARIOS = {
    "a": ("one single-event rule", scenario_a),
    "b": ("100 single-event rules", scenario_b),
    "c": ("one 3-step sequence", scenario_c),
    "d": ("50 sequence rules", scenario_d),
    "e": ("1,000 single-event rules, published style", scenario_e),
    "f": ("200 sequence rules, published style", scenario_f),
}
