// Kestrel sources-ebpf: tracepoint programs (compiled by bcc at load time).
//
// Struct members are read through byte offsets from the running kernel's BTF
// (OFF_* macros, passed with -D by btf.py): the Debian 6.1 headers bcc
// compiles against have the wrong layouts for this kernel.
//
// Syscalls are paired: sys_enter_* fills a record in `pending` (keyed by
// thread id), sys_exit_* adds the return value and sends it, so user space
// sees the outcome and the created-file bit of open.  Which kinds are sent,
// and which path prefixes pass, is decided by maps user space rewrites when
// the rules change (no reload).  A full ring buffer is never silent: every
// failed output is counted per CPU in `lost`.

#include <uapi/linux/ptrace.h>

#define K_EXEC 1
#define K_FORK 2
#define K_EXIT 3
#define K_OPEN_READ 4
#define K_OPEN_WRITE 5
#define K_OPEN_CREATE 6
#define K_UNLINK 7
#define K_RENAME 8
#define K_CHMOD 9
#define K_CHOWN 10
#define K_CONNECT 11
#define K_ACCEPT 12
#define K_BIND 13
#define K_PTRACE 14
#define K_MEMFD 15
#define K_SETUID 16
#define K_SETGID 17
#define K_SETREUID 18
#define K_SETREGID 19
#define K_SETRESUID 20
#define K_SETRESGID 21
#define K_INIT_MODULE 22
#define K_FINIT_MODULE 23
#define K_MMAP_EXEC 24
#define K_MPROTECT_EXEC 25
#define K_CHDIR 26        // not an event: keeps user space's cwd of each process right
#define K_MAX 27

#define PATH_LEN 256
#define ARGS_LEN 1024
#define ENV_LEN 4096     // environment bytes copied at exec (user space keeps only allow-listed variables)
#define PFX_WORDS 4
#define MAX_PREFIXES 16

struct hdr {
    u64 ts;          // bpf_ktime_get_ns (CLOCK_MONOTONIC)
    u64 start;       // thread-group leader's start_boottime (ns)
    u64 pstart;      // parent's leader start_boottime
    u32 kind;
    u32 pid;         // tgid
    u32 tid;
    u32 ppid;
    u32 uid;
    u32 euid;
    u32 gid;
    s32 ret;
    char comm[16];
};

#define CGROUP_NAME_LEN 128

// Who a process is, read once per exec (later events take it from user
// space's process table): the credential set, session and process group,
// controlling tty, capabilities and the leaf of its cgroup2 path.
struct ident {
    u32 suid, egid, sgid, fsuid;
    u32 sid, pgid;
    u32 tty_major, tty_minor;   // 0, 0: no controlling tty
    u64 cap_eff, cap_prm;
    char cgroup[CGROUP_NAME_LEN];        // leaf name, e.g. docker-<id>.scope
    char cgroup_parent[CGROUP_NAME_LEN]; // its parent's name, e.g. docker (cgroupfs driver)
};

struct exec_ev {
    struct hdr h;
    u32 args_len;    // bytes of argv in the new image (may exceed ARGS_LEN)
    u32 pad;
    char filename[PATH_LEN];
    char args[ARGS_LEN];
    struct ident id;
    u32 env_len;     // bytes of the environment block (may exceed ENV_LEN)
    u32 pad2;
    char env[ENV_LEN];
};

struct ev {
    struct hdr h;
    u64 a0, a1, a2, a3;
    u8 daddr[16];
    u8 saddr[16];
    u16 family, dport, sport, socktype;
    s32 dfd, dfd2;
    char path[PATH_LEN];
    char path2[PATH_LEN];
};

struct prefix {
    u64 val[PFX_WORDS];   // lower-cased prefix bytes
    u64 mask[PFX_WORDS];  // 0xff where the prefix has a byte
    u64 fold[PFX_WORDS];  // 0x20 where the prefix byte is a letter (case-insensitive)
    u32 kinds;           // bit per kind this prefix admits
    u32 pad;
};

struct loss {
    u64 count;
    u64 first_ts;
    u64 last_ts;
};

