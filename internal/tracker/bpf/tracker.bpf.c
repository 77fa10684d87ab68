// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
//
// Connection tracker for netprocbeat: records, in kernel context, which
// process owns each TCP connection and UDP socket, so that flows observed
// after the socket closed can still be attributed.
//
// Build: go generate ./internal/tracker (needs clang and libbpf-dev).
// The program is CO-RE: it relies only on the minimal kernel type
// definitions in vmlinux_min.h, relocated against the running kernel's BTF.

#include "vmlinux_min.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>

char LICENSE[] SEC("license") = "Dual BSD/GPL";

#define AF_INET 2
#define AF_INET6 10
#define IPPROTO_TCP 6
#define IPPROTO_UDP 17

#define TCP_ESTABLISHED 1
#define TCP_SYN_SENT 2
#define TCP_SYN_RECV 3
#define TCP_FIN_WAIT1 4
#define TCP_CLOSE 7
#define TCP_LAST_ACK 9
#define TCP_LISTEN 10

#define EINPROGRESS 115

// Event types, mirrored by the Go side.
#define EV_CONNECT 1     // active open reached ESTABLISHED, or a non-blocking connect() returned with its SYN sent: owner = connecting task
#define EV_ACCEPT 2      // accept()/accept4() returned the connection: owner = accepting task
#define EV_SEND_RECV 3   // a UDP datagram sent or received in process context
#define EV_CLOSE 4       // TCP socket closed (holder's FIN, or CLOSE)
#define EV_LISTEN 5      // TCP listener created, or UDP socket bound
#define EV_EXIT 6        // the last thread of a process exited (no socket)
#define EV_UDP_CONNECT 7 // connect() of a UDP socket returned: owner = connecting task

// Where the owner of an event came from.
#define SRC_TASK 1       // the current task (process context)

// UDP sockets never change state: re-announce an active socket at most
// this often so the user-space table can age out idle ones.
#define REFRESH_NS (10ULL * 1000 * 1000 * 1000)

// The reader polls the ring (Go's pollInterval: every 10 ms while records
// come), so the programs need not wake it: a wakeup is an interrupt on the
// writing CPU and a cross-CPU wakeup of the reader, paid by whichever
// process wrote the record. As a safety net for a burst after the reader
// slowed its polling, every WAKEUP_CHECK_EVERY-th record of a CPU asks how
// much is pending, and wakes the reader once a quarter of the ring is.
#define WAKEUP_BYTES (1024 * 1024)
#define WAKEUP_CHECK_EVERY 64

// io_uring opcodes that close a descriptor and accept a connection (uapi,
// stable).
#define IORING_OP_CLOSE 19
#define IORING_OP_ACCEPT 13

struct owner {
	__u64 start_ns; // group leader's start_boottime
	__u64 last_emit_ns;
	__u32 pid;      // tgid
	__u32 sig;      // tuple signature at the last announcement
	__u16 sport;    // local port once known: it is cleared before CLOSE
	__u8 source;
	__u8 closed;    // this owner's close was announced (FIN or CLOSE)
	__u8 pending;   // an active open not from connect(): announce at ESTABLISHED
	__u8 bound;     // a UDP socket recorded at bind(), not used since
	char comm[16];
};

struct event {
	__u64 sk;
	__u64 start_ns;
	__u64 ts_ns;
	__u32 pid;
	__u32 netns;
	__u8 type;
	__u8 proto;
	__u8 source;
	__u8 state;
	__u16 family;
	__u16 sport; // host byte order
	__u16 dport; // host byte order
	__u16 pad;
	__u8 saddr[16];
	__u8 daddr[16];
	char comm[16];
};


// Keep struct event in the object's BTF for bpf2go -type event.
const struct event *unused_event __attribute__((unused));

// The owner of each UDP socket and TCP listener, stored in the socket
// itself: a lookup is a pointer load, the record is freed with the socket,
// and a recycled struct sock starts empty. Not cloned into accepted sockets
// (no BPF_F_CLONE). TCP connections are kept in conns instead: storage is
// allocated per socket, which costs more than a connection's other hooks
// together.
struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct owner);
} socks SEC(".maps");

// TCP connections' owners, by struct sock address: a client's from its
// connect(), a server's from the accept() that returned it, kept for the
// holder's FIN and CLOSE and removed at CLOSE. The syscall tracepoints that
// see connect() and accept() return cannot use socket storage (a helper of
// BTF-typed programs only), and a hash entry costs a fraction of a storage
// allocation. A socket's new life replaces (SYN_SENT) or removes (a passive
// open's SYN_RECV) what an earlier socket at the same address may have left
// (an insert that lost a race with its own CLOSE).
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, struct owner);
} conns SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 4 << 20);
} events SEC(".maps");

