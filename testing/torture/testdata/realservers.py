#!/usr/bin/env python3
"""Real server shapes for realserver_linux_test.go, one per subcommand.

Every process writes one JSON line per fact to stdout (one os.write each,
so lines from several processes never interleave):
  {"ev":"listening","pid":P,"port":N}     the listener's creator
  {"ev":"worker","pid":P}                 a process that will accept
  {"ev":"accept","pid":P,"local":..,"remote":..}   P accepted that connection
  {"ev":"serve","pid":P,"local":..,"remote":..}    P serves it (fork per connection)
  {"ev":"parent_closed","pid":P,"remote":..}       the accepting parent closed its copy
  {"ev":"closed","pid":P,"remote":..}     P closed it after the peer did

  prefork LO HI K        parent binds and listens, forks K workers that each
                         accept on the inherited listener; the parent waits.
  activate LO HI         parent listens, starts a child service with the
                         listener passed as fd 3 (LISTEN_FDS style) and keeps
                         its own copy; the child accepts.
  forkconn LO HI HOLD    parent accepts, forks a child per connection, keeps
                         its copy HOLD seconds (0: closes it at once) then
                         closes it; the child closes the listener and serves.
Connections are held, echoing what the peer sends, until it closes. Every mode exits when stdin
closes (the parent kills its children).
"""
import json
import os
import random
import signal
import socket
import sys
import threading


def say(**kv):
    os.write(1, (json.dumps(kv) + "\n").encode())


def addr(a):
    return "[%s]:%d" % (a[0], a[1]) if ":" in a[0] else "%s:%d" % (a[0], a[1])


def listen(lo, hi):
    ports = list(range(lo, hi + 1))
    start = random.randrange(len(ports))
    for i in range(len(ports)):
        p = ports[(start + i) % len(ports)]
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            s.bind(("127.0.0.1", p))
        except OSError:
            s.close()
            continue
        s.listen(128)
        return s
    sys.exit("no free port in %d-%d" % (lo, hi))


def hold(c, pid):
    """Echo what the peer sends until it closes the connection."""
    remote = addr(c.getpeername())
    try:
        while True:
            b = c.recv(4096)
            if not b:
                break
            c.sendall(b)
    except OSError:
        pass
    c.close()
    say(ev="closed", pid=pid, remote=remote)


def accept_loop(ls):
    pid = os.getpid()
    say(ev="worker", pid=pid)
    while True:
        c, _ = ls.accept()
        say(ev="accept", pid=pid, local=addr(c.getsockname()), remote=addr(c.getpeername()))
        threading.Thread(target=hold, args=(c, pid), daemon=True).start()


def wait_stdin_then_kill(children):
    sys.stdin.read()
    for c in children:
        try:
            os.kill(c, signal.SIGKILL)
        except OSError:
            pass
    os._exit(0)


def die_with_parent():
    # The children read no stdin: they end when their parent does.
    try:
        import ctypes
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except Exception:
        pass


def prefork(lo, hi, k):
    ls = listen(lo, hi)
    say(ev="listening", pid=os.getpid(), port=ls.getsockname()[1])
    kids = []
    for _ in range(k):
        pid = os.fork()
        if pid == 0:
            die_with_parent()
            accept_loop(ls)
        kids.append(pid)
    wait_stdin_then_kill(kids)


def activate(lo, hi):
    import subprocess
    ls = listen(lo, hi)
    say(ev="listening", pid=os.getpid(), port=ls.getsockname()[1])
    fd = ls.fileno()
    # The service gets the listener as fd 3, the parent keeps ls open.
    def to3():
        os.dup2(fd, 3)
        die_with_parent()
    child = subprocess.Popen([sys.executable, __file__, "activated"], stdin=subprocess.DEVNULL,
                             pass_fds=(fd,), preexec_fn=to3, env=dict(os.environ, LISTEN_FDS="1"))
    wait_stdin_then_kill([child.pid])


def activated():
    assert os.environ.get("LISTEN_FDS") == "1"
    accept_loop(socket.socket(fileno=3))


def forkconn(lo, hi, hold_s):
    import time
    ls = listen(lo, hi)
    me = os.getpid()
    say(ev="listening", pid=me, port=ls.getsockname()[1])
    say(ev="worker", pid=me)
    # The children die with the parent (PR_SET_PDEATHSIG): no list of
    # PIDs that may be reused once they are reaped.
    threading.Thread(target=wait_stdin_then_kill, args=([],), daemon=True).start()
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # reap the children
    while True:
        c, _ = ls.accept()
        local, remote = addr(c.getsockname()), addr(c.getpeername())
        say(ev="accept", pid=me, local=local, remote=remote)
        pid = os.fork()
        if pid == 0:
            die_with_parent()
            ls.close()
            say(ev="serve", pid=os.getpid(), local=local, remote=remote)
            hold(c, os.getpid())
            os._exit(0)
        if hold_s > 0:
            time.sleep(hold_s)
        c.close()
        say(ev="parent_closed", pid=me, remote=remote)


def main():
    mode = sys.argv[1]
    if mode == "prefork":
        prefork(int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))
    elif mode == "activate":
        activate(int(sys.argv[2]), int(sys.argv[3]))
    elif mode == "activated":
        activated()
    elif mode == "forkconn":
        forkconn(int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]))
    else:
        sys.exit("unknown mode %r" % mode)


if __name__ == "__main__":
    main()