BPF_RINGBUF_OUTPUT(events, RINGBUF_PAGES);
BPF_ARRAY(enabled, u32, K_MAX);
BPF_ARRAY(prefix_on, u32, K_MAX);      // 1: this kind's paths must match a prefix
BPF_ARRAY(prefixes, struct prefix, MAX_PREFIXES);
BPF_ARRAY(filtered, u64, K_MAX);       // records kept out of user space by a filter, per kind
BPF_PERCPU_ARRAY(lost, struct loss, 1);     // written by this side only
BPF_PERCPU_ARRAY(loss_ack, u64, 1);         // written by user space only: the count it has taken
BPF_PERCPU_ARRAY(scratch, struct ev, 1);
BPF_PERCPU_ARRAY(scratch_exec, struct exec_ev, 1);
// LRU: a thread killed inside a blocking syscall never reaches sys_exit; its
// record must not fill the map for good.
BPF_TABLE("lru_hash", u32, struct ev, pending, 16384);

static __always_inline u64 rd64(void *base, int off) {
    u64 v = 0;
    bpf_probe_read_kernel(&v, sizeof(v), (char *)base + off);
    return v;
}
static __always_inline u32 rd32(void *base, int off) {
    u32 v = 0;
    bpf_probe_read_kernel(&v, sizeof(v), (char *)base + off);
    return v;
}
static __always_inline u16 rd16(void *base, int off) {
    u16 v = 0;
    bpf_probe_read_kernel(&v, sizeof(v), (char *)base + off);
    return v;
}
static __always_inline void *rdp(void *base, int off) {
    return (void *)rd64(base, off);
}

static __always_inline int is_enabled(u32 kind) {
    u32 *on = enabled.lookup(&kind);
    return on && *on;
}

static __always_inline void count_filtered(u32 kind) {
    u64 *n = filtered.lookup(&kind);
    if (n)
        __sync_fetch_and_add(n, 1);
}

// User space never writes `lost` (a read-modify-write of the per-CPU value
// would overwrite increments made in between: lost records uncounted).  It
// writes the count it has taken to `loss_ack`; the first loss after that
// starts a new window.  The times are stored before the count, so a reader
// that sees a count also sees its times (x86 keeps stores in order).
static __always_inline void count_loss(u64 ts) {
    u32 zero = 0;
    struct loss *l = lost.lookup(&zero);
    if (!l)
        return;
    u64 *ack = loss_ack.lookup(&zero);
    if (l->count == (ack ? *ack : 0))
        l->first_ts = ts;
    l->last_ts = ts;
    l->count += 1;
}

static __always_inline void fill_hdr(struct hdr *h, void *task, u32 kind) {
    void *leader = rdp(task, OFF_TASK_GROUP_LEADER);
    void *parent = rdp(task, OFF_TASK_REAL_PARENT);
    void *pleader = rdp(parent, OFF_TASK_GROUP_LEADER);
    void *cred = rdp(task, OFF_TASK_CRED);
    h->ts = bpf_ktime_get_ns();
    h->kind = kind;
    h->pid = rd32(task, OFF_TASK_TGID);
    h->tid = rd32(task, OFF_TASK_PID);
    h->start = rd64(leader, OFF_TASK_START_BOOTTIME);
    h->ppid = rd32(parent, OFF_TASK_TGID);
    h->pstart = rd64(pleader, OFF_TASK_START_BOOTTIME);
    h->uid = rd32(cred, OFF_CRED_UID);
    h->euid = rd32(cred, OFF_CRED_EUID);
    h->gid = rd32(cred, OFF_CRED_GID);
    h->ret = 0;
    bpf_probe_read_kernel_str(h->comm, sizeof(h->comm), (char *)task + OFF_TASK_COMM);
}

static __always_inline void send(void *rec, u32 size, u64 ts) {
    if (events.ringbuf_output(rec, size, 0) != 0)
        count_loss(ts);
}

// ------------------------------------------------------------ path prefix filter

// 1 if `path` (in a map value, 8-byte aligned) may interest some rule for one of
// the kinds in `kinds`.  Relative paths always pass: only user space can
// resolve them against the process's cwd.
static __always_inline int path_passes(char *path, u32 kinds) {
    u32 need = 0;
    #pragma unroll
    for (u32 k = 1; k < K_MAX; k++) {
        if (kinds & (1u << k)) {
            u32 kk = k;
            u32 *on = prefix_on.lookup(&kk);
            if (!on || !*on)
                return 1;  // a kind without a prefix filter wants every path
            need = 1;
        }
    }
    if (!need || path[0] != '/')
        return 1;
    u64 *w = (u64 *)path;
    u64 w0 = w[0], w1 = w[1], w2 = w[2], w3 = w[3];
    #pragma unroll
    for (u32 i = 0; i < MAX_PREFIXES; i++) {
        u32 ii = i;
        struct prefix *p = prefixes.lookup(&ii);
        if (!p || !(p->kinds & kinds))
            continue;
        if (((w0 | p->fold[0]) & p->mask[0]) == p->val[0] &&
            ((w1 | p->fold[1]) & p->mask[1]) == p->val[1] &&
            ((w2 | p->fold[2]) & p->mask[2]) == p->val[2] &&
            ((w3 | p->fold[3]) & p->mask[3]) == p->val[3])
            return 1;
    }
    return 0;
}

