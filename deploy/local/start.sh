#!/usr/bin/env bash
# Starts N moondream-server replicas on loopback (127.0.0.1) and Debian's nginx
# in front of them: gRPC through grpc_pass (least_conn, keepalive), the HTTP
# API through proxy_pass (unbuffered, for SSE streams). deploy/local/drain.sh K
# takes replica K out, deploy/local/stop.sh stops them all. See
# deploy/local/README.md.
#
#   deploy/local/start.sh [N]          # N replicas (default 3)
#
# Environment (all optional):
#   MD_SERVER          server binary (default: build/service/moondream-server)
#   MD_MODEL           model directory (default: models/scenes-demo, the demo model)
#   MD_RUN_DIR         pid files, logs, nginx.conf (default: /tmp/moondream-local)
#   MD_GRPC_PORT       nginx's gRPC port (default: 50051)
#   MD_HTTP_PORT       nginx's HTTP port (default: 8080)
#   MD_REPLICA_PORTS   "GRPC:HTTP:METRICS ..." one triple per replica (default:
#                      replica K gets 50100+K, 8100+K and 9100+K)
#   MD_SERVER_FLAGS    more server flags (default: --threads=1 --grace_seconds=30)
#   MD_NGINX           nginx binary (default: nginx on PATH, else /usr/sbin/nginx)
#   MD_START_TIMEOUT   seconds a replica may take to start (default: 120)
#
# Everything listens on 127.0.0.1 only. Each replica is started with
# --replica_name=replica-K and names itself on every response (gRPC metadata
# x-moondream-replica, HTTP header X-Moondream-Replica).
#
# The run directory holds, per replica, replica-K.pid, replica-K.ports
# ("GRPC HTTP METRICS"), replica-K.log (stderr), replica-K.out (stdout) and,
# once it has exited, replica-K.exit (its exit status); then nginx.conf,
# nginx.pid, logs/ and cluster.env (the ports, in shell syntax).
set -euo pipefail

N="${1:-3}"
if ! [[ "$N" =~ ^[1-9][0-9]*$ ]]; then
  echo "usage: $0 [N]   (N replicas, default 3)" >&2
  exit 2
fi

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
SERVER="${MD_SERVER:-$REPO/build/service/moondream-server}"
MODEL="${MD_MODEL:-$REPO/models/scenes-demo}"
RUN="${MD_RUN_DIR:-${TMPDIR:-/tmp}/moondream-local}"
GRPC_PORT="${MD_GRPC_PORT:-50051}"
HTTP_PORT="${MD_HTTP_PORT:-8080}"
SERVER_FLAGS="${MD_SERVER_FLAGS:---threads=1 --grace_seconds=30}"
START_TIMEOUT="${MD_START_TIMEOUT:-120}"
NGINX="${MD_NGINX:-$(command -v nginx || echo /usr/sbin/nginx)}"

die() { echo "start.sh: $*" >&2; exit 1; }

[ -x "$SERVER" ] || die "no server binary at $SERVER (build it, or set MD_SERVER)"
[ -d "$MODEL" ] || die "no model directory at $MODEL (set MD_MODEL)"
[ -x "$NGINX" ] || die "no nginx at $NGINX (apt-get install nginx; scripts/setup.sh)"

# Per-replica ports.
read -r -a PORTS <<< "${MD_REPLICA_PORTS:-}"
if [ "${#PORTS[@]}" -eq 0 ]; then
  for k in $(seq 1 "$N"); do PORTS+=("$((50100 + k)):$((8100 + k)):$((9100 + k))"); done
fi
[ "${#PORTS[@]}" -eq "$N" ] || die "MD_REPLICA_PORTS has ${#PORTS[@]} triples, not $N"

# A pid file names a live process (of this cluster) or nothing.
alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

mkdir -p "$RUN"
RUN="$(cd "$RUN" && pwd)"
for f in "$RUN"/replica-*.pid "$RUN"/nginx.pid; do
  if alive "$f"; then
    die "$RUN already runs a cluster ($f is alive): deploy/local/stop.sh first"
  fi
done
rm -f "$RUN"/replica-*.{pid,ports,exit,out,log} "$RUN"/nginx.pid "$RUN"/cluster.env
mkdir -p "$RUN/logs" "$RUN/tmp"

