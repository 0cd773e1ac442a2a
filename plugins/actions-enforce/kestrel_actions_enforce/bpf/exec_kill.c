// Kill at exec: SIGKILL from sched:sched_process_exec, before the new image
// runs user code.  Driven by maps that user space fills:
//   denied_paths  exact exec path (as given to execve, NUL-padded to
//                 PATH_KEY_LEN bytes) -> 1.  The hash map compares the whole
//                 fixed-size key, so no string loop meets the verifier.
//   armed_tgids   tgid -> 1: kill that process at its next exec (one shot).
//   enabled[0]    0 turns the program into a no-op (instant rollback).
// Every kill is reported on the `kills` ring buffer for the audit log.

#define PATH_KEY_LEN 256
#define REASON_PATH 1
#define REASON_ARMED 2

struct path_key {
    char path[PATH_KEY_LEN];
};

struct kill_event {
    u64 ts_ns;
    u32 tgid;
    u32 reason;
    char path[PATH_KEY_LEN];
};

BPF_HASH(denied_paths, struct path_key, u8, 4096);
BPF_HASH(armed_tgids, u32, u8, 65536);
BPF_ARRAY(enabled, u32, 1);
BPF_ARRAY(counters, u64, 4);  // 0: kills by path, 1: kills of armed tgids, 2: events lost (ring full), 3: execs seen
BPF_PERCPU_ARRAY(scratch, struct kill_event, 1);
BPF_RINGBUF_OUTPUT(kills, 16);

TRACEPOINT_PROBE(sched, sched_process_exec) {
    int zero = 0;
    u32 *on = enabled.lookup(&zero);
    if (!on || !*on)
        return 0;
    counters.atomic_increment(3);
    u32 tgid = bpf_get_current_pid_tgid() >> 32;
    struct kill_event *ev = scratch.lookup(&zero);
    if (!ev)
        return 0;
    u32 reason = 0;
    __builtin_memset(ev->path, 0, sizeof(ev->path));
    bpf_probe_read_kernel_str(ev->path, sizeof(ev->path), (void *)args + (args->data_loc_filename & 0xFFFF));
    if (armed_tgids.lookup(&tgid)) {
        reason = REASON_ARMED;
        armed_tgids.delete(&tgid);
    } else if (denied_paths.lookup((struct path_key *)ev->path)) {
        reason = REASON_PATH;
    }
    if (!reason)
        return 0;
    bpf_send_signal(9);
    counters.atomic_increment(reason == REASON_PATH ? 0 : 1);
    ev->ts_ns = bpf_ktime_get_ns();
    ev->tgid = tgid;
    ev->reason = reason;
    if (kills.ringbuf_output(ev, sizeof(*ev), 0) != 0)
        counters.atomic_increment(2);
    return 0;
}