// ------------------------------------------------------------ enter/exit pairing

static __always_inline struct ev *begin(u32 kind) {
    u32 zero = 0;
    struct ev *e = scratch.lookup(&zero);
    if (!e)
        return 0;
    fill_hdr(&e->h, (void *)bpf_get_current_task(), kind);
    e->a0 = e->a1 = e->a2 = e->a3 = 0;
    e->family = e->dport = e->sport = e->socktype = 0;
    e->dfd = e->dfd2 = 0;
    e->path[0] = 0;
    e->path2[0] = 0;
    return e;
}

static __always_inline void park(struct ev *e) {
    u32 tid = e->h.tid;
    pending.update(&tid, e);
}

// The record parked by this thread's sys_enter, if it is one of `kinds`
// (a stale record, e.g. from a syscall entered before the exit probe was
// attached, is dropped).
static __always_inline struct ev *resume(u32 kinds) {
    u32 tid = (u32)bpf_get_current_pid_tgid();
    struct ev *e = pending.lookup(&tid);
    if (e && !((1u << e->h.kind) & kinds)) {
        pending.delete(&tid);
        return 0;
    }
    return e;
}

static __always_inline void finish(struct ev *e, long ret) {
    u32 tid = e->h.tid;
    e->h.ret = (s32)ret;
    // A syscall that blocked across a change of interest (accept, connect) is
    // sent only if its kind is still wanted.
    if (is_enabled(e->h.kind))
        send(e, sizeof(*e), e->h.ts);
    pending.delete(&tid);
}

static __always_inline void *fd_file(int fd) {
    void *task = (void *)bpf_get_current_task();
    void *files = rdp(task, OFF_TASK_FILES);
    void *fdt = rdp(files, OFF_FILES_FDT);
    u32 max = rd32(fdt, OFF_FDT_MAX_FDS);
    if (fd < 0 || (u32)fd >= max)
        return 0;
    void **arr = rdp(fdt, OFF_FDT_FD);
    return rdp(arr, fd * 8);
}

// Local and remote address of the socket behind fd (after connect/accept/bind).
static __always_inline void sock_info(struct ev *e, int fd, int remote_too) {
    void *file = fd_file(fd);
    if (!file)
        return;
    void *sock = rdp(file, OFF_FILE_PRIVATE_DATA);
    e->socktype = rd16(sock, OFF_SOCKET_TYPE);
    void *sk = rdp(sock, OFF_SOCKET_SK);
    if (!sk)
        return;
    void *skc = (char *)sk + OFF_SOCK_COMMON;
    u16 family = rd16(skc, OFF_SK_FAMILY);
    if (!e->family)
        e->family = family;
    e->sport = rd16(skc, OFF_SK_NUM);
    if (family == 2) {
        bpf_probe_read_kernel(e->saddr, 4, (char *)skc + OFF_SK_RCV_SADDR);
        if (remote_too)
            bpf_probe_read_kernel(e->daddr, 4, (char *)skc + OFF_SK_DADDR);
    } else if (family == 10) {
        bpf_probe_read_kernel(e->saddr, 16, (char *)skc + OFF_SK_V6_RCV_SADDR);
        if (remote_too)
            bpf_probe_read_kernel(e->daddr, 16, (char *)skc + OFF_SK_V6_DADDR);
    }
    if (remote_too)
        e->dport = __builtin_bswap16(rd16(skc, OFF_SK_DPORT));
}

