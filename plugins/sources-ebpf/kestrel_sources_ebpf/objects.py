"""Compiled BPF objects: built once per kernel in a short-lived helper
process, cached on disk, loaded by the agent with plain bpf(2) calls.

bcc compiles in-process with LLVM and clang, which stay mapped for the life
of the process (~85 MB of the agent's ~180 MB) and each start recompiled
(~3 s).  Here the compiler runs in ``python -m kestrel_sources_ebpf.objects``
(the helper, helper.py): bcc compiles the C source and creates its maps, the helper
copies each program's instructions out (bcc's ``bpf_function_start``), notes
which instructions load a map by fd and describes each map
(``BPF_OBJ_GET_INFO_BY_FD``), writes that as one JSON file and exits,
without loading a program.  The agent creates the maps itself, writes their
fds into those instructions, loads and attaches the programs
(:mod:`.bpfsys`): no bcc, no LLVM in the agent, and a restart on the same
kernel loads the cached file without compiling.

Other plugins use the same helper for their own C sources (``--plain``: only
the given cflags, and programs of any type, which the caller loads with the
``program_types`` of :class:`Loaded`): actions-enforce does.

The cache key covers everything the bytes depend on: the C source, the
compile settings, the kernel release and build and a hash of its BTF (the
struct offsets come from it), and bcc's version.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import bpfsys

log = logging.getLogger("kestrel.ebpf")

FORMAT = 1
CACHE_DIR = Path(os.environ.get("KESTREL_EBPF_CACHE", "/var/cache/kestrel/ebpf"))
BTF_PATH = Path("/sys/kernel/btf/vmlinux")
HELPER_TIMEOUT_S = 180
PROG_TYPES = {"tracepoint__": bpfsys.BPF_PROG_TYPE_TRACEPOINT, "raw_tracepoint__": bpfsys.BPF_PROG_TYPE_RAW_TRACEPOINT}


def _bcc_version() -> str:
    """bcc's version, read without importing it (the agent never loads libbcc)."""
    from kestrel_core.host import SYSTEM_DIST_PACKAGES

    for base in [Path(p) for p in sys.path if p] + [SYSTEM_DIST_PACKAGES]:
        try:
            return (base / "bcc" / "version.py").read_text(encoding="utf-8").strip()
        except OSError:
            continue
    return "bcc version unknown"


def cache_key(source: Path, settings: dict[str, Any]) -> str:
    """What the compiled bytes depend on, hashed (sha256, hex)."""
    h = hashlib.sha256()
    h.update(f"format {FORMAT}\n".encode())
    h.update(source.read_bytes())
    h.update(json.dumps(settings, sort_keys=True).encode())
    uname = os.uname()
    h.update(f"{uname.release}\n{uname.version}\n{uname.machine}\n".encode())
    with open(BTF_PATH, "rb") as fh:
        h.update(hashlib.file_digest(fh, "sha256").digest())
    h.update(_bcc_version().encode())
    return h.hexdigest()


@dataclass
class MapSpec:
    name: str
    type: int
    key_size: int
    value_size: int
    max_entries: int
    flags: int


@dataclass
class ProgSpec:
    name: str
    insns: bytes
    relocs: list[tuple[int, int]]
    """(instruction index, index into ``Objects.maps``)."""

    @property
    def prog_type(self) -> int:
        for prefix, kind in PROG_TYPES.items():
            if self.name.startswith(prefix):
                return kind
        raise ValueError(f"program {self.name}: not a tracepoint or raw tracepoint program")

    @property
    def attach_point(self) -> str:
        """``category:event`` of a tracepoint, the name of a raw tracepoint."""
        if self.name.startswith("raw_tracepoint__"):
            return self.name[len("raw_tracepoint__"):]
        return self.name[len("tracepoint__"):].replace("__", ":", 1)


@dataclass
class Objects:
    key: str
    license: str
    kern_version: int
    maps: list[MapSpec]
    programs: list[ProgSpec]
    compile_s: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    def dumps(self) -> str:
        return json.dumps({
            "format": FORMAT, "key": self.key, "license": self.license, "kern_version": self.kern_version,
            "compile_s": self.compile_s, "extra": self.extra, "maps": [m.__dict__ for m in self.maps],
            "programs": [{"name": p.name, "insns": base64.b64encode(p.insns).decode(), "relocs": p.relocs}
                         for p in self.programs]})

    @classmethod
    def loads(cls, text: str, where: str) -> Objects:
        try:
            d = json.loads(text)
            if d.get("format") != FORMAT:
                raise ValueError(f"format {d.get('format')!r}, expected {FORMAT}")
            return cls(d["key"], d["license"], int(d["kern_version"]), [MapSpec(**m) for m in d["maps"]],
                       [ProgSpec(p["name"], base64.b64decode(p["insns"]), [tuple(r) for r in p["relocs"]])
                        for p in d["programs"]], float(d.get("compile_s", 0.0)), d.get("extra", {}))
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"{where}: not a compiled-objects file ({type(exc).__name__}: {exc})") from None


def cache_path(key: str, stem: str = "probes") -> Path:
    return CACHE_DIR / f"{stem}-{key[:32]}.json"