// Change counters, read by user space through mmap (no system call): a
// reading that did not move proves that nothing of the kind happened.
//
// port_epoch[proto_index * 65536 + local port] (proto_index 0 = TCP,
// 1 = UDP, reserved: no UDP release hook without kprobes) is bumped when a
// TCP socket bound to that port goes to CLOSE, connection or listener,
// tracked or not.
#define PORT_EPOCH_ENTRIES (2 * 65536)
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(map_flags, BPF_F_MMAPABLE);
	__uint(max_entries, PORT_EPOCH_ENTRIES);
	__type(key, __u32);
	__type(value, __u32);
} port_epoch SEC(".maps");

// pid_epoch[tgid % 65536]: epoch is bumped after that process closed or
// replaced a file descriptor (close, close_range, dup2, dup3 return),
// connected, exec'd (close-on-exec done), or when one of its threads exits.
// unusable is non-zero while the counter proves nothing for the slot: the
// low 16 bits count processes of the slot between their exit (which runs
// before the kernel releases their descriptor table) and their release;
// the high 16 bits are set for good once a process of the slot closed a
// descriptor through io_uring or shared its descriptor table with another
// process (clone(CLONE_FILES) without CLONE_THREAD). Collisions (PIDs equal
// modulo 65536) only cost the reader a check.
// last_fork is the fork clock's reading (fork_clock below) at the slot's
// process's latest fork of a new process: from then on the child holds
// every descriptor the parent held, until it closes them (exec closes the
// close-on-exec ones), and a verification of the parent's hold on one says
// nothing about the child's.
#define PID_EPOCH_ENTRIES 65536
#define UNUSABLE_STICKY 0x10000
struct pid_slot {
	__u32 epoch;
	__u32 unusable;
	__u32 last_fork;
	__u32 pad;
};
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(map_flags, BPF_F_MMAPABLE);
	__uint(max_entries, PID_EPOCH_ENTRIES);
	__type(key, __u32);
	__type(value, struct pid_slot);
} pid_epoch SEC(".maps");

// fork_clock[0] counts forks of new processes (not threads) since the
// program was loaded; user space reads it before it walks descriptor
// tables, so that a parent whose last_fork is newer forked after the walk.
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(map_flags, BPF_F_MMAPABLE);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} fork_clock SEC(".maps");

// Processes between their last thread's exit and their release, by tgid.
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, __u32);
	__type(value, __u8);
} exiting SEC(".maps");

static __always_inline void bump_port(__u32 port)
{
	__u32 idx = port & 0xffff;
	__u32 *v = bpf_map_lookup_elem(&port_epoch, &idx);
	if (v)
		__sync_fetch_and_add(v, 1);
}

static __always_inline struct pid_slot *pid_slot(__u32 tgid)
{
	__u32 idx = tgid & 0xffff;
	return bpf_map_lookup_elem(&pid_epoch, &idx);
}

static __always_inline int bump_pid(__u32 tgid)
{
	struct pid_slot *v = pid_slot(tgid);
	if (v)
		__sync_fetch_and_add(&v->epoch, 1);
	return 0;
}

static __always_inline int bump_current(void)
{
	return bump_pid(bpf_get_current_pid_tgid() >> 32);
}

// mark_unusable makes tgid's counter prove nothing from now on.
static __always_inline void mark_unusable(__u32 tgid)
{
	struct pid_slot *v = pid_slot(tgid);
	if (v) {
		__sync_fetch_and_add(&v->unusable, UNUSABLE_STICKY);
		__sync_fetch_and_add(&v->epoch, 1);
	}
}

// Counters: 0 = ring buffer full (events dropped); 1 = conns map full
// (a connection's close not announced); 2 = records written (wakeup_flags).
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 4);
	__type(key, __u32);
	__type(value, __u64);
} stats SEC(".maps");

static __always_inline void count(__u32 idx)
{
	__u64 *v = bpf_map_lookup_elem(&stats, &idx);
	if (v)
		*v += 1;
}

// sig summarises a UDP socket's tuple so that a recycled struct sock (a
// new socket at the same address, or a reconnect) is announced again.
static __always_inline __u32 sk_sig(const struct sock *sk)
{
	__u32 s = BPF_CORE_READ(sk, __sk_common.skc_portpair);
	if (BPF_CORE_READ(sk, __sk_common.skc_family) == AF_INET6) {
		struct in6_addr a = {};
		bpf_probe_read_kernel(&a, sizeof(a), &sk->__sk_common.skc_v6_daddr);
		s ^= a.in6_u.u6_addr32[0] ^ a.in6_u.u6_addr32[1] ^ a.in6_u.u6_addr32[2] ^ a.in6_u.u6_addr32[3];
		bpf_probe_read_kernel(&a, sizeof(a), &sk->__sk_common.skc_v6_rcv_saddr);
		s ^= (a.in6_u.u6_addr32[3] << 1);
	} else {
		s ^= BPF_CORE_READ(sk, __sk_common.skc_daddr) ^ (BPF_CORE_READ(sk, __sk_common.skc_rcv_saddr) << 1);
	}
	return s;
}

