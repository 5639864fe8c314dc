#!/usr/bin/env bash
# Load comparison on one machine, in one run: the upstream directly, a plain nginx hop,
# HAProxy with jwt_verify, and Tollgate in three token modes. See benches/load/README.md.
#
#   bash benches/load/run.sh                 # 3 rounds x 5 s per case
#   ROUNDS=5 DURATION=10 bash benches/load/run.sh
#
# Everything binds to 127.0.0.1, every process started here is stopped by PID on exit.
set -euo pipefail

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-5}
CONNS=${CONNS:-"1 64"}
TOKENS=${TOKENS:-250000}
CASES=${CASES:-"direct nginx haproxy-one haproxy-fresh tollgate-public tollgate-one tollgate-rotate tollgate-fresh tollgate-one-audit tollgate-twice"}
PERF=${PERF:-}   # set to 1: record a perf profile of the proxy in each measured run
PERF_ARGS=${PERF_ARGS:-"-F 1999"}   # e.g. "-F 499 --call-graph dwarf" for call stacks
# A command run with the proxy's PID appended for the measured run, stopped with SIGINT at
# its end, output in target/load/probe-<case>-c<conns>.txt; e.g. PROBE="strace -c -f -p"
PROBE=${PROBE:-}
# Another Tollgate binary (say, a build of an earlier commit) for before/after in one run:
# the cases baseline-one, baseline-rotate and baseline-fresh run it as tollgate-* run ours.
BASELINE=${BASELINE:-}
TWICE_DURATION=${TWICE_DURATION:-12}   # tollgate-twice: long enough to cache ~100,000 tokens
PROXY_CPU=${PROXY_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
ISSUER="https://issuer.bench.invalid"
AUDIENCE="api"

cd "$(dirname "$0")/../.."
ROOT=$PWD
HERE=$ROOT/benches/load
WORK=${WORK:-$ROOT/target/load}
mkdir -p "$WORK/run"

for tool in nginx haproxy wrk taskset python3 curl; do
    if ! command -v "$tool" >/dev/null && ! [ -x "/usr/sbin/$tool" ]; then
        echo "missing: $tool (Debian: apt-get install -y nginx-light haproxy wrk util-linux python3 curl)" >&2
        exit 1
    fi
done
export PATH="$PATH:/usr/sbin"
if [ "$(nproc)" -lt 2 ]; then
    echo "needs two cores (proxy on one, load generator and upstream on the other)" >&2
    exit 1
fi

echo "== building (release)"
# Two invocations on purpose: built together, the binary would get the dev-dependencies'
# features too (an example may use them; tokio's `test-util` among them), and the load
# test would measure a binary nobody deploys.
cargo build --release --locked --example mint 2>&1 | tail -1
cargo build --release --locked --bin tollgate 2>&1 | tail -1
TOLLGATE=$ROOT/target/release/tollgate

# Fixtures: an RS256 key, its JWKS and PEM, and TOKENS distinct tokens (kept between runs).
if [ ! -s "$WORK/tokens.txt" ] || [ "$(wc -l <"$WORK/tokens.txt")" -lt "$TOKENS" ] ||
    [ -n "$(find "$WORK/tokens.txt" -mmin +7000)" ]; then
    echo "== minting $TOKENS RS256 tokens"
    "$ROOT/target/release/examples/mint" "$WORK" "$ISSUER" "$AUDIENCE" "$TOKENS"
fi

PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
}
trap cleanup EXIT

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

wait_http() { # url [expected status]
    local want=${2:-200}
    for _ in $(seq 1 200); do
        if [ "$(curl -s -o /dev/null -w '%{http_code}' "$1" || true)" = "$want" ]; then return 0; fi
        sleep 0.05
    done
    echo "not ready: $1" >&2
    return 1
}

cpu_ticks() { # pid -> utime+stime in clock ticks
    awk '{print $14 + $15}' "/proc/$1/stat"
}

