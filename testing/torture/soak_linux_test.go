//go:build linux

package torture

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Scenario 7: ephemeral-port reuse under ordinary churn. Short-lived
// clients (a small C program) connect once to a listener in this process,
// send their PID and exit; each message becomes an event (source = the
// client, destination = the listener) run at once, as a pipeline would.
// Every answer for the source must be the PID the client sent, or nothing.
//
// Settings (environment):
//
//	NETPROCBEAT_SOAK=1             the long soak: default duration 4m
//	NETPROCBEAT_SOAK_DURATION      duration (default 45s, 4m with NETPROCBEAT_SOAK=1)
//	NETPROCBEAT_SOAK_RATE          new client processes per second (default 50)
//	NETPROCBEAT_SOAK_PORTS         if set, clients bind a source port from a pool
//	                               of this many (from 45000), forcing reuse fast
//
// It prints events, wrong, missed, lost (Run dropped or failed the event)
// and undelivered (clients that never delivered their PID).
func TestS07ChurnSoak(t *testing.T) {
	bin := compileC(t, "np11-soak-client", soakClientC)
	def := 45 * time.Second
	if os.Getenv("NETPROCBEAT_SOAK") == "1" {
		def = 4 * time.Minute
	}
	dur := envDuration("NETPROCBEAT_SOAK_DURATION", def)
	rate := envInt("NETPROCBEAT_SOAK_RATE", 50)
	pool := envInt("NETPROCBEAT_SOAK_PORTS", 0)
	trackers(t, func(t *testing.T, tracker string) {
		p := newProcessor(t, tracker)
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		lport := l.Addr().(*net.TCPAddr).Port
		self := os.Getpid()

		type msg struct {
			src, dst string
			pid      int
			at       time.Time
		}
		events := make(chan msg, 4096)
		var (
			mu                             sync.Mutex
			n, right, wrong, missed, lost  int
			dstWrong                       int
			wrongs                         []string
			spawned, spawnFail, clientFail atomic.Int64
			delivered                      atomic.Int64
		)
		var accepting sync.WaitGroup
		accepting.Add(1)
		go func() {
			defer accepting.Done()
			for {
				c, err := l.Accept()
				if err != nil {
					return
				}
				accepting.Add(1)
				go func() {
					defer accepting.Done()
					defer c.Close()
					_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
					line, err := bufio.NewReader(c).ReadString('\n')
					pid, perr := strconv.Atoi(strings.TrimSpace(line))
					if err != nil || perr != nil {
						return
					}
					delivered.Add(1)
					events <- msg{c.RemoteAddr().String(), c.LocalAddr().String(), pid, time.Now()}
				}()
			}
		}()
		var workers sync.WaitGroup
		for w := 0; w < 2; w++ {
			workers.Add(1)
			go func() {
				defer workers.Done()
				for m := range events {
					ev := newEvent(ap(m.src), ap(m.dst), m.at)
					out, err := p.Run(ev)
					mu.Lock()
					n++
					switch {
					case out == nil || err != nil:
						lost++
					default:
						sp, dp := pidAt(out, "source.process.pid"), pidAt(out, "destination.process.pid")
						switch sp {
						case 0:
							missed++
						case m.pid:
							right++
						default:
							wrong++
							if len(wrongs) < 10 {
								wrongs = append(wrongs, fmt.Sprintf("%s: named pid %d, sender %d", m.src, sp, m.pid))
							}
						}
						if dp != 0 && dp != self {
							dstWrong++
							if len(wrongs) < 20 {
								wrongs = append(wrongs, fmt.Sprintf("destination %s of %s: named pid %d (sender %d), listener %d", m.dst, m.src, dp, m.pid, self))
							}
						}
					}
					mu.Unlock()
				}
			}()
		}

		var clients sync.WaitGroup
		tick := time.NewTicker(time.Second / time.Duration(rate))
		end := time.Now().Add(dur)
		for i := 0; time.Now().Before(end); i++ {
			<-tick.C
			args := []string{"127.0.0.1", strconv.Itoa(lport)}
			if pool > 0 {
				args = append(args, strconv.Itoa(45000+i%pool))
			}
			cmd := exec.Command(bin, args...)
			if err := cmd.Start(); err != nil {
				spawnFail.Add(1)
				continue
			}
			spawned.Add(1)
			clients.Add(1)
			go func() {
				defer clients.Done()
				if cmd.Wait() != nil {
					clientFail.Add(1)
				}
			}()
		}
		tick.Stop()
		clients.Wait()
		time.Sleep(2 * time.Second) // let the last messages arrive
		l.Close()
		accepting.Wait()
		close(events)
		workers.Wait()

		mu.Lock()
		defer mu.Unlock()
		t.Logf("soak %v at %d/s (%s, port pool %d): clients %d (spawn failures %d, client failures %d), events %d: right %d, wrong %d, missed %d, lost %d, undelivered %d; destination wrong %d",
			dur, rate, tracker, pool, spawned.Load(), spawnFail.Load(), clientFail.Load(), n, right, wrong, missed, lost, spawned.Load()-delivered.Load(), dstWrong)
		if wrong > 0 {
			t.Errorf("%d of %d events named a process that was not the sender:\n  %s", wrong, n, strings.Join(wrongs, "\n  "))
		}
		if dstWrong > 0 {
			t.Errorf("%d events named a process other than this listener (%d) for the destination:\n  %s", dstWrong, self, strings.Join(wrongs, "\n  "))
		}
		if lost > 0 {
			t.Errorf("%d events lost by Run", lost)
		}
	})
}