static __always_inline struct owner *sk_owner(const struct sock *sk)
{
	return bpf_sk_storage_get(&socks, (struct sock *)sk, 0, 0);
}

// sk_owner_new returns the socket's owner record, created (zeroed) if it
// has none; NULL only if the kernel could not allocate it.
static __always_inline struct owner *sk_owner_new(const struct sock *sk)
{
	return bpf_sk_storage_get(&socks, (struct sock *)sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
}

// current_owner fills o with the current process: its tgid, its leader's
// start time and name. The task is a BTF pointer: its fields are plain
// loads, not helper calls.
static __always_inline void current_owner(struct owner *o)
{
	struct task_struct *leader = bpf_get_current_task_btf()->group_leader;

	o->pid = bpf_get_current_pid_tgid() >> 32;
	o->start_ns = leader->start_boottime;
	o->source = SRC_TASK;
	__builtin_memcpy(o->comm, leader->comm, sizeof(o->comm));
}

static __always_inline __u64 wakeup_flags(void)
{
	__u32 idx = 2;
	__u64 *n = bpf_map_lookup_elem(&stats, &idx);
	if (!n || (++*n & (WAKEUP_CHECK_EVERY - 1)) != 0)
		return BPF_RB_NO_WAKEUP;
	return bpf_ringbuf_query(&events, BPF_RB_AVAIL_DATA) >= WAKEUP_BYTES ? BPF_RB_FORCE_WAKEUP : BPF_RB_NO_WAKEUP;
}

// emit announces o as the owner of sk; false if the ring was full. Every
// read of sk goes through bpf_probe_read_kernel (CO-RE), so it serves the
// BTF-typed tracepoints, the syscall tracepoints (which find the socket
// through the descriptor table) and the cgroup hooks alike.
static __always_inline bool emit(const struct sock *sk, const struct owner *o, __u8 type, __u8 proto)
{
	struct event *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e) {
		count(0);
		return false;
	}
	struct sock_common c;
	bpf_core_read(&c.skc_addrpair, sizeof(c.skc_addrpair), &sk->__sk_common.skc_addrpair);
	bpf_core_read(&c.skc_portpair, sizeof(c.skc_portpair), &sk->__sk_common.skc_portpair);
	__u16 family = BPF_CORE_READ(sk, __sk_common.skc_family);

	e->sk = (__u64)sk;
	e->start_ns = o->start_ns;
	e->ts_ns = bpf_ktime_get_boot_ns(); // the clock of start_ns
	e->pid = o->pid;
	e->netns = BPF_CORE_READ(sk, __sk_common.skc_net.net, ns.inum);
	e->type = type;
	e->proto = proto;
	e->source = o->source;
	e->state = BPF_CORE_READ(sk, __sk_common.skc_state);
	e->family = family;
	e->sport = c.skc_num;
	if (e->sport == 0)
		e->sport = o->sport; // TCP_CLOSE: inet_put_port already ran
	e->dport = bpf_ntohs(c.skc_dport);
	e->pad = 0;
	__builtin_memcpy(e->comm, o->comm, sizeof(e->comm));
	if (family == AF_INET6) {
		bpf_probe_read_kernel(e->saddr, 16, &sk->__sk_common.skc_v6_rcv_saddr);
		bpf_probe_read_kernel(e->daddr, 16, &sk->__sk_common.skc_v6_daddr);
	} else {
		__builtin_memset(e->saddr, 0, 16);
		__builtin_memset(e->daddr, 0, 16);
		__u32 s = c.skc_rcv_saddr;
		__u32 d = c.skc_daddr;
		__builtin_memcpy(e->saddr, &s, 4);
		__builtin_memcpy(e->daddr, &d, 4);
	}
	bpf_ringbuf_submit(e, wakeup_flags());
	return true;
}

