// Connect deny: cgroup/connect4 and cgroup/connect6 programs attached to
// cgroup2 directories.  Returning 0 makes connect() fail with EPERM.
//   denied_dests  (cgroup id, family, port, address) -> 1; port 0 stands for
//                 any port.  The cgroup id is the directory the deny was
//                 given for: the caller's cgroup and its ancestors are tried,
//                 so processes in sub-cgroups are confined too.
//   enabled[0]    0 allows everything (instant rollback).
// Every denial is reported on the `denials` ring buffer for the audit log.

#define MAX_CGROUP_DEPTH 16

struct dest_key {
    u64 cgid;
    u32 family;
    u32 port;       // host byte order
    u32 addr[4];    // network byte order; IPv4 in addr[0]
};

struct deny_event {
    u64 ts_ns;
    u64 cgid;
    u32 tgid;
    u32 family;
    u32 port;
    u32 addr[4];
};

BPF_HASH(denied_dests, struct dest_key, u8, 4096);
BPF_ARRAY(enabled, u32, 1);
BPF_ARRAY(counters, u64, 2);  // 0: denied connects, 1: events lost (ring full)
BPF_RINGBUF_OUTPUT(denials, 8);

static __always_inline int denied(struct dest_key *k) {
    if (denied_dests.lookup(k))
        return 1;
    u32 port = k->port;
    k->port = 0;
    int hit = denied_dests.lookup(k) != 0;
    k->port = port;
    return hit;
}

static __always_inline int decide(struct dest_key *k) {
    int zero = 0;
    u32 *on = enabled.lookup(&zero);
    if (!on || !*on)
        return 1;
    u64 self = bpf_get_current_cgroup_id();
    u64 hit = 0;
    k->cgid = self;
    if (denied(k))
        hit = self;
    for (int level = 0; level < MAX_CGROUP_DEPTH; level++) {
        if (hit)
            break;
        u64 id = bpf_get_current_ancestor_cgroup_id(level);
        if (id == 0 || id == self)
            break;
        k->cgid = id;
        if (denied(k))
            hit = id;
    }
    if (!hit)
        return 1;
    counters.atomic_increment(0);
    struct deny_event ev = {};
    ev.ts_ns = bpf_ktime_get_ns();
    ev.cgid = hit;
    ev.tgid = bpf_get_current_pid_tgid() >> 32;
    ev.family = k->family;
    ev.port = k->port;
    ev.addr[0] = k->addr[0];
    ev.addr[1] = k->addr[1];
    ev.addr[2] = k->addr[2];
    ev.addr[3] = k->addr[3];
    if (denials.ringbuf_output(&ev, sizeof(ev), 0) != 0)
        counters.atomic_increment(1);
    return 0;
}

int connect4(struct bpf_sock_addr *ctx) {
    struct dest_key k = {};
    k.family = 2;  // AF_INET
    k.port = bpf_ntohs((u16)ctx->user_port);
    k.addr[0] = ctx->user_ip4;
    return decide(&k);
}

int connect6(struct bpf_sock_addr *ctx) {
    struct dest_key k = {};
    k.family = 10;  // AF_INET6
    k.port = bpf_ntohs((u16)ctx->user_port);
    k.addr[0] = ctx->user_ip6[0];
    k.addr[1] = ctx->user_ip6[1];
    k.addr[2] = ctx->user_ip6[2];
    k.addr[3] = ctx->user_ip6[3];
    return decide(&k);
}
