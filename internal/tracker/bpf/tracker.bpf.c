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

// Event types, mirrored by the Go side.
#define EV_CONNECT 1     // active open reached ESTABLISHED: owner = connecting task
#define EV_ACCEPT 2      // passive open reached ESTABLISHED: owner = listener's owner
#define EV_SEND_RECV 3   // a send/recv in process context (server worker, UDP)
#define EV_CLOSE 4       // TCP socket went to CLOSE
#define EV_LISTEN 5      // TCP listener created
#define EV_EXIT 6        // the last thread of a process exited (no socket)

// Where the owner of an event came from.
#define SRC_TASK 1       // the current task (process context)
#define SRC_LISTENER 2   // inherited from the listening socket

// UDP sockets never change state: re-announce an active socket at most
// this often so the user-space table can age out idle ones.
#define REFRESH_NS (10ULL * 1000 * 1000 * 1000)

// Waking the reader for every event costs more than the event itself: wake
// it only once this much is pending; it also polls (see Go's pollInterval).
#define WAKEUP_BYTES (64 * 1024)

struct owner {
	__u64 start_ns; // group leader's start_boottime
	__u64 last_emit_ns;
	__u32 pid;      // tgid
	__u32 sig;      // tuple signature at the last announcement
	__u16 sport;    // local port once known: it is cleared before CLOSE
	__u8 source;
	__u8 closed;    // this owner's close was announced (FIN or CLOSE)
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

struct listen_key {
	__u32 netns;
	__u16 port;
	__u16 family;
};

// The owner of each tracked socket, stored in the socket itself: a lookup
// is a pointer load (sending and receiving run it on every message), the
// record is freed with the socket, and a recycled struct sock starts
// empty. Not cloned into accepted sockets (no BPF_F_CLONE): an accepted
// connection inherits its listener's owner explicitly.
struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct owner);
} socks SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, struct listen_key);
	__type(value, struct owner);
} listeners SEC(".maps");

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

// pid_epoch[tgid % 65536] is bumped when that process closes or replaces a
// file descriptor (close, close_range, dup2, dup3), calls connect, execs or
// one of its threads exits. Collisions only cost the reader a check.
#define PID_EPOCH_ENTRIES 65536
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(map_flags, BPF_F_MMAPABLE);
	__uint(max_entries, PID_EPOCH_ENTRIES);
	__type(key, __u32);
	__type(value, __u32);
} pid_epoch SEC(".maps");

static __always_inline void bump_port(__u32 port)
{
	__u32 idx = port & 0xffff;
	__u32 *v = bpf_map_lookup_elem(&port_epoch, &idx);
	if (v)
		__sync_fetch_and_add(v, 1);
}

static __always_inline int bump_current(void)
{
	__u32 idx = (bpf_get_current_pid_tgid() >> 32) & 0xffff;
	__u32 *v = bpf_map_lookup_elem(&pid_epoch, &idx);
	if (v)
		__sync_fetch_and_add(v, 1);
	return 0;
}

// Counters: 0 = ring buffer full (events dropped).
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

static __always_inline __u32 sk_netns(const struct sock *sk)
{
	return BPF_CORE_READ(sk, __sk_common.skc_net.net, ns.inum);
}