// emit_btf is emit for a socket the program got as a BTF pointer (the
// tp_btf programs): its fields are plain loads instead of helper calls,
// which is most of an announcement's cost.
static __always_inline bool emit_btf(const struct sock *sk, const struct owner *o, __u8 type, __u8 proto)
{
	struct event *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e) {
		count(0);
		return false;
	}
	__u16 family = sk->__sk_common.skc_family;

	e->sk = (__u64)sk;
	e->start_ns = o->start_ns;
	e->ts_ns = bpf_ktime_get_boot_ns(); // the clock of start_ns
	e->pid = o->pid;
	e->netns = sk->__sk_common.skc_net.net->ns.inum;
	e->type = type;
	e->proto = proto;
	e->source = o->source;
	e->state = sk->__sk_common.skc_state;
	e->family = family;
	e->sport = sk->__sk_common.skc_num;
	if (e->sport == 0)
		e->sport = o->sport; // TCP_CLOSE: inet_put_port already ran
	e->dport = bpf_ntohs(sk->__sk_common.skc_dport);
	e->pad = 0;
	__builtin_memcpy(e->comm, o->comm, sizeof(e->comm));
	if (family == AF_INET6) {
		__builtin_memcpy(e->saddr, &sk->__sk_common.skc_v6_rcv_saddr, 16);
		__builtin_memcpy(e->daddr, &sk->__sk_common.skc_v6_daddr, 16);
	} else {
		__builtin_memset(e->saddr, 0, 16);
		__builtin_memset(e->daddr, 0, 16);
		__u32 a = sk->__sk_common.skc_rcv_saddr;
		__u32 d = sk->__sk_common.skc_daddr;
		__builtin_memcpy(e->saddr, &a, 4);
		__builtin_memcpy(e->daddr, &d, 4);
	}
	bpf_ringbuf_submit(e, wakeup_flags());
	return true;
}

// fd_sock returns the socket behind the current task's descriptor fd, or
// NULL if it is not a socket (its file is not its socket's file).
static __always_inline struct sock *fd_sock(long fd)
{
	if (fd < 0)
		return 0;
	// The task and its descriptor table are BTF pointers (plain loads);
	// the slot, file and socket are read with helpers.
	struct fdtable *fdt = bpf_get_current_task_btf()->files->fdt;
	if (!fdt || fd >= fdt->max_fds)
		return 0;
	struct file **fds = fdt->fd;
	struct file *f = 0;
	bpf_probe_read_kernel(&f, sizeof(f), &fds[fd]);
	if (!f)
		return 0;
	struct socket *sock = BPF_CORE_READ(f, private_data);
	if (!sock || BPF_CORE_READ(sock, file) != f)
		return 0;
	return BPF_CORE_READ(sock, sk);
}

static __always_inline bool inet_proto(const struct sock *sk, __u16 want)
{
	__u16 family = BPF_CORE_READ(sk, __sk_common.skc_family);
	return BPF_CORE_READ(sk, sk_protocol) == want && (family == AF_INET || family == AF_INET6);
}

