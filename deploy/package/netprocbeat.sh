#!/bin/sh
# Runs netprocbeat in the foreground with the paths the systemd unit uses.
exec /usr/share/netprocbeat/bin/netprocbeat \
  --path.home /usr/share/netprocbeat \
  --path.config /etc/netprocbeat \
  --path.data /var/lib/netprocbeat \
  --path.logs /var/log/netprocbeat \
  "$@"
