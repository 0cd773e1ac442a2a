"""Falco alert -> ECS record, field by field.

The alerts follow Falco's json_output format (falcosecurity/falco
``userspace/engine/formats.cpp``) and the output fields of Falco's own rules
(falcosecurity/rules ``rules/falco_rules.yaml``); see
``kestrel_sources_falco.testing`` for exactly what each part is based on.
"""

from __future__ import annotations

import pytest

from kestrel_core.normalize import EcsJsonNormalizer
from kestrel_core.runtime import RunContext
from kestrel_core.schema import Schema
from kestrel_sources_falco import plugin
from kestrel_sources_falco.mapping import FalcoFormatError, entity_id, to_ecs
from kestrel_sources_falco.testing import T0_NS, alert, iso, story


def fields_of(rule: str, fields: dict, **kw) -> dict:
    return to_ecs(alert(rule, "Notice", "m", fields, T0_NS, **kw))


def test_top_level_values_go_to_falco_fields_and_the_time_to_timestamp():
    rec = fields_of("Terminal shell in container", {"evt.type": "execve", "proc.name": "bash"},
                    tags=("container", "shell"))
    assert rec["@timestamp"] == T0_NS  # the ISO 8601 'time', to the nanosecond
    assert iso(T0_NS + 123).endswith(".000000123Z")
    assert to_ecs(alert("r", "Notice", "m", {}, T0_NS + 123))["@timestamp"] == T0_NS + 123
    assert rec["falco.rule"] == "Terminal shell in container"
    assert rec["falco.priority"] == "Notice" and rec["event.severity"] == 5
    assert rec["falco.tags"] == ["container", "shell"] and rec["falco.source"] == "syscall"
    assert rec["falco.output"].startswith("17:20:00.000000000: Notice m | ")
    assert rec["host.name"] == "web-1" and rec["host.os.type"] == "linux"
    assert rec["event.module"] == "falco" and rec["event.kind"] == "alert"


def test_exec_from_a_default_rule_derives_args_from_the_command_line():
    rec = fields_of("Run shell untrusted", {
        "evt.type": "execve", "proc.name": "sh", "proc.exepath": "/usr/bin/dash", "proc.cmdline": "sh -c id",
        "proc.pname": "nginx", "proc.pexepath": "/usr/sbin/nginx", "proc.pcmdline": "nginx -g daemon off;",
        "user.name": "www-data", "user.uid": 33, "user.loginuid": 4294967295, "proc.tty": 0})
    assert rec["event.category"] == ["process"] and rec["event.type"] == ["start"] and rec["event.action"] == "exec"
    assert rec["process.name"] == "sh" and rec["process.executable"] == "/usr/bin/dash"
    assert rec["process.args"] == ["/usr/bin/dash", "-c", "id"] and rec["process.args_count"] == 3
    assert rec["process.parent.name"] == "nginx" and rec["process.parent.args"] == ["/usr/sbin/nginx", "-g",
                                                                                   "daemon", "off;"]
    assert rec["user.id"] == "33" and rec["user.name"] == "www-data" and rec["falco.user.loginuid"] == -1
    assert rec["process.interactive"] is False
    assert "process.pid" not in rec and "process.entity_id" not in rec  # the default outputs name no pid


def test_exec_with_pids_argv0_and_a_tty():
    rec = fields_of("Kestrel process exec", {
        "evt.type": "execve", "evt.res": "SUCCESS", "proc.name": "pkexec", "proc.exe": "", "proc.args": "",
        "proc.exepath": "/usr/bin/pkexec", "proc.pid": 4242, "proc.ppid": 4000, "proc.tty": 34816,
        "proc.cwd": "/tmp/", "group.gid": 1000})
    assert rec["process.args"] == [] and rec["process.args_count"] == 0  # empty argv (CVE-2021-4034)
    assert rec["process.pid"] == 4242 and rec["process.entity_id"] == entity_id("web-1", 4242)
    assert rec["process.parent.pid"] == 4000 and rec["process.parent.entity_id"] == entity_id("web-1", 4000)
    assert rec["process.interactive"] is True
    assert (rec["process.tty.char_device.major"], rec["process.tty.char_device.minor"]) == (136, 0)  # /dev/pts/0
    assert rec["process.working_directory"] == "/tmp" and rec["group.id"] == "1000"
    assert rec["event.outcome"] == "success" and rec["falco.evt.res"] == "SUCCESS"