SEC("tp_btf/inet_sock_set_state")
int BPF_PROG(inet_sock_set_state, const struct sock *sk, const int oldstate, const int newstate)
{
	// Most transitions (FIN_WAIT2, CLOSE_WAIT, TIME_WAIT, a passive open's
	// ESTABLISHED, ...) are of no interest: leave before touching the
	// socket.
	switch (newstate) {
	case TCP_ESTABLISHED:
		if (oldstate != TCP_SYN_SENT)
			return 0; // passive open: recorded when accept() returns it
		break;
	case TCP_SYN_RECV:
		if (oldstate != TCP_LISTEN)
			return 0; // not a new socket (a simultaneous open)
		break;
	case TCP_SYN_SENT:
	case TCP_CLOSE:
	case TCP_LISTEN:
	case TCP_FIN_WAIT1:
	case TCP_LAST_ACK:
		break;
	default:
		return 0;
	}
	if (sk->sk_protocol != IPPROTO_TCP)
		return 0;
	__u16 family = sk->__sk_common.skc_family;
	if (family != AF_INET && family != AF_INET6)
		return 0;

	__u64 k = (__u64)sk;
	struct owner o = {};
	struct owner *p;

	switch (newstate) {
	case TCP_SYN_RECV:
		// A passive open's new socket (softirq): forget a record an
		// earlier socket at this address left behind.
		bpf_map_delete_elem(&conns, &k);
		return 0;
	case TCP_SYN_SENT:
		// An active open, in the connecting task's context, and a new
		// life of the socket (replacing what an earlier one at this
		// address may have left). The source port is not chosen yet:
		// keep the owner until the tuple is complete, which is at
		// ESTABLISHED or at connect()'s return, whichever comes first
		// (a non-blocking connect returns first; TCP Fast Open's sendmsg
		// and io_uring's connect have no connect() return).
		current_owner(&o);
		o.pending = 1;
		if (bpf_map_update_elem(&conns, &k, &o, BPF_ANY) != 0)
			count(1);
		return 0;
	case TCP_LISTEN:
		// listen(): process context.
		current_owner(&o);
		o.sport = sk->__sk_common.skc_num;
		p = sk_owner_new(sk);
		if (p)
			__builtin_memcpy(p, &o, sizeof(o));
		emit_btf(sk, &o, EV_LISTEN, IPPROTO_TCP);
		return 0;
	case TCP_ESTABLISHED:
		// The active open's tuple is complete (see SYN_SENT).
		p = bpf_map_lookup_elem(&conns, &k);
		if (!p || !p->pending)
			return 0;
		p->pending = 0;
		p->sport = sk->__sk_common.skc_num;
		emit_btf(sk, p, EV_CONNECT, IPPROTO_TCP);
		return 0;
	case TCP_FIN_WAIT1:
	case TCP_LAST_ACK: {
		// The holder closed (or shut down) its end: the FIN goes out in
		// its own context, before it exits. A one-shot client's socket
		// is released here, while TCP_CLOSE may come much later (when the
		// peer closes); a socket that outlives its owner (inherited by a
		// child) sends no FIN when the owner exits. Announce it as a
		// close; TCP_CLOSE later removes the record.
		if (oldstate != TCP_ESTABLISHED && oldstate != TCP_SYN_RECV && newstate == TCP_FIN_WAIT1)
			return 0;
		p = bpf_map_lookup_elem(&conns, &k);
		if (!p || p->pending)
			return 0;
		__u16 port = sk->__sk_common.skc_num;
		if (port != 0)
			bump_port(port);
		// Once announced, the owner's later CLOSE says nothing new: it
		// is not announced again unless the owner changes in between
		// (a new accept or connect of the socket).
		if (emit_btf(sk, p, EV_CLOSE, IPPROTO_TCP))
			p->closed = 1;
		return 0;
	}
	case TCP_CLOSE: {
		struct owner c = {};
		bool conn = false;
		p = 0;
		if (oldstate == TCP_LISTEN) {
			p = sk_owner(sk);
		} else {
			struct owner *q = bpf_map_lookup_elem(&conns, &k);
			if (q) {
				__builtin_memcpy(&c, q, sizeof(c));
				bpf_map_delete_elem(&conns, &k);
				conn = !c.pending;
			}
		}
		__u16 port = sk->__sk_common.skc_num;
		if (port == 0 && conn)
			port = c.sport;
		if (port == 0 && p)
			port = p->sport;
		if (port == 0 && oldstate == TCP_SYN_SENT)
			// An attempt that failed (refused, timed out):
			// inet_put_port cleared skc_num, but the port stays in
			// inet_sport. sys_exit_connect announces the attempt.
			port = bpf_ntohs(BPF_CORE_READ((struct inet_sock *)sk, inet_sport));
		if (port != 0)
			bump_port(port);
		if (conn && !c.closed)
			emit_btf(sk, &c, EV_CLOSE, IPPROTO_TCP);
		if (!p || p->closed)
			return 0;
		// The listener's record stays with the socket (freed with
		// it), marked closed.
		emit_btf(sk, p, EV_CLOSE, IPPROTO_TCP);
		p->closed = 1;
		return 0;
	}
	}
	return 0;
}

// on_accept records the connection accept()/accept4() returned (fd) as
// owned by the accepting task: the worker that took it from the queue,
// not the process that created the listener.
static __always_inline int on_accept(long fd)
{
	struct sock *sk = fd_sock(fd);
	if (!sk || !inet_proto(sk, IPPROTO_TCP))
		return 0;
	struct owner o = {};
	current_owner(&o);
	o.sport = BPF_CORE_READ(sk, __sk_common.skc_num);
	__u64 k = (__u64)sk;
	if (bpf_map_update_elem(&conns, &k, &o, BPF_ANY) != 0)
		count(1); // its close will not be announced
	emit(sk, &o, EV_ACCEPT, IPPROTO_TCP);
	return 0;
}

// The classic syscall-exit tracepoint record: the common header, the
// syscall number, then the return value. (No entry tracepoint is attached:
// an exit reads the arguments it needs with syscall_arg0.)
struct sys_exit_ctx {
	__u64 common;
	long nr;
	long ret;
};

SEC("tracepoint/syscalls/sys_exit_accept4")
int sys_exit_accept4(struct sys_exit_ctx *ctx) { return on_accept(ctx->ret); }

SEC("tracepoint/syscalls/sys_exit_accept")
int sys_exit_accept(struct sys_exit_ctx *ctx) { return on_accept(ctx->ret); }

