//go:build linux

package torture

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// C helpers of the class tests (classes_linux_test.go): a process that
// changes its user, name and arguments; a churn client that stays until
// the server has run its event; a process with a very large fd table.
// Plain C so each does exactly the system calls the case is about.

// detailsC listens on 127.0.0.1:argv[3], connects to argv[1]:argv[2],
// prints "<pid> <local port of the connection>", then on the stdin line
// "change" renames itself (PR_SET_NAME and its argv memory overwritten
// with "clrenamed"), becomes uid/gid 65534 and answers "ok". It exits
// when stdin closes.
const detailsC = `
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <grp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <unistd.h>
int main(int argc, char **argv) {
	int one = 1;
	int l = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in la = {0}, sa = {0}, me;
	socklen_t n = sizeof me;
	la.sin_family = AF_INET;
	la.sin_port = htons(atoi(argv[3]));
	inet_pton(AF_INET, "127.0.0.1", &la.sin_addr);
	setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
	if (bind(l, (struct sockaddr *)&la, sizeof la) || listen(l, 16)) { perror("listen"); return 1; }
	int s = socket(AF_INET, SOCK_STREAM, 0);
	sa.sin_family = AF_INET;
	sa.sin_port = htons(atoi(argv[2]));
	inet_pton(AF_INET, argv[1], &sa.sin_addr);
	if (connect(s, (struct sockaddr *)&sa, sizeof sa)) { perror("connect"); return 1; }
	getsockname(s, (struct sockaddr *)&me, &n);
	printf("%d %d\n", getpid(), ntohs(me.sin_port));
	fflush(stdout);
	char line[64];
	while (fgets(line, sizeof line, stdin)) {
		if (strncmp(line, "change", 6) == 0) {
			char *start = argv[0], *end = argv[argc - 1] + strlen(argv[argc - 1]);
			memset(start, 0, end - start);
			snprintf(start, end - start, "clrenamed");
			if (prctl(PR_SET_NAME, "clrenamed", 0, 0, 0)) { perror("prctl"); return 1; }
			if (setgroups(0, NULL) || setgid(65534) || setuid(65534)) { perror("setuid"); return 1; }
			prctl(PR_SET_DUMPABLE, 1, 0, 0, 0);
			printf("ok\n");
			fflush(stdout);
		}
	}
	return 0;
}
`

// waitClientC connects to argv[1]:argv[2], writes its PID and a newline,
// and stays until the server closes the connection (bounded by an alarm),
// so that the event about it is run while it still holds its socket.
const waitClientC = `
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>
int main(int argc, char **argv) {
	alarm(30);
	int s = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in sa = {0};
	sa.sin_family = AF_INET;
	sa.sin_port = htons(atoi(argv[2]));
	inet_pton(AF_INET, argv[1], &sa.sin_addr);
	if (connect(s, (struct sockaddr *)&sa, sizeof sa)) return 2;
	char b[32];
	int n = snprintf(b, sizeof b, "%d\n", getpid());
	if (write(s, b, n) != n) return 4;
	while (read(s, b, sizeof b) > 0) {}
	return 0;
}
`

// bigFDC raises RLIMIT_NOFILE to hold argv[1] descriptors (past the hard
// limit where it may: CAP_SYS_RESOURCE), fills its table with
// /dev/null opened again and again (each its own open file), prints "<pid> <descriptors opened>", then for each stdin line
// "dial <ip> <port>" makes (and keeps) a new connection and prints its
// local port. It exits when stdin closes.
const bigFDC = `
#include <arpa/inet.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>
int main(int argc, char **argv) {
	struct rlimit rl;
	int want = atoi(argv[1]), got = 0;
	getrlimit(RLIMIT_NOFILE, &rl);
	if (rl.rlim_max < (rlim_t)want + 64) {
		struct rlimit more = {want + 64, want + 64};
		if (setrlimit(RLIMIT_NOFILE, &more) == 0) rl = more;
	}
	rl.rlim_cur = rl.rlim_max;
	setrlimit(RLIMIT_NOFILE, &rl);
	for (; got < want; got++)
		if (open("/dev/null", O_RDONLY) < 0) break;
	printf("%d %d\n", getpid(), got);
	fflush(stdout);
	char ip[64];
	int port;
	while (scanf(" dial %63s %d", ip, &port) == 2) {
		int s = socket(AF_INET, SOCK_STREAM, 0);
		struct sockaddr_in sa = {0}, me;
		socklen_t n = sizeof me;
		sa.sin_family = AF_INET;
		sa.sin_port = htons(port);
		inet_pton(AF_INET, ip, &sa.sin_addr);
		if (s < 0 || connect(s, (struct sockaddr *)&sa, sizeof sa)) { printf("err\n"); fflush(stdout); continue; }
		getsockname(s, (struct sockaddr *)&me, &n);
		printf("%d\n", ntohs(me.sin_port));
		fflush(stdout);
	}
	return 0;
}
`

// cproc is a running C helper that answers one line per request.
type cproc struct {
	t     *testing.T
	name  string
	cmd   *exec.Cmd
	stdin io.WriteCloser
	lines chan string
}

// startCProg starts bin with args; it is stopped (stdin closed, then
// killed if it lingers) at cleanup.
func startCProg(t *testing.T, name, bin string, args ...string) *cproc {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Stderr = os.Stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	c := &cproc{t: t, name: name, cmd: cmd, stdin: in, lines: make(chan string, 16)}
	go func() {
		r := bufio.NewScanner(out)
		for r.Scan() {
			c.lines <- r.Text()
		}
		close(c.lines)
	}()
	t.Cleanup(func() {
		in.Close()
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	})
	return c
}

// line returns the helper's next output line; none within a minute is fatal.
func (c *cproc) line(what string) string {
	c.t.Helper()
	select {
	case l, ok := <-c.lines:
		if !ok {
			c.t.Fatalf("%s (%s): exited", c.name, what)
		}
		return strings.TrimSpace(l)
	case <-time.After(time.Minute):
		c.t.Fatalf("%s: no answer to %s within 1m", c.name, what)
	}
	return ""
}

// ask sends one request line and returns the answer.
func (c *cproc) ask(format string, args ...any) string {
	c.t.Helper()
	req := fmt.Sprintf(format, args...)
	if _, err := fmt.Fprintln(c.stdin, req); err != nil {
		c.t.Fatalf("%s: %s: %v", c.name, req, err)
	}
	return c.line(req)
}