// sockaddr from user memory -> family, address, port; 0 unless AF_INET/AF_INET6.
static __always_inline int read_sockaddr(struct ev *e, const void *uaddr, u8 *addr, u16 *port) {
    u16 family = 0;
    if (!uaddr || bpf_probe_read_user(&family, 2, uaddr) != 0)
        return 0;
    if (family != 2 && family != 10)
        return 0;
    u16 p = 0;
    bpf_probe_read_user(&p, 2, (char *)uaddr + 2);
    *port = __builtin_bswap16(p);
    if (family == 2)
        bpf_probe_read_user(addr, 4, (char *)uaddr + 4);
    else
        bpf_probe_read_user(addr, 16, (char *)uaddr + 8);
    e->family = family;
    return 1;
}

// ------------------------------------------------------------ process lifecycle

// PIDTYPE_PGID and PIDTYPE_SID in enum pid_type (unchanged since 4.19).
#define PIDTYPE_PGID_ 2
#define PIDTYPE_SID_ 3

static __always_inline u32 pid_nr(void *signal, int type) {
    void *pid = rdp(signal, OFF_SIGNAL_PIDS + type * 8);
    return pid ? rd32(pid, OFF_PID_NUMBERS) : 0;  // numbers[0].nr: the id in the initial namespace
}

static __always_inline void fill_ident(struct ident *id, void *task) {
    void *cred = rdp(task, OFF_TASK_CRED);
    id->suid = rd32(cred, OFF_CRED_SUID);
    id->egid = rd32(cred, OFF_CRED_EGID);
    id->sgid = rd32(cred, OFF_CRED_SGID);
    id->fsuid = rd32(cred, OFF_CRED_FSUID);
    id->cap_eff = rd64(cred, OFF_CRED_CAP_EFFECTIVE);  // kernel_cap_t: one u64 (6.3+) or two u32 (older), same bytes
    id->cap_prm = rd64(cred, OFF_CRED_CAP_PERMITTED);
    void *signal = rdp(task, OFF_TASK_SIGNAL);
    id->sid = pid_nr(signal, PIDTYPE_SID_);
    id->pgid = pid_nr(signal, PIDTYPE_PGID_);
    void *tty = rdp(signal, OFF_SIGNAL_TTY);
    id->tty_major = 0;
    id->tty_minor = 0;
    if (tty) {
        void *drv = rdp(tty, OFF_TTY_DRIVER);
        id->tty_major = rd32(drv, OFF_TTY_DRIVER_MAJOR);
        id->tty_minor = rd32(drv, OFF_TTY_DRIVER_MINOR_START) + rd32(tty, OFF_TTY_INDEX);
    }
    void *cgroups = rdp(task, OFF_TASK_CGROUPS);
    void *cgrp = rdp(cgroups, OFF_CSS_SET_DFL_CGRP);
    void *kn = rdp(cgrp, OFF_CGROUP_KN);
    id->cgroup[0] = 0;
    id->cgroup_parent[0] = 0;
    if (kn) {
        bpf_probe_read_kernel_str(id->cgroup, CGROUP_NAME_LEN, rdp(kn, OFF_KERNFS_NODE_NAME));
        void *up = rdp(kn, OFF_KERNFS_NODE_PARENT);
        if (up)
            bpf_probe_read_kernel_str(id->cgroup_parent, CGROUP_NAME_LEN, rdp(up, OFF_KERNFS_NODE_NAME));
    }
}

TRACEPOINT_PROBE(sched, sched_process_exec) {
    if (!is_enabled(K_EXEC))
        return 0;
    u32 zero = 0;
    struct exec_ev *e = scratch_exec.lookup(&zero);
    if (!e)
        return 0;
    void *task = (void *)bpf_get_current_task();
    fill_hdr(&e->h, task, K_EXEC);
    TP_DATA_LOC_READ_STR(e->filename, filename, PATH_LEN);
    void *mm = rdp(task, OFF_TASK_MM);
    u64 start = rd64(mm, OFF_MM_ARG_START), end = rd64(mm, OFF_MM_ARG_END);
    u64 len = end > start ? end - start : 0;
    e->args_len = (u32)len;
    if (len > ARGS_LEN - 1)
        len = ARGS_LEN - 1;
    e->args[0] = 0;
    bpf_probe_read_user(e->args, len & (ARGS_LEN - 1), (void *)start);
    fill_ident(&e->id, task);
    // The environment, read here: a short-lived process is gone before user
    // space could read /proc/<pid>/environ.
    u64 env_start = rd64(mm, OFF_MM_ENV_START), env_end = rd64(mm, OFF_MM_ENV_END);
    u64 elen = env_end > env_start ? env_end - env_start : 0;
    e->env_len = (u32)elen;
    if (elen > ENV_LEN - 1)
        elen = ENV_LEN - 1;
    e->env[0] = 0;
    bpf_probe_read_user(e->env, elen & (ENV_LEN - 1), (void *)env_start);
    send(e, sizeof(*e), e->h.ts);
    return 0;
}