// udp_use records the current task as the user of UDP socket sk, unless
// it is its recorded user already and the tuple did not change (the common
// case: one storage lookup, a compare and, every REFRESH_NS, a record).
//
// store is the socket as the storage helper takes it (the program's own
// typed pointer), sk the same socket as an address to read from.
static __always_inline int udp_use(void *store, const struct sock *sk, __u32 sig, __u8 type)
{
	__u32 pid = bpf_get_current_pid_tgid() >> 32;
	struct owner *p = bpf_sk_storage_get(&socks, store, 0, 0);
	__u64 now = bpf_ktime_get_ns();
	if (p && p->pid == pid && p->sig == sig && !p->bound) {
		if (now - p->last_emit_ns <= REFRESH_NS)
			return 0;
		p->last_emit_ns = now;
		emit(sk, p, EV_SEND_RECV, IPPROTO_UDP);
		return 0;
	}
	struct owner o = {};
	o.sport = BPF_CORE_READ(sk, __sk_common.skc_num);
	if (o.sport == 0)
		return 0; // not bound yet: the kernel binds it on first use
	if (!p) {
		p = bpf_sk_storage_get(&socks, store, 0, BPF_SK_STORAGE_GET_F_CREATE);
		if (!p)
			return 0;
	}
	current_owner(&o);
	o.last_emit_ns = now;
	o.sig = sig;
	__builtin_memcpy(p, &o, sizeof(o));
	emit(sk, &o, type, IPPROTO_UDP);
	return 0;
}

// syscall_arg0 is the first argument of the current task's system call,
// read at its exit from the registers saved at its entry: an exit hook
// needs no entry hook (which would put every system call on the host on
// the slow path of syscall entry).
static __always_inline long syscall_arg0(void)
{
	struct pt_regs *regs = (struct pt_regs *)bpf_task_pt_regs(bpf_get_current_task_btf());
	if (bpf_core_field_exists(((struct pt_regs___arm64 *)0)->orig_x0))
		return BPF_CORE_READ((struct pt_regs___arm64 *)regs, orig_x0);
	if (bpf_core_field_exists(((struct pt_regs___x86 *)0)->di))
		return BPF_CORE_READ((struct pt_regs___x86 *)regs, di);
	return -1; // another architecture: connect() is not announced
}

// connect() returned, in the connecting task.
//
// TCP: its SYN is out and its source port chosen, so the tuple is complete
// whether the connection is established (a blocking connect), pending (a
// non-blocking one, EINPROGRESS) or failed (refused, timed out: CLOSE, the
// port still in inet_sport). A pending or failed attempt used the tuple,
// so it is announced too, once: ESTABLISHED may have announced it already.
//
// UDP: the kernel bound the socket (autobind) and set its peer during the
// call, so it is announced here, with the calling task as its owner.
// Nothing per datagram is needed for it afterwards (sends on a connected
// socket carry no address, so the cgroup hooks below do not run for them).
SEC("tracepoint/syscalls/sys_exit_connect")
int sys_exit_connect(struct sys_exit_ctx *ctx)
{
	// A connect can replace a socket's peer (a UDP reconnect).
	bump_current();
	struct sock *sk = fd_sock(syscall_arg0());
	if (!sk)
		return 0;
	__u16 family = BPF_CORE_READ(sk, __sk_common.skc_family);
	if (family != AF_INET && family != AF_INET6)
		return 0;
	__u8 proto = BPF_CORE_READ(sk, sk_protocol);
	struct owner o = {};
	if (proto == IPPROTO_TCP) {
		__u8 state = BPF_CORE_READ(sk, __sk_common.skc_state);
		__u64 k = (__u64)sk;
		if (state == TCP_SYN_SENT || state == TCP_ESTABLISHED) {
			struct owner *p = bpf_map_lookup_elem(&conns, &k);
			if (p && !p->pending)
				return 0; // announced at ESTABLISHED
			current_owner(&o);
			o.sport = BPF_CORE_READ(sk, __sk_common.skc_num);
			if (o.sport == 0)
				return 0;
			if (bpf_map_update_elem(&conns, &k, &o, BPF_ANY) != 0)
				count(1); // its close will not be announced
			emit(sk, &o, EV_CONNECT, IPPROTO_TCP);
			return 0;
		}
		if (state != TCP_CLOSE || BPF_CORE_READ(sk, __sk_common.skc_dport) == 0)
			return 0; // no SYN went out: no tuple was used
		current_owner(&o);
		o.sport = bpf_ntohs(BPF_CORE_READ((struct inet_sock *)sk, inet_sport));
		if (o.sport == 0)
			return 0;
		emit(sk, &o, EV_CLOSE, IPPROTO_TCP);
		return 0;
	}
	if (proto != IPPROTO_UDP || ctx->ret != 0)
		return 0;
	current_owner(&o);
	o.sport = BPF_CORE_READ(sk, __sk_common.skc_num);
	emit(sk, &o, EV_UDP_CONNECT, IPPROTO_UDP);
	return 0;
}

