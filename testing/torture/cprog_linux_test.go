//go:build linux

package torture

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// The soak client and the pthread_exit helper are C: a client started 50
// times a second must cost little (this test binary's init is heavy), and
// a main thread that exits while others live is plain C.

// soakClientC connects to argv[1]:argv[2] (from local port argv[3] if
// given, SO_REUSEADDR), writes its PID and a newline, and exits.
const soakClientC = `
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>
int main(int argc, char **argv) {
	int s = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in sa = {0};
	sa.sin_family = AF_INET;
	sa.sin_port = htons(atoi(argv[2]));
	inet_pton(AF_INET, argv[1], &sa.sin_addr);
	if (argc > 3) {
		int one = 1;
		struct sockaddr_in l = sa;
		l.sin_port = htons(atoi(argv[3]));
		setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
		if (bind(s, (struct sockaddr *)&l, sizeof l)) return 3;
	}
	if (connect(s, (struct sockaddr *)&sa, sizeof sa)) return 2;
	char b[32];
	int n = snprintf(b, sizeof b, "%d\n", getpid());
	if (write(s, b, n) != n) return 4;
	close(s);
	return 0;
}
`

// pthreadExitC connects to argv[1]:argv[2], starts a thread that holds the
// process until stdin closes, prints "<pid> <local port>", and ends its
// main thread with pthread_exit: /proc/<pid>/fd is then empty while
// /proc/<pid>/task/<tid>/fd still lists the socket.
const pthreadExitC = `
#include <arpa/inet.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>
static void *hold(void *a) {
	char b[16];
	while (read(0, b, sizeof b) > 0) {}
	exit(0);
}
int main(int argc, char **argv) {
	int s = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in sa = {0}, l;
	socklen_t n = sizeof l;
	sa.sin_family = AF_INET;
	sa.sin_port = htons(atoi(argv[2]));
	inet_pton(AF_INET, argv[1], &sa.sin_addr);
	if (connect(s, (struct sockaddr *)&sa, sizeof sa)) { perror("connect"); return 1; }
	getsockname(s, (struct sockaddr *)&l, &n);
	pthread_t t;
	pthread_create(&t, 0, hold, 0);
	printf("%d %d\n", getpid(), ntohs(l.sin_port));
	fflush(stdout);
	pthread_exit(0);
}
`

// compileC builds src with gcc into the test's temp dir, skipping the test
// when gcc is missing.
func compileC(t *testing.T, name, src string) string {
	t.Helper()
	gcc, err := exec.LookPath("gcc")
	if err != nil {
		t.Skip("gcc not installed (apt-get install gcc)")
	}
	dir := t.TempDir()
	c := filepath.Join(dir, name+".c")
	if err := os.WriteFile(c, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, name)
	if out, err := exec.Command(gcc, "-O2", "-pthread", "-o", bin, c).CombinedOutput(); err != nil {
		t.Fatalf("gcc %s: %v\n%s", name, err, out)
	}
	return bin
}