RAW_TRACEPOINT_PROBE(sched_process_fork) {
    if (!is_enabled(K_FORK))
        return 0;
    void *child = (void *)ctx->args[1];
    u32 tgid = rd32(child, OFF_TASK_TGID), tid = rd32(child, OFF_TASK_PID);
    if (tgid != tid)
        return 0;  // a new thread, not a new process
    u32 zero = 0;
    struct ev *e = scratch.lookup(&zero);
    if (!e)
        return 0;
    fill_hdr(&e->h, child, K_FORK);
    e->h.start = rd64(child, OFF_TASK_START_BOOTTIME);
    e->path[0] = 0;
    e->path2[0] = 0;
    send(e, sizeof(*e), e->h.ts);
    return 0;
}

TRACEPOINT_PROBE(sched, sched_process_exit) {
    if (!args->group_dead || !is_enabled(K_EXIT))
        return 0;  // only the end of the whole process
    u32 zero = 0;
    struct ev *e = scratch.lookup(&zero);
    if (!e)
        return 0;
    void *task = (void *)bpf_get_current_task();
    fill_hdr(&e->h, task, K_EXIT);
    e->a0 = rd32(task, OFF_TASK_EXIT_CODE);
    e->path[0] = 0;
    e->path2[0] = 0;
    send(e, sizeof(*e), e->h.ts);
    return 0;
}

// ------------------------------------------------------------ files

#define O_ACCMODE_ 3
#define O_CREAT_ 0100
#define O_TRUNC_ 01000

static __always_inline int open_enter(int dfd, const char *filename, u64 flags, u64 mode) {
    int write = (flags & O_ACCMODE_) != 0 || (flags & O_TRUNC_);
    u32 kinds = 0;
    if (flags & O_CREAT_)
        kinds |= (1u << K_OPEN_CREATE);
    kinds |= write ? (1u << K_OPEN_WRITE) : (1u << K_OPEN_READ);
    u32 want = 0;
    if ((kinds & (1u << K_OPEN_CREATE)) && is_enabled(K_OPEN_CREATE))
        want |= 1u << K_OPEN_CREATE;
    if ((kinds & (1u << K_OPEN_WRITE)) && is_enabled(K_OPEN_WRITE))
        want |= 1u << K_OPEN_WRITE;
    if ((kinds & (1u << K_OPEN_READ)) && is_enabled(K_OPEN_READ))
        want |= 1u << K_OPEN_READ;
    if (!want)
        return 0;
    struct ev *e = begin(write ? K_OPEN_WRITE : K_OPEN_READ);
    if (!e)
        return 0;
    bpf_probe_read_user_str(e->path, PATH_LEN, filename);
    if (!path_passes(e->path, want)) {
        count_filtered(e->h.kind);
        return 0;
    }
    e->a0 = flags;
    e->a1 = (u64)filename;  // re-read at exit if the page was not faulted in yet
    e->a2 = want;
    e->dfd = dfd;
    park(e);
    return 0;
}

static __always_inline int open_exit(long ret) {
    struct ev *e = resume((1u << K_OPEN_READ) | (1u << K_OPEN_WRITE));
    if (!e)
        return 0;
    if (e->path[0] == 0)
        bpf_probe_read_user_str(e->path, PATH_LEN, (void *)e->a1);
    if (ret >= 0) {
        void *file = fd_file((int)ret);
        if (file)
            e->a3 = rd32(file, OFF_FILE_F_MODE);
        if (e->a3 & FMODE_CREATED_)
            e->h.kind = K_OPEN_CREATE;
    }
    finish(e, ret);
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_enter_open) { return open_enter(-100, args->filename, args->flags, args->mode); }
TRACEPOINT_PROBE(syscalls, sys_exit_open) { return open_exit(args->ret); }
TRACEPOINT_PROBE(syscalls, sys_enter_openat) { return open_enter(args->dfd, args->filename, args->flags, args->mode); }
TRACEPOINT_PROBE(syscalls, sys_exit_openat) { return open_exit(args->ret); }
TRACEPOINT_PROBE(syscalls, sys_enter_openat2) {
    u64 how[2] = {};
    bpf_probe_read_user(how, sizeof(how), args->how);
    return open_enter(args->dfd, args->filename, how[0], how[1]);
}
TRACEPOINT_PROBE(syscalls, sys_exit_openat2) { return open_exit(args->ret); }

