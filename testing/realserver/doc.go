// Package realserver runs real, unmodified servers and clients from the
// distribution as test fixtures, with ground truth taken from outside the
// code under test.
//
// StartNginx starts /usr/sbin/nginx (master plus workers, one listening
// socket inherited by all of them, as the stock package runs it) in a
// temporary prefix, listening on 127.0.0.1 and [::1]. Its access log
// records, per request, the PID of the worker that served it and both
// endpoints of the connection (LogFormat); ParseLogLine reads a line into a
// LogLine. RunClient makes one request with curl, wget, python3 or bash's
// /dev/tcp; StartKeepAlive holds one python3 http.client connection open
// for several requests.
//
// Everything a fixture starts is stopped by PID at test cleanup. The
// package needs Linux for the nginx fixture (it reads /proc to find the
// workers); the log parser is portable.
package realserver