@pytest.mark.parametrize("flags, action, etype", [
    ("O_RDONLY|O_CLOEXEC", "open", "access"),
    ("O_TRUNC|O_CREAT|O_WRONLY|O_CLOEXEC", "open_write", "change"),
    ("O_RDWR", "open_write", "change"),
    ("O_TRUNC|O_CREAT|O_WRONLY|O_CLOEXEC|O_F_CREATED", "creation", "creation"),
])
def test_open_direction_from_the_flags(flags, action, etype):
    rec = fields_of("Kestrel file open", {"evt.type": "openat", "fd.name": "/etc/cron.d/job.sh", "fd.type": "file",
                                          "evt.arg.flags": flags})
    assert (rec["event.action"], rec["event.type"]) == (action, [etype])
    assert rec["file.path"] == "/etc/cron.d/job.sh" and rec["file.name"] == "job.sh"
    assert rec["file.directory"] == "/etc/cron.d" and rec["file.extension"] == "sh"


def test_open_direction_from_the_rule_when_the_output_has_no_flags():
    base = {"evt.type": "openat", "fd.name": "/etc/sudoers"}
    assert fields_of("Write below etc", base)["event.action"] == "open_write"
    assert fields_of("Read sensitive file untrusted", base)["event.action"] == "open"
    assert fields_of("Write below etc", {**base, "evt.is_open_write": False, "evt.is_open_read": True}
                     )["event.action"] == "open"
    # a user's rule: unknown direction keeps the syscall's name, so no read or write rule can match it
    assert fields_of("My open rule", base)["event.action"] == "openat"
    rec = to_ecs(alert("My open rule", "Notice", "m", base, T0_NS), {"My open rule": "open_write"})
    assert rec["event.action"] == "open_write"


def test_relative_paths_rename_chmod_chown_and_delete():
    rec = fields_of("Kestrel file change", {"evt.type": "renameat2", "evt.arg.oldpath": "x.ko(/tmp/x.ko)",
                                            "evt.arg.newpath": "/tmp/.hidden/x.ko"})
    assert rec["event.action"] == "rename" and rec["file.path"] == "/tmp/.hidden/x.ko"
    assert rec["file.Ext.original.path"] == "/tmp/x.ko" and rec["file.Ext.original.extension"] == "ko"
    rec = fields_of("Set Setuid or Setgid bit", {"evt.type": "fchmodat", "evt.arg.filename": "/tmp/sh",
                                                 "evt.arg.mode": "S_IXOTH|S_IROTH|S_IXUSR|S_IWUSR|S_IRUSR|S_ISUID"})
    assert rec["event.action"] == "chmod" and rec["file.mode"] == "4705" and rec["file.path"] == "/tmp/sh"
    assert fields_of("r", {"evt.type": "chmod", "evt.arg.filename": "/tmp/a", "evt.arg.mode": "0755"})["file.mode"] == "755"
    assert fields_of("r", {"evt.type": "fchmod", "fd.name": "/tmp/a", "evt.arg.mode": "S_IRUSR(0400)"})["file.mode"] == "400"
    rec = fields_of("r", {"evt.type": "fchownat", "evt.arg.filename": "/etc/passwd", "evt.arg.uid": 1000})
    assert rec["event.action"] == "chown" and rec["file.owner"] == "1000"
    rec = fields_of("Delete or rename shell history", {"evt.type": "unlinkat", "fd.name": "/root",
                                                       "evt.arg.name": "/root/.bash_history", "evt.arg.path": None})
    assert rec["event.action"] == "deletion" and rec["file.path"] == "/root/.bash_history"


def test_connect_and_accept_put_the_client_in_source_and_the_server_in_destination():
    net = {"fd.name": "10.0.0.5:51000->203.0.113.5:443", "fd.l4proto": "tcp", "fd.type": "ipv4"}
    rec = fields_of("Kestrel network connection", {"evt.type": "connect", "evt.res": "EINPROGRESS", **net})
    assert rec["event.category"] == ["network"] and rec["event.type"] == ["connection", "start"]
    assert rec["event.action"] == "connection_attempted" and rec["network.direction"] == "egress"
    assert (rec["source.ip"], rec["source.port"]) == ("10.0.0.5", 51000)
    assert (rec["destination.ip"], rec["destination.port"]) == ("203.0.113.5", 443)
    assert rec["network.transport"] == "tcp" and rec["network.type"] == "ipv4"
    assert rec["event.outcome"] == "unknown"  # EINPROGRESS: Falco's rules count it as an attempt
    assert fields_of("r", {"evt.type": "connect", "evt.res": "ECONNREFUSED", **net})["event.outcome"] == "failure"
    rec = fields_of("Unexpected inbound connection source", {
        "evt.type": "accept4", "fd.cip": "2001:db8::7", "fd.cport": 40000, "fd.sip": "2001:db8::1",
        "fd.sport": 22, "fd.type": "ipv6"})
    assert rec["event.action"] == "connection_accepted" and rec["network.direction"] == "ingress"
    assert (rec["source.ip"], rec["destination.port"]) == ("2001:db8::7", 22)