# On any failure from here on, take down what was started.
started=0
cleanup_on_error() {
  if [ "$started" -eq 0 ]; then
    echo "start.sh: failed; stopping what was started" >&2
    MD_RUN_DIR="$RUN" "$HERE/stop.sh" >&2 || true
  fi
}
trap cleanup_on_error EXIT

# 1. The replicas. A small bash waits for each and records its exit status in
# replica-K.exit, so a drain's exit code can be checked afterwards.
for k in $(seq 1 "$N"); do
  IFS=: read -r g h m <<< "${PORTS[$((k - 1))]}"
  echo "$g $h $m" > "$RUN/replica-$k.ports"
  # shellcheck disable=SC2086  # MD_SERVER_FLAGS is a word list on purpose
  (
    set +e           # the waiter records any exit status
    trap '' INT HUP  # a ^C at the terminal is not a stop: stop.sh is
    "$SERVER" --model="$MODEL" --host=127.0.0.1 --metrics_host=127.0.0.1 \
      --grpc_port="$g" --http_port="$h" --metrics_port="$m" \
      --replica_name="replica-$k" $SERVER_FLAGS \
      > "$RUN/replica-$k.out" 2> "$RUN/replica-$k.log" < /dev/null &
    echo $! > "$RUN/replica-$k.pid.tmp"
    mv "$RUN/replica-$k.pid.tmp" "$RUN/replica-$k.pid"
    wait $!
    echo $? > "$RUN/replica-$k.exit"
  ) > /dev/null 2>&1 < /dev/null &
done

# Each replica prints "serving gRPC on HOST:PORT" on stdout once it serves.
deadline=$((SECONDS + START_TIMEOUT))
for k in $(seq 1 "$N"); do
  until grep -q "serving gRPC on" "$RUN/replica-$k.out" 2>/dev/null; do
    if [ -f "$RUN/replica-$k.exit" ]; then
      tail -n 20 "$RUN/replica-$k.log" >&2 || true
      die "replica-$k exited with status $(cat "$RUN/replica-$k.exit")"
    fi
    [ "$SECONDS" -lt "$deadline" ] || die "replica-$k did not start in ${START_TIMEOUT}s"
    sleep 0.1
  done
done

# 2. nginx, all of its paths in the run directory (-p), none root-only.
grpc_servers="" http_servers=""
for k in $(seq 1 "$N"); do
  read -r g h _ < "$RUN/replica-$k.ports"
  grpc_servers+="    server 127.0.0.1:$g max_fails=1 fail_timeout=5s;  # replica-$k"$'\n'
  http_servers+="    server 127.0.0.1:$h max_fails=1 fail_timeout=5s;  # replica-$k"$'\n'
done
user_line=""
# As root, nginx's workers would switch to "nobody", who may not reach the run
# directory (its temp files). This cluster listens on loopback only; not root,
# nginx runs as the caller and needs no "user" line.
if [ "$(id -u)" -eq 0 ]; then user_line="user root root;"; fi

cat > "$RUN/nginx.conf" <<EOF
# Generated by deploy/local/start.sh: $N moondream-server replicas on loopback.
$user_line
worker_processes 1;
pid $RUN/nginx.pid;
error_log $RUN/logs/error.log warn;

events {
  worker_connections 4096;
}

