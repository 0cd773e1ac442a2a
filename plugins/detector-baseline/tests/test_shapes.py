"""What the baseline learns is a shape: throwaway values generalised, the rest kept."""

from __future__ import annotations

import pytest

from kestrel_detector_baseline.detector import parse_duration
from kestrel_detector_baseline.shapes import args_shape, path_prefix, peer_key


@pytest.mark.parametrize("args, shape", [
    (["nginx", "-g", "daemon off;"], "-g daemon off;"),
    (["sleep", "30"], "<n>"),
    (["kill", "-9", "4242"], "-<n> <n>"),
    (["curl", "--retry=3", "http://10.1.2.3:8080/x"], "--retry=<n> http://<ip>:<n>/x"),
    (["docker", "logs", "3f4e5a6b7c8d9e0f1a2b"], "logs <hex>"),
    (["docker", "run", "123e4567-e89b-12d3-a456-426614174000"], "run <hex>"),
    (["python3", "/tmp/pip-build-x81/setup.py", "install"], "/tmp/* install"),
    (["cp", "/dev/shm/a", "/var/tmp"], "/dev/shm/* /var/tmp"),
    (["ls"], ""),
    ([], ""),
    (["echo", "deadbeef"], "deadbeef"),  # a word of hex letters only is kept
])
def test_args_shapes(args, shape):
    assert args_shape(args) == shape


def test_long_and_many_arguments_are_cut():
    assert args_shape(["x", "a" * 100]).endswith("…") and len(args_shape(["x", "a" * 100])) == 49
    assert args_shape(["x"] + ["-v"] * 20) == " ".join(["-v"] * 16) + " +4"


@pytest.mark.parametrize("path, depth, prefix", [
    ("/var/log/nginx/access.log", 3, "/var/log/nginx"),
    ("/var/log/nginx/access.log", 2, "/var/log"),
    ("/etc/shadow", 3, "/etc"),
    ("/tmp/tmp.Qx81Tb/kworkerd", 3, "/tmp/*"),
    ("/tmp/x", 3, "/tmp"),  # directly in /tmp; in a directory under it: /tmp/*
    ("/dev/shm/payload", 3, "/dev/shm"),
    ("/proc/4242/status", 3, "/proc/<n>"),
    ("/usr/lib/python3.11/site-packages/x/y.py", 3, "/usr/lib/python<n>.<n>"),
    ("/init", 3, "/"),
    ("relative/dir/file", 3, "./relative/dir"),
])
def test_path_prefixes(path, depth, prefix):
    assert path_prefix(path, depth) == prefix


@pytest.mark.parametrize("ip, port, v4, v6, with_port, key", [
    ("203.0.113.45", 443, 32, 128, True, "203.0.113.45:443"),
    ("203.0.113.45", 443, 24, 128, True, "203.0.113.0/24:443"),
    ("203.0.113.45", 443, 32, 128, False, "203.0.113.45"),
    ("2001:db8::1", 53, 32, 128, True, "[2001:db8::1]:53"),
    ("2001:db8::1", 53, 32, 64, True, "[2001:db8::/64]:53"),
    ("not-an-ip", None, 32, 128, True, "not-an-ip"),
])
def test_peer_keys(ip, port, v4, v6, with_port, key):
    assert peer_key(ip, port, v4, v6, with_port) == key


@pytest.mark.parametrize("text, ns", [("90s", 90 * 10**9), ("10m", 600 * 10**9), ("2h", 7200 * 10**9),
                                      ("1d", 86400 * 10**9), ("500ms", 5 * 10**8), ("15", 15 * 10**9), ("", 0)])
def test_durations(text, ns):
    assert parse_duration(text) == ns


def test_bad_duration_says_what_is_accepted():
    with pytest.raises(ValueError, match="warmup must be a duration"):
        parse_duration("two hours")