// sig summarises the socket's tuple so that a recycled struct sock (a new
// UDP socket at the same address, or a reconnect) is announced again.
static __always_inline __u32 sk_sig(const struct sock *sk)
{
	__u32 s = sk->__sk_common.skc_portpair;
	if (sk->__sk_common.skc_family == AF_INET6) {
		struct in6_addr a = {};
		bpf_probe_read_kernel(&a, sizeof(a), &sk->__sk_common.skc_v6_daddr);
		s ^= a.in6_u.u6_addr32[0] ^ a.in6_u.u6_addr32[1] ^ a.in6_u.u6_addr32[2] ^ a.in6_u.u6_addr32[3];
		bpf_probe_read_kernel(&a, sizeof(a), &sk->__sk_common.skc_v6_rcv_saddr);
		s ^= (a.in6_u.u6_addr32[3] << 1);
	} else {
		s ^= sk->__sk_common.skc_daddr ^ (sk->__sk_common.skc_rcv_saddr << 1);
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

static __always_inline void current_owner(struct owner *o)
{
	struct task_struct *task = bpf_get_current_task_btf();
	struct task_struct *leader = task->group_leader;

	o->pid = bpf_get_current_pid_tgid() >> 32;
	o->start_ns = leader->start_boottime;
	o->source = SRC_TASK;
	bpf_probe_read_kernel_str(o->comm, sizeof(o->comm), leader->comm);
}

// emit announces o as the owner of sk; false if the ring was full.
static __always_inline bool emit(const struct sock *sk, const struct owner *o, __u8 type, __u8 proto, __u8 state)
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
	e->netns = sk_netns(sk);
	e->type = type;
	e->proto = proto;
	e->source = o->source;
	e->state = state;
	e->family = family;
	e->sport = sk->__sk_common.skc_num;
	if (e->sport == 0)
		e->sport = o->sport; // TCP_CLOSE: inet_put_port already ran
	e->dport = bpf_ntohs(sk->__sk_common.skc_dport);
	e->pad = 0;
	__builtin_memcpy(e->comm, o->comm, sizeof(e->comm));
	if (family == AF_INET6) {
		bpf_probe_read_kernel(e->saddr, 16, &sk->__sk_common.skc_v6_rcv_saddr);
		bpf_probe_read_kernel(e->daddr, 16, &sk->__sk_common.skc_v6_daddr);
	} else {
		__builtin_memset(e->saddr, 0, 16);
		__builtin_memset(e->daddr, 0, 16);
		__u32 s = sk->__sk_common.skc_rcv_saddr;
		__u32 d = sk->__sk_common.skc_daddr;
		__builtin_memcpy(e->saddr, &s, 4);
		__builtin_memcpy(e->daddr, &d, 4);
	}
	__u64 flags = bpf_ringbuf_query(&events, BPF_RB_AVAIL_DATA) >= WAKEUP_BYTES ? BPF_RB_FORCE_WAKEUP : BPF_RB_NO_WAKEUP;
	bpf_ringbuf_submit(e, flags);
	return true;
}

SEC("tp_btf/inet_sock_set_state")
int BPF_PROG(inet_sock_set_state, const struct sock *sk, const int oldstate, const int newstate)
{
	// Most transitions (FIN_WAIT2, CLOSE_WAIT, TIME_WAIT, ...) are of no
	// interest: leave before touching the socket.
	if (newstate != TCP_SYN_SENT && newstate != TCP_ESTABLISHED &&
	    newstate != TCP_CLOSE && newstate != TCP_LISTEN &&
	    newstate != TCP_FIN_WAIT1 && newstate != TCP_LAST_ACK)
		return 0;
	__u16 proto = sk->sk_protocol;
	if (proto != IPPROTO_TCP)
		return 0;
	__u16 family = sk->__sk_common.skc_family;
	if (family != AF_INET && family != AF_INET6)
		return 0;

	struct owner o = {};
	struct owner *p;

	switch (newstate) {
	case TCP_SYN_SENT:
		// connect(): process context of the connecting task. The source
		// port is not chosen yet; the tuple is completed at ESTABLISHED.
		p = sk_owner_new(sk);
		if (!p)
			return 0;
		current_owner(&o);
		__builtin_memcpy(p, &o, sizeof(o));
		return 0;
	case TCP_LISTEN: {
		// listen(): process context. Remember the owner by port so that
		// connections accepted in softirq inherit it until a worker
		// reads or writes.
		struct listen_key lk = {
			.netns = sk_netns(sk),
			.port = sk->__sk_common.skc_num,
			.family = family,
		};
		current_owner(&o);
		o.sport = lk.port;
		bpf_map_update_elem(&listeners, &lk, &o, BPF_ANY);
		p = sk_owner_new(sk);
		if (p)
			__builtin_memcpy(p, &o, sizeof(o));
		emit(sk, &o, EV_LISTEN, IPPROTO_TCP, newstate);
		return 0;
	}
	case TCP_ESTABLISHED: {
		p = sk_owner(sk);
		if (oldstate == TCP_SYN_SENT) {
			if (!p)
				return 0; // connect() predates the tracker
			p->last_emit_ns = bpf_ktime_get_ns();
			p->sig = sk_sig(sk);
			p->sport = sk->__sk_common.skc_num;
			emit(sk, p, EV_CONNECT, IPPROTO_TCP, newstate);
			return 0;
		}
		if (p)
			return 0;
		// Passive open (softirq): inherit the listener's owner.
		struct listen_key lk = {
			.netns = sk_netns(sk),
			.port = sk->__sk_common.skc_num,
			.family = family,
		};
		struct owner *l = bpf_map_lookup_elem(&listeners, &lk);
		if (!l)
			return 0;
		__builtin_memcpy(&o, l, sizeof(o));
		o.source = SRC_LISTENER;
		o.last_emit_ns = bpf_ktime_get_ns();
		o.sig = sk_sig(sk);
		o.sport = sk->__sk_common.skc_num;
		o.closed = 0;
		p = sk_owner_new(sk);
		if (!p)
			return 0;
		__builtin_memcpy(p, &o, sizeof(o));
		emit(sk, &o, EV_ACCEPT, IPPROTO_TCP, newstate);
		return 0;
	}
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
		p = sk_owner(sk);
		if (!p)
			return 0;
		__u16 port = sk->__sk_common.skc_num;
		if (port != 0)
			bump_port(port);
		// Once announced, the owner's later CLOSE says nothing new (user
		// space ignores it): it is not announced again unless the owner
		// changes in between (see on_io).
		if (emit(sk, p, EV_CLOSE, IPPROTO_TCP, newstate))
			p->closed = 1;
		return 0;
	}
	case TCP_CLOSE: {
		p = sk_owner(sk);
		__u16 port = sk->__sk_common.skc_num;
		if (port == 0 && p)
			port = p->sport;
		if (port != 0)
			bump_port(port);
		if (!p)
			return 0;
		if (oldstate == TCP_LISTEN) {
			struct listen_key lk = {
				.netns = sk_netns(sk),
				.port = sk->__sk_common.skc_num,
				.family = family,
			};
			struct owner *l = bpf_map_lookup_elem(&listeners, &lk);
			if (l && l->pid == p->pid && l->start_ns == p->start_ns)
				bpf_map_delete_elem(&listeners, &lk);
		}
		if (!p->closed)
			emit(sk, p, EV_CLOSE, IPPROTO_TCP, newstate);
		// The record stays with the socket (freed with it), marked closed:
		// a later read of the closed socket by its owner is not news, and
		// a new connect() or listen() on it replaces the owner.
		p->closed = 1;
		return 0;
	}
	}
	return 0;
}

