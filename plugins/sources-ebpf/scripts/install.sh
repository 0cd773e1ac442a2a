#!/usr/bin/env bash
# Install what sources-ebpf needs on Debian (PLATFORM.md recipe), idempotently:
#   1. bcc from apt (python3-bpfcc: pure-Python ctypes bindings over libbcc),
#   2. Debian's kernel headers, with the split -common/-amd64 trees merged into
#      one directory bcc can compile against (BCC_KERNEL_SOURCE),
#   3. the tracepoint programs compiled into the object cache (/var/cache/kestrel/ebpf),
#      so the agent's first start loads them without compiling.
# Usage: install.sh [VENV]   (default: the repository's .venv)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
venv=${1:-$(cd "$here/../../.." && pwd)/.venv}
merged=/var/lib/kestrel/kernel-headers

if [ "$(id -u)" != 0 ]; then
    echo "sources-ebpf install: skipped (not root: apt packages and header merge need root)"; exit 0
fi
if ! command -v apt-get >/dev/null; then
    echo "sources-ebpf install: skipped (no apt-get: install bcc and kernel headers by hand, see plugins/sources-ebpf/README.md)"; exit 0
fi
need=()
[ -d /usr/lib/python3/dist-packages/bcc ] || need+=(python3-bpfcc libbpfcc bpfcc-tools)
ls -d /usr/src/linux-headers-*-common >/dev/null 2>&1 || need+=(linux-headers-amd64)
# setcap/capsh: the kernel tests give a binary file capabilities and check what the source reports.
command -v setcap >/dev/null || need+=(libcap2-bin)
if [ ${#need[@]} -gt 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}"
fi
# Newest Debian header version present, e.g. 6.1.0-50.
common=$(ls -d /usr/src/linux-headers-*-common | sort -V | tail -1)
ver=${common#/usr/src/linux-headers-}; ver=${ver%-common}
arch=/usr/src/linux-headers-$ver-amd64
if [ ! -f "$merged/.version" ] || [ "$(cat "$merged/.version")" != "$ver" ]; then
    rm -rf "$merged.tmp"
    mkdir -p "$(dirname "$merged")"
    cp -as "$common" "$merged.tmp"
    cp -asf "$arch/." "$merged.tmp/"
    echo "$ver" > "$merged.tmp/.version"
    rm -rf "$merged"; mv "$merged.tmp" "$merged"
fi
# No .pth into the venv: the plugin finds Debian's bcc in the system's
# dist-packages itself (kestrel_core.host.import_system_module), so a plain
# pip install into any venv works.  Remove the one earlier versions wrote.
if [ -x "$venv/bin/python" ]; then
    site=$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
    rm -f "$site/kestrel_bcc.pth"; rm -rf "$venv/kestrel-bcc"
fi
# Compile the tracepoint programs once now (in a helper process, as the agent
# would on its first start) so that start loads them from the cache in well
# under a second; a new kernel or source changes the key and the agent
# compiles again by itself.  A failure here is not fatal: it will say why.
if [ -x "$venv/bin/python" ] && "$venv/bin/python" -c 'import kestrel_sources_ebpf' 2>/dev/null; then
    "$venv/bin/python" -m kestrel_sources_ebpf.objects --prewarm \
        || echo "sources-ebpf install: could not pre-compile the programs; the agent compiles them on its first start"
fi
echo "sources-ebpf install: ok (bcc $(dpkg-query -W -f='${Version}' python3-bpfcc); Debian's $ver kernel headers merged in $merged)"
echo "sources-ebpf install: the $ver headers are only for compiling; struct offsets come from the running kernel's BTF (/sys/kernel/btf/vmlinux, $(uname -r)), so the versions need not match"