// One path (plus optional second path / dfds / numbers): unlink, chmod, chown, rename.
static __always_inline int path_enter(u32 kind, int dfd, const char *p1, int dfd2, const char *p2, u64 a0, u64 a1) {
    if (!is_enabled(kind))
        return 0;
    struct ev *e = begin(kind);
    if (!e)
        return 0;
    bpf_probe_read_user_str(e->path, PATH_LEN, p1);
    if (p2)
        bpf_probe_read_user_str(e->path2, PATH_LEN, p2);
    // rename: the destination decides (file.path is the new path).
    if (!path_passes(p2 ? e->path2 : e->path, 1u << kind)) {
        count_filtered(kind);
        return 0;
    }
    e->dfd = dfd;
    e->dfd2 = dfd2;
    e->a0 = a0;
    e->a1 = a1;
    e->a2 = (u64)p1;  // re-read at exit if the page was not faulted in yet
    e->a3 = (u64)p2;
    park(e);
    return 0;
}

static __always_inline int plain_exit(u32 kind, long ret) {
    struct ev *e = resume(1u << kind);
    if (!e)
        return 0;
    if ((kind >= K_UNLINK && kind <= K_CHOWN) || kind == K_CHDIR) {
        if (e->path[0] == 0 && e->a2)
            bpf_probe_read_user_str(e->path, PATH_LEN, (void *)e->a2);
        if (e->path2[0] == 0 && e->a3)
            bpf_probe_read_user_str(e->path2, PATH_LEN, (void *)e->a3);
    }
    finish(e, ret);
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_enter_unlink) { return path_enter(K_UNLINK, -100, args->pathname, 0, 0, 0, 0); }
TRACEPOINT_PROBE(syscalls, sys_exit_unlink) { return plain_exit(K_UNLINK, args->ret); }
TRACEPOINT_PROBE(syscalls, sys_enter_unlinkat) { return path_enter(K_UNLINK, args->dfd, args->pathname, 0, 0, args->flag, 0); }
TRACEPOINT_PROBE(syscalls, sys_exit_unlinkat) { return plain_exit(K_UNLINK, args->ret); }
TRACEPOINT_PROBE(syscalls, sys_enter_rename) { return path_enter(K_RENAME, -100, args->oldname, -100, args->newname, 0, 0); }
TRACEPOINT_PROBE(syscalls, sys_exit_rename) { return plain_exit(K_RENAME, args->ret); }
TRACEPOINT_PROBE(syscalls, sys_enter_renameat) { return path_enter(K_RENAME, args->olddfd, args->oldname, args->newdfd, args->newname, 0, 0); }
TRACEPOINT_PROBE(syscalls, sys_exit_renameat) { return plain_exit(K_RENAME, args->ret); }
TRACEPOINT_PROBE(syscalls, sys_enter_renameat2) { return path_enter(K_RENAME, args->olddfd, args->oldname, args->newdfd, args->newname, args->flags, 0); }
TRACEPOINT_PROBE(syscalls, sys_exit_renameat2) { return plain_exit(K_RENAME, args->ret); }
TRACEPOINT_PROBE(syscalls, sys_enter_chmod) { return path_enter(K_CHMOD, -100, args->filename, 0, 0, args->mode, 0); }
TRACEPOINT_PROBE(syscalls, sys_exit_chmod) { return plain_exit(K_CHMOD, args->ret); }
TRACEPOINT_PROBE(syscalls, sys_enter_fchmodat) { return path_enter(K_CHMOD, args->dfd, args->filename, 0, 0, args->mode, 0); }
TRACEPOINT_PROBE(syscalls, sys_exit_fchmodat) { return plain_exit(K_CHMOD, args->ret); }
TRACEPOINT_PROBE(syscalls, sys_enter_fchmodat2) { return path_enter(K_CHMOD, args->dfd, args->filename, 0, 0, args->mode, 0); }
TRACEPOINT_PROBE(syscalls, sys_exit_fchmodat2) { return plain_exit(K_CHMOD, args->ret); }
TRACEPOINT_PROBE(syscalls, sys_enter_chown) { return path_enter(K_CHOWN, -100, args->filename, 0, 0, args->user, args->group); }
TRACEPOINT_PROBE(syscalls, sys_exit_chown) { return plain_exit(K_CHOWN, args->ret); }
TRACEPOINT_PROBE(syscalls, sys_enter_lchown) { return path_enter(K_CHOWN, -100, args->filename, 0, 0, args->user, args->group); }
TRACEPOINT_PROBE(syscalls, sys_exit_lchown) { return plain_exit(K_CHOWN, args->ret); }
TRACEPOINT_PROBE(syscalls, sys_enter_fchownat) { return path_enter(K_CHOWN, args->dfd, args->filename, 0, 0, args->user, args->group); }
TRACEPOINT_PROBE(syscalls, sys_exit_fchownat) { return plain_exit(K_CHOWN, args->ret); }