// bsk_sig summarises the tuple like sk_sig, from the sendmsg hooks' view
// of the socket, whose fields are plain loads. Each field is loaded on its
// own from a constant offset, without a branch (whose loads the compiler
// would merge through a moved pointer, which the verifier refuses); the
// IPv6 fields of an IPv4 socket do not change over its life either.
#define CTX_U32(b, f) (*(volatile __u32 *)&(b)->f)
static __always_inline __u32 bsk_sig(const struct bpf_sock *b)
{
	return CTX_U32(b, src_port) ^ (CTX_U32(b, dst_port) << 16) ^
	       CTX_U32(b, dst_ip4) ^ (CTX_U32(b, src_ip4) << 1) ^
	       CTX_U32(b, dst_ip6[0]) ^ CTX_U32(b, dst_ip6[1]) ^ CTX_U32(b, dst_ip6[2]) ^
	       CTX_U32(b, dst_ip6[3]) ^ (CTX_U32(b, src_ip6[3]) << 2);
}

// kernel_sock is the address of the struct sock behind a cgroup hook's
// socket, to read with helpers (the context's pointer may not be offset).
static __always_inline const struct sock *kernel_sock(const void *b)
{
	__u64 addr = 0;
	bpf_probe_read_kernel(&addr, sizeof(addr), &b);
	return (const struct sock *)addr;
}

// Unconnected UDP. sendmsg runs, in the sender's context, only for UDP
// datagrams that carry an address (sendto/sendmsg with one), never for
// TCP, after the kernel bound the socket: it records a socket its first
// datagram bound (autobind), and a process that sends on a socket another
// one recorded. A recorded socket costs it one storage lookup and a
// compare per datagram. Hooks must return 1 (allow).
static __always_inline int on_sendmsg(struct bpf_sock_addr *ctx)
{
	struct bpf_sock *bsk = ctx->sk;
	if (!bsk)
		return 1;
	udp_use(bsk, kernel_sock(bsk), bsk_sig(bsk), EV_SEND_RECV);
	return 1;
}

SEC("cgroup/sendmsg4")
int udp4_sendmsg(struct bpf_sock_addr *ctx) { return on_sendmsg(ctx); }

SEC("cgroup/sendmsg6")
int udp6_sendmsg(struct bpf_sock_addr *ctx) { return on_sendmsg(ctx); }

// bind() of a UDP socket, in the binding task (post_bind runs once the
// port is taken): a receiver is recorded when it binds, not per datagram
// it receives. An unbound socket cannot receive, and the kernel binds one
// implicitly only for its first send (sendmsg above) or connect
// (sys_exit_connect). The record is a listener's (EV_LISTEN): it names the
// binder for the port only while the binder holds the socket, since a
// process it handed the socket to receives unseen. The binder's own first
// datagram sent makes it a use (sendmsg).
static __always_inline int on_post_bind(struct bpf_sock *ctx)
{
	if (CTX_U32(ctx, protocol) != IPPROTO_UDP)
		return 1;
	const struct sock *sk = kernel_sock(ctx);
	struct owner o = {};
	o.sport = BPF_CORE_READ(sk, __sk_common.skc_num);
	if (o.sport == 0)
		return 1;
	current_owner(&o);
	o.last_emit_ns = bpf_ktime_get_ns();
	o.bound = 1;
	struct owner *p = bpf_sk_storage_get(&socks, ctx, 0, BPF_SK_STORAGE_GET_F_CREATE);
	if (p)
		__builtin_memcpy(p, &o, sizeof(o));
	emit(sk, &o, EV_LISTEN, IPPROTO_UDP);
	return 1;
}

SEC("cgroup/post_bind4")
int udp4_post_bind(struct bpf_sock *ctx) { return on_post_bind(ctx); }

SEC("cgroup/post_bind6")
int udp6_post_bind(struct bpf_sock *ctx) { return on_post_bind(ctx); }

// Where the cgroup hooks cannot be attached to the root cgroup (no cgroup2,
// or a cgroup namespace), UDP falls back to the send and receive
// tracepoints, which run on every message of every protocol.
static __always_inline int on_io(struct sock *sk)
{
	if (!sk || sk->sk_protocol != IPPROTO_UDP)
		return 0;
	__u16 family = sk->__sk_common.skc_family;
	if (family != AF_INET && family != AF_INET6)
		return 0;
	return udp_use(sk, sk, sk_sig(sk), EV_SEND_RECV);
}

SEC("tp_btf/sock_send_length")
int BPF_PROG(sock_send_length, struct sock *sk, int ret, int flags)
{
	return on_io(sk);
}

SEC("tp_btf/sock_recv_length")
int BPF_PROG(sock_recv_length, struct sock *sk, int ret, int flags)
{
	return on_io(sk);
}

// File-descriptor changes of the current process (see pid_epoch), counted
// when the call returns: a counter read before the descriptor was gone
// then differs from any read after.
SEC("tracepoint/syscalls/sys_exit_close")
int sys_exit_close(void *ctx) { return bump_current(); }

SEC("tracepoint/syscalls/sys_exit_close_range")
int sys_exit_close_range(void *ctx) { return bump_current(); }