def test_container_and_kubernetes_fields():
    rec = fields_of("Terminal shell in container", {
        "evt.type": "execve", "container.id": "3ad7b26ded6d", "container.name": "api",
        "container.image.repository": "registry.example.com/api", "container.image.tag": "1.4",
        "k8s.ns.name": "shop", "k8s.pod.name": "api-7c9d8"})
    assert rec["container.id"] == "3ad7b26ded6d" and rec["container.name"] == "api"
    assert rec["container.image.name"] == "registry.example.com/api" and rec["container.image.tag"] == ["1.4"]
    assert rec["orchestrator.namespace"] == "shop" and rec["orchestrator.resource.name"] == "api-7c9d8"
    host = fields_of("r", {"evt.type": "execve", "container.id": "host", "container.name": "host"})
    assert "container.id" not in host and "container.name" not in host  # Falco's id of a host process


def test_other_kinds_and_unknown_syscalls():
    kinds = {t: fields_of("r", {"evt.type": t, "evt.arg.pid": 1, "evt.arg.uid": 0, "evt.arg.name": "x"})
             for t in ("ptrace", "setuid", "memfd_create", "finit_module", "procexit", "mkdirat")}
    assert kinds["ptrace"]["event.action"] == "ptrace" and kinds["ptrace"]["target.process.pid"] == 1
    assert kinds["setuid"]["event.action"] == "uid_change" and kinds["setuid"]["user.target.id"] == "0"
    assert kinds["memfd_create"]["file.name"] == "x"
    assert kinds["finit_module"]["event.category"] == ["driver"]
    assert kinds["finit_module"]["event.action"] == "load_module"
    assert kinds["procexit"]["event.action"] == "end"
    assert kinds["mkdirat"]["event.action"] == "mkdirat" and kinds["mkdirat"]["event.type"] == ["info"]
    bare = fields_of("r", {"proc.name": "sh"})  # an output that names no evt.type
    assert bare["event.category"] == ["process"] and "event.action" not in bare
    plugin_src = to_ecs(alert("Create Disallowed Pod", "Notice", "m", {"ka.user.name": "bob"}, T0_NS,
                              source="k8s_audit"))
    assert plugin_src["event.category"] == ["k8s_audit"] and "host.os.type" not in plugin_src


@pytest.mark.parametrize("doc, message", [
    ([1, 2], "expected a JSON object"),
    ({"time": "2026-07-25T17:20:00.000000000Z"}, "missing 'rule'"),
    ({"rule": "r"}, "missing 'time'"),
    ({"rule": "r", "time": "yesterday"}, "'time': timestamp 'yesterday' is not ISO 8601"),
    ({"rule": "r", "time": "2026-07-25T17:20:00Z", "output_fields": []}, "'output_fields' must be an object"),
    ({"rule": "r", "time": "2026-07-25T17:20:00Z", "output_fields": {"proc.pid": "12a"}},
     "output_fields['proc.pid']: expected an integer, got '12a'"),
    ({"rule": "r", "time": "2026-07-25T17:20:00Z", "output_fields": {"evt.type": "connect", "fd.sip": "1.2.3"}},
     "output_fields['fd.sip']: '1.2.3' is not an IP address"),
])
def test_malformed_alerts_name_the_problem(doc, message):
    with pytest.raises(FalcoFormatError) as err:
        to_ecs(doc)
    assert str(err.value).startswith(message), err.value


def test_time_from_output_fields_when_the_top_level_time_is_absent():
    doc = alert("r", "Notice", "m", {}, T0_NS + 5)
    del doc["time"]
    assert to_ecs(doc)["@timestamp"] == T0_NS + 5


def test_every_story_record_normalizes_with_the_declared_types():
    """The records are what the ecs-json normalizer accepts, typed as declared (no field left as 'any')."""
    schema = Schema.ecs()
    plugin.kestrel_declare_fields(schema)
    context = RunContext(schema=schema)
    norm = EcsJsonNormalizer(EcsJsonNormalizer.Settings(), context)
    for doc in story():
        rec = to_ecs(doc)
        event = norm.normalize(rec, "falco")
        assert event.ts_wall_ns == rec["@timestamp"]
        for path in rec:
            assert schema.get(path).declared, path