// A send or receive runs in the context of the task using the socket: it
// attributes accepted TCP connections to the worker that serves them and
// UDP sockets (keyed by local address and port) to their user. It runs on
// every message on the host, so the common case, the socket's recorded
// owner using it again, costs two loads, the socket-storage lookup and a
// compare, and writes nothing.
static __always_inline int on_io(struct sock *sk)
{
	if (!sk)
		return 0;
	__u16 proto = sk->sk_protocol;
	if (proto != IPPROTO_TCP && proto != IPPROTO_UDP)
		return 0;
	__u16 family = sk->__sk_common.skc_family;
	if (family != AF_INET && family != AF_INET6)
		return 0;

	__u32 pid = bpf_get_current_pid_tgid() >> 32;
	struct owner *p = sk_owner(sk);
	if (p && p->pid == pid && p->source == SRC_TASK) {
		// Known owner. A TCP socket's tuple is fixed from connect or
		// accept on (a reconnect goes through SYN_SENT, which replaces
		// the record), and a closed TCP record is closed for good.
		if (proto == IPPROTO_TCP)
			return 0;
		// UDP has no close event: re-announce now and then, and when
		// the socket was connected elsewhere or bound again.
		__u64 now = bpf_ktime_get_ns();
		__u32 sig = sk_sig(sk);
		if (p->sig == sig) {
			if (now - p->last_emit_ns > REFRESH_NS) {
				p->last_emit_ns = now;
				emit(sk, p, EV_SEND_RECV, proto, sk->__sk_common.skc_state);
			}
			return 0;
		}
	}
	if (proto == IPPROTO_TCP) {
		// Only a connection with a local port can be attributed: not a
		// listener, nor a socket that is closed (or not connected yet).
		__u8 state = sk->__sk_common.skc_state;
		if (state == TCP_LISTEN || state == TCP_CLOSE || state == TCP_SYN_SENT)
			return 0;
		if (sk->__sk_common.skc_num == 0)
			return 0;
	}
	if (!p) {
		p = sk_owner_new(sk);
		if (!p)
			return 0;
	}
	struct owner o = {};
	current_owner(&o);
	o.last_emit_ns = bpf_ktime_get_ns();
	o.sig = sk_sig(sk);
	o.sport = sk->__sk_common.skc_num;
	__builtin_memcpy(p, &o, sizeof(o));
	emit(sk, &o, EV_SEND_RECV, proto, sk->__sk_common.skc_state);
	return 0;
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

// File-descriptor changes of the current process (see pid_epoch). Classic
// syscall tracepoints: one map increment, no task walk.
SEC("tracepoint/syscalls/sys_enter_close")
int sys_enter_close(void *ctx) { return bump_current(); }

SEC("tracepoint/syscalls/sys_enter_close_range")
int sys_enter_close_range(void *ctx) { return bump_current(); }

SEC("tracepoint/syscalls/sys_enter_dup2")
int sys_enter_dup2(void *ctx) { return bump_current(); }

SEC("tracepoint/syscalls/sys_enter_dup3")
int sys_enter_dup3(void *ctx) { return bump_current(); }

SEC("tracepoint/syscalls/sys_enter_connect")
int sys_enter_connect(void *ctx) { return bump_current(); }

SEC("tp_btf/sched_process_exec")
int BPF_PROG(sched_process_exec, struct task_struct *p, pid_t old_pid, void *bprm)
{
	return bump_current();
}

// Runs in the exiting thread for every thread; the last one releases the
// descriptor table. When the whole thread group is dead (signal->live
// dropped to 0 just before), tell user space: the process holds no socket
// any more, so its open records end here.
SEC("tp_btf/sched_process_exit")
int BPF_PROG(sched_process_exit, struct task_struct *p)
{
	bump_current();
	struct task_struct *task = bpf_get_current_task_btf();
	if (task->signal->live.counter != 0)
		return 0;
	struct event *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e) {
		count(0);
		return 0;
	}
	__builtin_memset(e, 0, sizeof(*e));
	e->pid = bpf_get_current_pid_tgid() >> 32;
	e->start_ns = task->group_leader->start_boottime;
	e->ts_ns = bpf_ktime_get_boot_ns();
	e->type = EV_EXIT;
	__u64 flags = bpf_ringbuf_query(&events, BPF_RB_AVAIL_DATA) >= WAKEUP_BYTES ? BPF_RB_FORCE_WAKEUP : BPF_RB_NO_WAKEUP;
	bpf_ringbuf_submit(e, flags);
	return 0;
}