def read_cached(key: str, stem: str = "probes") -> Objects | None:
    """The cached objects for ``key``, or None (absent; a damaged file is logged and ignored)."""
    path = cache_path(key, stem)
    try:
        with open(path, encoding="utf-8") as fh:
            st = os.fstat(fh.fileno())
            # The file becomes kernel code: only one written by this user, and
            # writable by nobody else, is loaded.
            if st.st_uid != os.geteuid() or st.st_mode & 0o022:
                log.warning("ebpf: %s is not owned by uid %d or is writable by others (mode %o): not loading it; "
                            "recompiling", path, os.geteuid(), st.st_mode & 0o777)
                return None
            text = fh.read()
    except FileNotFoundError:
        return None
    except OSError as exc:
        log.warning("ebpf: cannot read the compiled-object cache %s: %s", path, exc)
        return None
    try:
        objs = Objects.loads(text, str(path))
    except ValueError as exc:
        log.warning("ebpf: %s; recompiling", exc)
        return None
    if objs.key != key:
        log.warning("ebpf: %s holds objects for another key; recompiling", path)
        return None
    return objs


def compile_in_helper(key: str, source: Path, cflags: list[str] | None = None, ringbuf_pages: int = 512,
                      modules: bool = False, stem: str = "probes", plain: bool = False) -> Objects:
    """Run the helper process: it compiles with bcc and writes the cache file.
    ``plain``: compile with ``cflags`` alone (another plugin's source).
    Raises RuntimeError with the helper's own words when it fails."""
    path = cache_path(key, stem)
    cmd = [sys.executable, "-m", "kestrel_sources_ebpf.helper", "--key", key, "--source", str(source),
           "--out", str(path), "--ringbuf-pages", str(ringbuf_pages)] + (["--modules"] if modules else [])
    if plain:
        cmd.append("--plain")
    for flag in cflags or []:
        cmd += ["--cflag", flag]
    env = dict(os.environ)
    try:
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=HELPER_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"the compile helper did not finish in {HELPER_TIMEOUT_S} s") from None
    if done.returncode != 0:
        said = (done.stderr or done.stdout).strip().splitlines()[-6:]
        raise RuntimeError(f"the compile helper failed (exit {done.returncode}): {' | '.join(said)}")
    objs = read_cached(key, stem)
    if objs is None:
        raise RuntimeError(f"the compile helper exited 0 but {path} is missing or unreadable")
    return objs


def _write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name, suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class Loaded:
    """Maps created, programs loaded and attached from :class:`Objects`; every
    fd is held here and closed by :meth:`close` (which detaches).

    ``program_types``: name -> (program type, expected attach type) of
    programs that are loaded but not attached here (their fds are in
    ``prog_fds``; the caller attaches them, e.g. to cgroups with
    :func:`.bpfsys.link_create`); the others are tracepoint programs, named
    as bcc names them, and attached."""

    def __init__(self, objs: Objects, tracing_events: Path | None,
                 program_types: dict[str, tuple[int, int]] | None = None) -> None:
        self.map_fds: dict[str, int] = {}
        self.map_specs: dict[str, MapSpec] = {}
        self.prog_fds: dict[str, int] = {}
        self._fds: list[int] = []
        program_types = program_types or {}
        try:
            fds = []
            for spec in objs.maps:
                fd = bpfsys.map_create(spec.type, spec.key_size, spec.value_size, spec.max_entries, spec.flags,
                                       spec.name)
                self._fds.append(fd)
                fds.append(fd)
                self.map_fds[spec.name], self.map_specs[spec.name] = fd, spec
            for prog in objs.programs:
                insns = bytearray(prog.insns)
                for index, m in prog.relocs:
                    insns[index * 8 + 4:index * 8 + 8] = fds[m].to_bytes(4, "little", signed=True)
                if prog.name in program_types:
                    kind, expected = program_types[prog.name]
                    prog_fd = bpfsys.prog_load(kind, bytes(insns), objs.license, objs.kern_version, prog.name,
                                               expected)
                    self._fds.append(prog_fd)
                    self.prog_fds[prog.name] = prog_fd
                    continue
                prog_fd = bpfsys.prog_load(prog.prog_type, bytes(insns), objs.license, objs.kern_version,
                                           prog.name)
                self._fds.append(prog_fd)
                self.prog_fds[prog.name] = prog_fd
                point = prog.attach_point
                if prog.prog_type == bpfsys.BPF_PROG_TYPE_RAW_TRACEPOINT:
                    self._fds.append(bpfsys.raw_tracepoint_open(point, prog_fd))
                elif tracing_events is None:
                    raise RuntimeError(f"program {prog.name}: no tracefs to attach it")
                else:
                    category, _, event = point.partition(":")
                    tp_id = int((tracing_events / category / event / "id").read_text())
                    self._fds.append(bpfsys.attach_tracepoint(tp_id, prog_fd, point))
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        # Attachments were opened after their programs: close newest first.
        while self._fds:
            os.close(self._fds.pop())
        self.map_fds.clear()
        self.prog_fds.clear()


if __name__ == "__main__":  # the documented entry point (systemd ExecStartPre); the helper's code is in helper.py
    import runpy

    runpy.run_module("kestrel_sources_ebpf.helper", run_name="__main__", alter_sys=True)
