#!/bin/sh
# go test -exec wrapper for Windows test binaries: runs "$@" under Wine.
#
# Set by `go run mage.go wintest`: WINEPREFIX, WINE (the wine64 loader) and
# WINESERVER. Run as root, it gives Wine a network namespace of its own
# (loopback only): Wine's GetExtendedTcpTable spends milliseconds on every
# row of the namespace's socket table, and a shared host or a CI run that
# just finished a load test holds thousands of TIME_WAIT rows. Wine creates
# every socket in its wineserver, so the wineserver must start inside the
# namespace: the wrapper waits for any previous one of this prefix to exit
# first, and for its own to exit before returning.
# go test runs test binaries in parallel; the lock runs them one at a time,
# each with a wineserver of its own.
set -eu
: "${WINE:?set WINE to the wine64 loader}" "${WINESERVER:?set WINESERVER}" "${WINEPREFIX:?set WINEPREFIX}"
if command -v flock >/dev/null; then
    exec 9>"$WINEPREFIX/.netprocbeat-exec.lock"
    flock 9
fi
"$WINESERVER" -w
if [ "$(id -u)" = 0 ] && unshare -n true 2>/dev/null; then
    exec unshare -n sh -c 'ip link set lo up && rc=0 && "$WINE" "$@" || rc=$?; "$WINESERVER" -w; exit $rc' wine-exec "$@"
fi
echo "exec.sh: not root or no unshare: running Wine in the host's network namespace (scans are slow on a host with many sockets)" >&2
rc=0
"$WINE" "$@" || rc=$?
"$WINESERVER" -w
exit $rc
