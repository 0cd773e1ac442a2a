"""The compile helper: a short-lived process that compiles BPF C with bcc
and writes :class:`~.objects.Objects` as JSON (objects.py says why).  The
one module of this package that loads libbcc; the agent runs it as a
subprocess (:func:`.objects.compile_in_helper`) and never imports it.
"""

from __future__ import annotations

import ctypes
import logging
import os
import sys
import time
from pathlib import Path

from . import bpfsys, program
from .objects import MapSpec, Objects, ProgSpec, _write_atomically, cache_path, read_cached


def build(key: str, source: Path, cflags: list[str], tracepoints_only: bool = True) -> Objects:
    """Compile ``source`` with bcc (in this process: the helper) and describe
    its programs and maps.  bcc's maps are created and closed here; no
    program is loaded."""
    
    started = time.monotonic()
    program.import_bcc()
    from bcc.libbcc import lib  # noqa: PLC0415 - the helper is the one process that loads bcc

    text = source.read_bytes()
    flags = (ctypes.c_char_p * len(cflags))(*[f.encode() for f in cflags])
    module = lib.bpf_module_create_c_from_string(text, 0, flags, len(cflags), True, None)
    if not module:
        raise RuntimeError(f"bcc failed to compile {source}")
    try:
        license = (lib.bpf_module_license(module) or b"GPL").decode()
        kern_version = int(lib.bpf_module_kern_version(module))
        maps: list[MapSpec] = []
        by_fd: dict[int, int] = {}
        programs = []
        for i in range(lib.bpf_num_functions(module)):
            name = lib.bpf_function_name(module, i)
            start, size = lib.bpf_function_start(module, name), lib.bpf_function_size(module, name)
            insns = ctypes.string_at(start, size)
            relocs = []
            for index, fd in bpfsys.map_fd_relocations(insns):
                if fd not in by_fd:
                    info = bpfsys.map_info(fd)
                    by_fd[fd] = len(maps)
                    maps.append(MapSpec(info.name.decode(), info.type, info.key_size, info.value_size,
                                        info.max_entries, info.map_flags))
                relocs.append((index, by_fd[fd]))
            programs.append(ProgSpec(name.decode(), insns, relocs))
            if tracepoints_only:
                programs[-1].prog_type  # noqa: B018 - raises for a kind of program the agent cannot attach
    finally:
        lib.bpf_module_destroy(module)
    return Objects(key, license, kern_version, maps, programs, round(time.monotonic() - started, 3))


def main(argv: list[str] | None = None) -> int:
    """The helper: ``python -m kestrel_sources_ebpf.helper --key K --source F --out P [...]``
    (``python -m kestrel_sources_ebpf.objects`` runs this too)."""
    import argparse

    from .btf import offset_defines
    from .program import FMODE_CREATED, HEADERS, SOURCE, objects_key, tracing_events

    ap = argparse.ArgumentParser(prog="kestrel_sources_ebpf.objects", description=main.__doc__)
    ap.add_argument("--prewarm", action="store_true",
                    help="compile the source's programs into the cache unless they are there (install time, "
                         "ExecStartPre): the agent's next start loads them without compiling")
    ap.add_argument("--key")
    ap.add_argument("--source", type=Path)
    ap.add_argument("--out", type=Path)
    ap.add_argument("--ringbuf-pages", type=int, default=512)
    ap.add_argument("--modules", action="store_true")
    ap.add_argument("--cflag", action="append", default=[])
    ap.add_argument("--plain", action="store_true",
                    help="another plugin's source: compile with the --cflag flags only, programs of any type")
    args = ap.parse_args(argv)
    events = tracing_events()
    if events is None:  # bcc reads the tracepoint formats from tracefs
        print("no tracefs: mount -t tracefs nodev /sys/kernel/tracing (as root)", file=sys.stderr)
        return 2
    if args.prewarm:
        modules = (events / "syscalls" / "sys_enter_finit_module").is_dir()
        key = objects_key(args.ringbuf_pages, modules)
        if read_cached(key) is not None:
            print(f"kestrel ebpf objects: cached ({cache_path(key)})")
            return 0
        args.key, args.source, args.out, args.modules = key, SOURCE, cache_path(key), modules
    elif not (args.key and args.source and args.out):
        ap.error("--key, --source and --out are required (or --prewarm)")
    if HEADERS.is_dir():
        os.environ.setdefault("BCC_KERNEL_SOURCE", str(HEADERS))
    if args.plain:
        objs = build(args.key, args.source, args.cflag, tracepoints_only=False)
        _write_atomically(args.out, objs.dumps())
        return 0
    cflags = offset_defines() + [f"-DRINGBUF_PAGES={args.ringbuf_pages}", f"-DFMODE_CREATED_={FMODE_CREATED}",
                                 "-Wno-macro-redefined", "-Wno-unused-function"] + args.cflag
    if args.modules:
        cflags.append("-DHAVE_MODULE_SYSCALLS")
    objs = build(args.key, args.source, cflags)
    _write_atomically(args.out, objs.dumps())
    if args.prewarm:
        print(f"kestrel ebpf objects: compiled in {objs.compile_s:.1f} s ({args.out})")
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    sys.exit(main())