rss_kib() {
    awk '/^VmRSS/ {print $2}' "/proc/$1/status"
}

# --- upstream: nginx answering 200 "ok", and serving the JWKS (load core) -----------------
UP_PORT=$(free_port)
mkdir -p "$WORK/run/up"
cat >"$WORK/run/up/nginx.conf" <<EOF
worker_processes 1;
master_process off;
daemon off;
pid $WORK/run/up/nginx.pid;
error_log $WORK/run/up/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $WORK/run/up; proxy_temp_path $WORK/run/up;
    fastcgi_temp_path $WORK/run/up; uwsgi_temp_path $WORK/run/up; scgi_temp_path $WORK/run/up;
    keepalive_requests 1000000;
    server {
        listen 127.0.0.1:$UP_PORT;
        location = /jwks.json { default_type application/json; alias $WORK/jwks.json; }
        location / { default_type text/plain; return 200 "ok\n"; }
    }
}
EOF
taskset -c "$LOAD_CPU" nginx -c "$WORK/run/up/nginx.conf" -p "$WORK/run/up" &
UP_PID=$!
PIDS+=("$UP_PID")
wait_http "http://127.0.0.1:$UP_PORT/"

# --- proxies under test (proxy core) --------------------------------------------------------
PROXY_PID=
PROXY_PORT=