TRACEPOINT_PROBE(syscalls, sys_enter_chdir) { return path_enter(K_CHDIR, -100, args->filename, 0, 0, 0, 0); }
TRACEPOINT_PROBE(syscalls, sys_exit_chdir) { return plain_exit(K_CHDIR, args->ret); }
TRACEPOINT_PROBE(syscalls, sys_enter_fchdir) { return path_enter(K_CHDIR, args->fd, 0, 0, 0, 0, 0); }
TRACEPOINT_PROBE(syscalls, sys_exit_fchdir) { return plain_exit(K_CHDIR, args->ret); }

// ------------------------------------------------------------ network

TRACEPOINT_PROBE(syscalls, sys_enter_connect) {
    if (!is_enabled(K_CONNECT))
        return 0;
    struct ev *e = begin(K_CONNECT);
    if (!e || !read_sockaddr(e, args->uservaddr, e->daddr, &e->dport))
        return 0;  // AF_UNIX and friends are not network events
    e->a0 = args->fd;
    park(e);
    return 0;
}
TRACEPOINT_PROBE(syscalls, sys_exit_connect) {
    struct ev *e = resume(1u << K_CONNECT);
    if (!e)
        return 0;
    sock_info(e, (int)e->a0, 0);
    finish(e, args->ret);
    return 0;
}

static __always_inline int accept_enter(void) {
    if (!is_enabled(K_ACCEPT))
        return 0;
    struct ev *e = begin(K_ACCEPT);
    if (e)
        park(e);
    return 0;
}
static __always_inline int accept_exit(long ret) {
    struct ev *e = resume(1u << K_ACCEPT);
    if (!e)
        return 0;
    u32 tid = e->h.tid;
    if (ret < 0) {  // nothing accepted (EAGAIN on a non-blocking listener is the common case)
        pending.delete(&tid);
        return 0;
    }
    sock_info(e, (int)ret, 1);
    if (e->family != 2 && e->family != 10) {
        pending.delete(&tid);
        return 0;
    }
    finish(e, ret);
    return 0;
}
TRACEPOINT_PROBE(syscalls, sys_enter_accept) { return accept_enter(); }
TRACEPOINT_PROBE(syscalls, sys_exit_accept) { return accept_exit(args->ret); }
TRACEPOINT_PROBE(syscalls, sys_enter_accept4) { return accept_enter(); }
TRACEPOINT_PROBE(syscalls, sys_exit_accept4) { return accept_exit(args->ret); }

TRACEPOINT_PROBE(syscalls, sys_enter_bind) {
    if (!is_enabled(K_BIND))
        return 0;
    struct ev *e = begin(K_BIND);
    if (!e || !read_sockaddr(e, args->umyaddr, e->saddr, &e->sport))
        return 0;
    e->a0 = args->fd;
    park(e);
    return 0;
}
TRACEPOINT_PROBE(syscalls, sys_exit_bind) {
    struct ev *e = resume(1u << K_BIND);
    if (!e)
        return 0;
    void *file = fd_file((int)e->a0);
    if (file)
        e->socktype = rd16(rdp(file, OFF_FILE_PRIVATE_DATA), OFF_SOCKET_TYPE);
    finish(e, args->ret);
    return 0;
}

// ------------------------------------------------------------ process changes