http {
  # Which replica (upstream) served each call, and how it ended: a gRPC
  # status comes in the trailers, or in the headers of a trailers-only reply.
  log_format moondream '\$time_iso8601 \$request_method \$uri status=\$status '
                       'grpc_status=\$upstream_trailer_grpc_status '
                       'grpc_status_header=\$upstream_http_grpc_status '
                       'upstream=\$upstream_addr upstream_status=\$upstream_status '
                       'replica=\$upstream_http_x_moondream_replica '
                       'time=\$request_time';
  access_log $RUN/logs/access.log moondream;
  client_body_temp_path $RUN/tmp/client_body;
  proxy_temp_path $RUN/tmp/proxy;
  fastcgi_temp_path $RUN/tmp/fastcgi;
  uwsgi_temp_path $RUN/tmp/uwsgi;
  scgi_temp_path $RUN/tmp/scgi;
  # Images come in the request body (the server's own limit is
  # --max_message_mb, 32 MiB; it answers larger ones with a clear error).
  client_max_body_size 64m;

  # gRPC: nginx opens one upstream connection per call (and keeps idle ones
  # open), so least_conn balances calls, not connections: the thing an L4
  # balancer in front of long-lived HTTP/2 connections cannot do.
  upstream moondream_grpc {
    least_conn;
$grpc_servers    keepalive 64;
    keepalive_timeout 60s;
  }

  upstream moondream_http {
    least_conn;
$http_servers    keepalive 64;
    keepalive_timeout 60s;
  }

  # gRPC (h2c, prior knowledge) on 127.0.0.1:$GRPC_PORT.
  server {
    listen 127.0.0.1:$GRPC_PORT http2;
    http2_max_concurrent_streams 1024;
    location / {
      grpc_pass grpc://moondream_grpc;
      # Streams (Query, Caption) may run long.
      grpc_read_timeout 3600s;
      grpc_send_timeout 3600s;
      grpc_connect_timeout 2s;
      # A replica that refuses the connection (crashed, or closed its port)
      # is skipped and the call goes to the next one. nginx streams a gRPC
      # request body to the replica, so a call whose replica dies after
      # receiving it is not sent again (it fails: 502, UNAVAILABLE to the
      # client). A call the replica answered with a gRPC status comes back
      # as HTTP 200 with a grpc-status: nginx cannot tell, and passes it on.
      # To take a replica out without failing a call, deploy/local/drain.sh
      # marks it down here before its SIGTERM.
      grpc_next_upstream error timeout;
      grpc_next_upstream_tries 3;
    }
  }

  # The Moondream-compatible HTTP API, SSE streams unbuffered.
  server {
    listen 127.0.0.1:$HTTP_PORT;
    location / {
      proxy_pass http://moondream_http;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host \$host;
      proxy_buffering off;
      proxy_cache off;
      proxy_read_timeout 3600s;
      proxy_send_timeout 3600s;
      proxy_connect_timeout 2s;
      # 503 is what a draining replica answers: it did no work, so sending
      # the request to another replica is safe. The request body is buffered
      # (proxy_request_buffering on, the default) so that it can be resent.
      proxy_next_upstream error timeout http_502 http_503 non_idempotent;
      proxy_next_upstream_tries 3;
    }
  }
}
EOF

"$NGINX" -q -t -p "$RUN/" -e "$RUN/logs/error.log" -c "$RUN/nginx.conf" \
  || die "nginx rejected $RUN/nginx.conf"
# nginx daemonizes itself once listening; its pid goes to nginx.pid.
"$NGINX" -p "$RUN/" -e "$RUN/logs/error.log" -c "$RUN/nginx.conf" \
  < /dev/null >> "$RUN/logs/nginx.out" 2>&1 || die "nginx did not start: $(tail -n 5 "$RUN/logs/error.log")"
for _ in $(seq 1 50); do alive "$RUN/nginx.pid" && break; sleep 0.1; done
alive "$RUN/nginx.pid" || die "nginx did not start: $(tail -n 5 "$RUN/logs/error.log")"

cat > "$RUN/cluster.env" <<EOF
MD_RUN_DIR=$RUN
MD_GRPC_PORT=$GRPC_PORT
MD_HTTP_PORT=$HTTP_PORT
MD_REPLICAS=$N
MD_REPLICA_PORTS="${PORTS[*]}"
EOF

started=1
echo "moondream local cluster: $N replicas behind nginx (run directory $RUN)"
echo "  gRPC  127.0.0.1:$GRPC_PORT   (grpc_pass, least_conn)"
echo "  HTTP  http://127.0.0.1:$HTTP_PORT/v1/"
for k in $(seq 1 "$N"); do
  read -r g h m < "$RUN/replica-$k.ports"
  echo "  replica-$k  pid $(cat "$RUN/replica-$k.pid")  gRPC :$g  HTTP :$h  metrics http://127.0.0.1:$m/metrics"
done
echo "stop: MD_RUN_DIR=$RUN $HERE/stop.sh"