start_nginx_hop() {
    PROXY_PORT=$(free_port)
    mkdir -p "$WORK/run/hop"
    cat >"$WORK/run/hop/nginx.conf" <<EOF
worker_processes 1;
master_process off;
daemon off;
pid $WORK/run/hop/nginx.pid;
error_log $WORK/run/hop/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $WORK/run/hop; proxy_temp_path $WORK/run/hop;
    fastcgi_temp_path $WORK/run/hop; uwsgi_temp_path $WORK/run/hop; scgi_temp_path $WORK/run/hop;
    keepalive_requests 1000000;
    upstream up { server 127.0.0.1:$UP_PORT; keepalive 128; }
    server {
        listen 127.0.0.1:$PROXY_PORT;
        location / {
            proxy_pass http://up;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
}
EOF
    taskset -c "$PROXY_CPU" nginx -c "$WORK/run/hop/nginx.conf" -p "$WORK/run/hop" &
    PROXY_PID=$!
    wait_http "http://127.0.0.1:$PROXY_PORT/"
}

start_haproxy() {
    PROXY_PORT=$(free_port)
    mkdir -p "$WORK/run/haproxy"
    # The same checks Tollgate makes on these tokens: alg, signature, issuer, audience, expiry.
    cat >"$WORK/run/haproxy/haproxy.cfg" <<EOF
global
    nbthread 1
    maxconn 4000
defaults
    mode http
    timeout connect 5s
    timeout client 30s
    timeout server 30s
    http-reuse always
frontend api
    bind 127.0.0.1:$PROXY_PORT
    http-request set-var(txn.bearer) http_auth_bearer
    http-request set-var(txn.alg) var(txn.bearer),jwt_header_query('\$.alg')
    http-request deny deny_status 401 unless { var(txn.alg) -m str RS256 }
    http-request deny deny_status 401 unless { var(txn.bearer),jwt_payload_query('\$.iss') -m str "$ISSUER" }
    http-request deny deny_status 401 unless { var(txn.bearer),jwt_payload_query('\$.aud') -m str "$AUDIENCE" }
    http-request set-var(txn.exp) var(txn.bearer),jwt_payload_query('\$.exp','int')
    http-request set-var(txn.now) date()
    http-request deny deny_status 401 if { var(txn.exp),sub(txn.now) -m int lt 0 }
    http-request deny deny_status 401 unless { var(txn.bearer),jwt_verify(txn.alg,"$WORK/public.pem") -m int 1 }
    default_backend up
backend up
    server up 127.0.0.1:$UP_PORT
EOF
    taskset -c "$PROXY_CPU" haproxy -db -f "$WORK/run/haproxy/haproxy.cfg" &
    PROXY_PID=$!
    wait_http "http://127.0.0.1:$PROXY_PORT/api/items" 401
}

start_tollgate() { # audit mode [binary]
    local bin=${2:-$TOLLGATE}
    PROXY_PORT=$(free_port)
    local admin
    admin=$(free_port)
    mkdir -p "$WORK/run/tollgate"
    cat >"$WORK/run/tollgate/tollgate.toml" <<EOF
listen = "127.0.0.1:$PROXY_PORT"
admin_listen = "127.0.0.1:$admin"
upstream = "http://127.0.0.1:$UP_PORT"
accounts_file = "accounts.toml"
audit = "$1"

[scopes]
"read:items" = ["items:read"]

[[providers]]
name = "bench"
issuer = "$ISSUER"
jwks_uri = "http://127.0.0.1:$UP_PORT/jwks.json"
audiences = ["$AUDIENCE"]
algorithms = ["RS256"]

[[routes]]
path = "/api/**"
permissions = ["items:read"]

# tollgate-public: the same proxying with no token, account or permission step.
[[routes]]
path = "/open/**"
auth = "public"
EOF
    cat >"$WORK/run/tollgate/accounts.toml" <<EOF
[[accounts]]
id = "bench-user"
roles = []
  [[accounts.mappings]]
  provider = "bench"
  subject = "bench-user"
EOF
    # One worker thread: the same one core as nginx's and HAProxy's single worker.
    TOKIO_WORKER_THREADS=1 taskset -c "$PROXY_CPU" "$bin" run \
        -c "$WORK/run/tollgate/tollgate.toml" >"$WORK/run/tollgate/out.log" 2>&1 &
    PROXY_PID=$!
    wait_http "http://127.0.0.1:$admin/readyz"
}

stop_proxy() {
    kill "$PROXY_PID" 2>/dev/null || true
    wait "$PROXY_PID" 2>/dev/null || true
    PROXY_PID=
}

# run_wrk <case> <round> <conns> <mode> <port> <measured pid>
run_wrk() {
    local case=$1 round=$2 conns=$3 mode=$4 port=$5 pid=$6
    local before after rss_before rss_after out
    rss_before=$(rss_kib "$pid")
    local perf_pid=
    if [ -n "$PERF" ] && [ "$case" != direct ]; then
        perf record -q $PERF_ARGS -p "$pid" -o "$WORK/perf-$case-c$conns.data" -- sleep "$DURATION" \
            >/dev/null 2>&1 &
        perf_pid=$!
    elif [ -n "$PROBE" ] && [ "$case" != direct ]; then
        timeout -s INT "$DURATION" $PROBE "$pid" >"$WORK/probe-$case-c$conns.txt" 2>&1 &
        perf_pid=$!
    fi
    before=$(cpu_ticks "$pid")
    out=$(LOAD_MODE=$mode LOAD_TOKENS=$WORK/tokens.txt LOAD_THREADS=1 \
        taskset -c "$LOAD_CPU" wrk -t1 -c"$conns" -d"${DURATION}s" --latency \
        -s "$HERE/tokens.lua" "http://127.0.0.1:$port/api/items" | grep '^RESULT')
    after=$(cpu_ticks "$pid")
    rss_after=$(rss_kib "$pid")
    if [ -n "$perf_pid" ]; then wait "$perf_pid" || true; fi
    echo "$case round=$round conns=$conns ${out#RESULT } cpu_ticks=$((after - before)) rss_before_kib=$rss_before rss_after_kib=$rss_after" |
        tee -a "$RESULTS"
}

warm() { # port mode
    LOAD_MODE=$2 LOAD_TOKENS=$WORK/tokens.txt taskset -c "$LOAD_CPU" \
        wrk -t1 -c16 -d1s -s "$HERE/tokens.lua" "http://127.0.0.1:$1/api/items" >/dev/null
}

RESULTS=$WORK/results-$(date -u +%Y%m%dT%H%M%SZ).txt
: >"$RESULTS"
{
    echo "# date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "# cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs) x $(nproc)"
    echo "# kernel: $(uname -r)"
    echo "# tollgate: $(git -C "$ROOT" rev-parse --short HEAD)$(git -C "$ROOT" diff --quiet || echo '+dirty')"
    echo "# nginx: $(nginx -v 2>&1 | cut -d/ -f2)  haproxy: $(haproxy -v | head -1 | cut -d' ' -f3)  wrk: $(wrk -v 2>&1 | head -1 | cut -d' ' -f2)"
    [ -z "$BASELINE" ] || echo "# baseline: $BASELINE ($("$BASELINE" --version 2>/dev/null || true))"
    echo "# rounds=$ROUNDS duration=${DURATION}s conns=[$CONNS] proxy_cpu=$PROXY_CPU load_cpu=$LOAD_CPU"
} | tee "$RESULTS"

for round in $(seq 1 "$ROUNDS"); do
    for case in $CASES; do
        echo "== round $round: $case"
        for conns in $CONNS; do
            case $case in
            direct)
                run_wrk "$case" "$round" "$conns" none "$UP_PORT" "$UP_PID" ;;
            nginx)
                start_nginx_hop; warm "$PROXY_PORT" none
                run_wrk "$case" "$round" "$conns" none "$PROXY_PORT" "$PROXY_PID"; stop_proxy ;;
            haproxy-one | haproxy-fresh)
                start_haproxy; warm "$PROXY_PORT" one
                run_wrk "$case" "$round" "$conns" "${case#haproxy-}" "$PROXY_PORT" "$PROXY_PID"
                stop_proxy ;;
            tollgate-one | tollgate-rotate | tollgate-one-audit)
                tmode=${case#tollgate-}; tmode=${tmode%-audit}
                audit=off; [ "$case" = tollgate-one-audit ] && audit=all
                start_tollgate "$audit"; warm "$PROXY_PORT" "$tmode"
                run_wrk "$case" "$round" "$conns" "$tmode" "$PROXY_PORT" "$PROXY_PID"
                stop_proxy ;;
            tollgate-public)
                # No token: what the proxying alone costs (path, headers, forwarding).
                start_tollgate off; LOAD_PATH=/open/items warm "$PROXY_PORT" none
                LOAD_PATH=/open/items run_wrk "$case" "$round" "$conns" none "$PROXY_PORT" "$PROXY_PID"
                stop_proxy ;;
            tollgate-fresh)
                # A new process: an empty verification cache, so every token is verified.
                start_tollgate off
                run_wrk "$case" "$round" "$conns" fresh "$PROXY_PORT" "$PROXY_PID"
                stop_proxy ;;
            tollgate-twice)
                # Each token twice: the cache admits every one; RSS after is the cache full.
                start_tollgate off
                DURATION=$TWICE_DURATION run_wrk "$case" "$round" "$conns" twice "$PROXY_PORT" "$PROXY_PID"
                stop_proxy ;;
            baseline-one | baseline-rotate | baseline-fresh)
                if [ -z "$BASELINE" ]; then
                    echo "$case needs BASELINE=/path/to/another/tollgate" >&2; exit 2
                fi
                tmode=${case#baseline-}
                start_tollgate off "$BASELINE"
                [ "$tmode" = fresh ] || warm "$PROXY_PORT" "$tmode"
                run_wrk "$case" "$round" "$conns" "$tmode" "$PROXY_PORT" "$PROXY_PID"
                stop_proxy ;;
            *) echo "unknown case: $case" >&2; exit 2 ;;
            esac
        done
    done
done

echo
python3 "$HERE/report.py" "$RESULTS" | tee "$RESULTS.md"
echo "raw: $RESULTS"