SEC("tracepoint/syscalls/sys_exit_dup2")
int sys_exit_dup2(void *ctx) { return bump_current(); }

SEC("tracepoint/syscalls/sys_exit_dup3")
int sys_exit_dup3(void *ctx) { return bump_current(); }

// exec closed the close-on-exec descriptors before this runs.
SEC("tp_btf/sched_process_exec")
int BPF_PROG(sched_process_exec, struct task_struct *p, pid_t old_pid, void *bprm)
{
	return bump_current();
}

// io_uring closes descriptors without a system call of its own
// (IORING_OP_CLOSE, possibly completed by a kernel worker, possibly with
// no completion event): the submitter's counter proves nothing from then
// on. The submitter (or its SQPOLL thread) is a thread of the process
// whose descriptor table the close acts on.
//
// An accept through io_uring makes a connection no accept() return
// records: user space counts them (uring_accepts) and then keeps treating
// an open listener as a possible unrecorded user of a closed tuple.
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} uring_accepts SEC(".maps");

SEC("tp_btf/io_uring_submit_req")
int BPF_PROG(io_uring_submit_req, struct io_kiocb *req)
{
	__u8 op = BPF_CORE_READ(req, opcode);
	if (op == IORING_OP_CLOSE) {
		mark_unusable(bpf_get_current_pid_tgid() >> 32);
	} else if (op == IORING_OP_ACCEPT) {
		__u32 zero = 0;
		__u64 *n = bpf_map_lookup_elem(&uring_accepts, &zero);
		if (n)
			__sync_fetch_and_add(n, 1);
	}
	return 0;
}

// A new process. One that shares its parent's descriptor table (clone
// with CLONE_FILES, without CLONE_THREAD): a close by either changes both
// tables while only the closer's counter moves, so neither proves anything
// from now on. One with a copy of it (fork): the parent's last_fork.
SEC("tp_btf/sched_process_fork")
int BPF_PROG(sched_process_fork, struct task_struct *parent, struct task_struct *child)
{
	if (child->tgid == parent->tgid)
		return 0; // a thread
	if (child->files == parent->files) {
		// One descriptor table, two processes: either may close.
		mark_unusable(parent->tgid);
		mark_unusable(child->tgid);
		return 0;
	}
	// The child has a copy of the parent's table. It is in /proc already,
	// so a walk that read the clock after this increment sees it.
	__u32 zero = 0;
	__u32 *clock = bpf_map_lookup_elem(&fork_clock, &zero);
	struct pid_slot *v = pid_slot(parent->tgid);
	if (clock && v) {
		// Read after the increment (v1 has no fetch-and-add result): at
		// least this fork's value, so newer than any reading before it.
		__sync_fetch_and_add(clock, 1);
		*(volatile __u32 *)&v->last_fork = *(volatile __u32 *)clock;
	}
	return 0;
}

// Runs in the exiting thread for every thread, before the kernel releases
// its descriptor table. When the whole thread group is dead, the counter
// proves nothing until the process is released (sched_process_free of its
// leader), and user space is told: the process holds no socket any more,
// so its open records end here.
SEC("tp_btf/sched_process_exit")
int BPF_PROG(sched_process_exit, struct task_struct *p)
{
	bump_current();
	struct task_struct *task = bpf_get_current_task_btf();
	if (task->signal->live.counter != 0)
		return 0;
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	__u8 one = 1;
	if (bpf_map_update_elem(&exiting, &tgid, &one, BPF_NOEXIST) == 0) {
		struct pid_slot *v = pid_slot(tgid);
		if (v)
			__sync_fetch_and_add(&v->unusable, 1);
	} else {
		// The table is full (or the tgid is there already): prove
		// nothing for this slot any more rather than too much.
		mark_unusable(tgid);
	}
	struct event *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e) {
		count(0);
		return 0;
	}
	__builtin_memset(e, 0, sizeof(*e));
	e->pid = tgid;
	e->start_ns = task->group_leader->start_boottime;
	e->ts_ns = bpf_ktime_get_boot_ns();
	e->type = EV_EXIT;
	bpf_ringbuf_submit(e, wakeup_flags());
	return 0;
}

// The task is being freed: for a process's leader after the whole thread
// group exited and was reaped, so its descriptor table is gone.
SEC("tp_btf/sched_process_free")
int BPF_PROG(sched_process_free, struct task_struct *p)
{
	if (p->pid != p->tgid)
		return 0;
	__u32 tgid = p->tgid;
	if (bpf_map_delete_elem(&exiting, &tgid) != 0)
		return 0;
	struct pid_slot *v = pid_slot(tgid);
	if (v) {
		__sync_fetch_and_add(&v->epoch, 1);
		__sync_fetch_and_add(&v->unusable, -1);
	}
	return 0;
}