static __always_inline int nums_enter(u32 kind, u64 a0, u64 a1, u64 a2) {
    if (!is_enabled(kind))
        return 0;
    struct ev *e = begin(kind);
    if (!e)
        return 0;
    e->a0 = a0;
    e->a1 = a1;
    e->a2 = a2;
    park(e);
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_enter_ptrace) { return nums_enter(K_PTRACE, args->request, args->pid, 0); }
TRACEPOINT_PROBE(syscalls, sys_exit_ptrace) { return plain_exit(K_PTRACE, args->ret); }
TRACEPOINT_PROBE(syscalls, sys_enter_setuid) { return nums_enter(K_SETUID, args->uid, 0, 0); }
TRACEPOINT_PROBE(syscalls, sys_exit_setuid) { return plain_exit(K_SETUID, args->ret); }
TRACEPOINT_PROBE(syscalls, sys_enter_setgid) { return nums_enter(K_SETGID, args->gid, 0, 0); }
TRACEPOINT_PROBE(syscalls, sys_exit_setgid) { return plain_exit(K_SETGID, args->ret); }
TRACEPOINT_PROBE(syscalls, sys_enter_setreuid) { return nums_enter(K_SETREUID, args->ruid, args->euid, 0); }
TRACEPOINT_PROBE(syscalls, sys_exit_setreuid) { return plain_exit(K_SETREUID, args->ret); }
TRACEPOINT_PROBE(syscalls, sys_enter_setregid) { return nums_enter(K_SETREGID, args->rgid, args->egid, 0); }
TRACEPOINT_PROBE(syscalls, sys_exit_setregid) { return plain_exit(K_SETREGID, args->ret); }
TRACEPOINT_PROBE(syscalls, sys_enter_setresuid) { return nums_enter(K_SETRESUID, args->ruid, args->euid, args->suid); }
TRACEPOINT_PROBE(syscalls, sys_exit_setresuid) { return plain_exit(K_SETRESUID, args->ret); }
TRACEPOINT_PROBE(syscalls, sys_enter_setresgid) { return nums_enter(K_SETRESGID, args->rgid, args->egid, args->sgid); }
TRACEPOINT_PROBE(syscalls, sys_exit_setresgid) { return plain_exit(K_SETRESGID, args->ret); }
// Kernels built without module support have no module syscalls to trace.
#ifdef HAVE_MODULE_SYSCALLS
TRACEPOINT_PROBE(syscalls, sys_enter_init_module) { return nums_enter(K_INIT_MODULE, args->len, 0, 0); }
TRACEPOINT_PROBE(syscalls, sys_exit_init_module) { return plain_exit(K_INIT_MODULE, args->ret); }
TRACEPOINT_PROBE(syscalls, sys_enter_finit_module) { return nums_enter(K_FINIT_MODULE, args->fd, args->flags, 0); }
TRACEPOINT_PROBE(syscalls, sys_exit_finit_module) { return plain_exit(K_FINIT_MODULE, args->ret); }
#endif

TRACEPOINT_PROBE(syscalls, sys_enter_memfd_create) {
    if (!is_enabled(K_MEMFD))
        return 0;
    struct ev *e = begin(K_MEMFD);
    if (!e)
        return 0;
    bpf_probe_read_user_str(e->path, PATH_LEN, args->uname);
    e->a0 = args->flags;
    park(e);
    return 0;
}
TRACEPOINT_PROBE(syscalls, sys_exit_memfd_create) { return plain_exit(K_MEMFD, args->ret); }

#define PROT_EXEC_ 4
TRACEPOINT_PROBE(syscalls, sys_enter_mmap) {
    if (!(args->prot & PROT_EXEC_))
        return 0;
    return nums_enter(K_MMAP_EXEC, args->fd, args->len, args->prot | ((u64)args->flags << 32));
}
TRACEPOINT_PROBE(syscalls, sys_exit_mmap) {
    struct ev *e = resume(1u << K_MMAP_EXEC);
    if (e) {
        e->a3 = (u64)args->ret;  // the mapping's address
        finish(e, args->ret < 0 && args->ret > -4096 ? args->ret : 0);
    }
    return 0;
}
TRACEPOINT_PROBE(syscalls, sys_enter_mprotect) {
    if (!(args->prot & PROT_EXEC_))
        return 0;
    return nums_enter(K_MPROTECT_EXEC, args->start, args->len, args->prot);
}
TRACEPOINT_PROBE(syscalls, sys_exit_mprotect) { return plain_exit(K_MPROTECT_EXEC, args->ret); }
