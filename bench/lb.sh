#!/usr/bin/env bash
# lab-lb against HAProxy and nginx (stream) in TCP mode, side by side in one run, on loopback:
# the same nginx backend, the same wrk load, one proxy thread each. Prints requests/s, p99
# latency and ours/theirs for each, then bulk throughput through each proxy with iperf3.
# Last line, machine-readable:
#   RESULT lb-tcp ours/best=<ratio> p99_ours_ms=<x> p99_best_ms=<y>
# The machines are shared and noisy: targets are measured in ROUNDS interleaved rounds and the
# median of each is reported. Bounded: each load runs DURATION seconds (default 5, 3 rounds x 4
# targets = 1 minute); everything it starts is stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-5}
ROUNDS=${ROUNDS:-3}
CONNECTIONS=${CONNECTIONS:-64}
IPERF_SECONDS=${IPERF_SECONDS:-5}

declare -A needs=([haproxy]=haproxy [nginx]=nginx-light [wrk]=wrk [iperf3]=iperf3 [curl]=curl)
# nginx's stream module has no command of its own to look for.
[[ -e /usr/lib/nginx/modules/ngx_stream_module.so ]] || needs[ngx-stream-module]=libnginx-mod-stream
source bench/lib.sh

backend=$(free_port); iperf=$(free_port)
ours=$(free_port); ours_iperf=$(free_port); metrics=$(free_port)
haproxy_port=$(free_port); haproxy_iperf=$(free_port)
nginx_port=$(free_port); nginx_iperf=$(free_port)

# The backend: nginx answering a small body, two workers so it is not the bottleneck.
mkdir -p "$work/backend"
cat > "$work/backend/nginx.conf" <<CONF
worker_processes 2; daemon off; pid $work/backend/nginx.pid; error_log $work/backend/error.log;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 100000;
  client_body_temp_path $work/backend; proxy_temp_path $work/backend; fastcgi_temp_path $work/backend;
  uwsgi_temp_path $work/backend; scgi_temp_path $work/backend;
  server { listen 127.0.0.1:$backend; location / { return 200 "ok\n"; } } }
CONF
nginx -p "$work/backend" -c "$work/backend/nginx.conf" & pids+=($!)
iperf3 -s -p "$iperf" -B 127.0.0.1 >/dev/null 2>&1 & pids+=($!)

cat > "$work/lb.toml" <<CONF
[log]
level = "warn"
[metrics]
listen = "127.0.0.1:$metrics"
[runtime]
worker_threads = 1
[[listener]]
name = "http"
listen = "127.0.0.1:$ours"
mode = "tcp"
backend = "http"
[[listener]]
name = "iperf"
listen = "127.0.0.1:$ours_iperf"
mode = "tcp"
backend = "iperf"
[[backend]]
name = "http"
server = [{ address = "127.0.0.1:$backend" }]
[[backend]]
name = "iperf"
server = [{ address = "127.0.0.1:$iperf" }]
CONF
"$LB" run --config "$work/lb.toml" 2>"$work/lb.log" & pids+=($!)

cat > "$work/haproxy.cfg" <<CONF
global
  nbthread 1
  maxconn 4096
defaults
  mode tcp
  timeout connect 5s
  timeout client 1h
  timeout server 1h
listen http
  bind 127.0.0.1:$haproxy_port
  server s1 127.0.0.1:$backend
listen iperf
  bind 127.0.0.1:$haproxy_iperf
  server s1 127.0.0.1:$iperf
CONF
haproxy -q -f "$work/haproxy.cfg" & pids+=($!)

mkdir -p "$work/nginx"
cat > "$work/nginx/nginx.conf" <<CONF
load_module /usr/lib/nginx/modules/ngx_stream_module.so;
worker_processes 1; daemon off; pid $work/nginx/nginx.pid; error_log $work/nginx/error.log;
events { worker_connections 4096; }
stream {
  server { listen 127.0.0.1:$nginx_port; proxy_pass 127.0.0.1:$backend; }
  server { listen 127.0.0.1:$nginx_iperf; proxy_pass 127.0.0.1:$iperf; }
}
CONF
nginx -p "$work/nginx" -c "$work/nginx/nginx.conf" & pids+=($!)

for port in $backend $iperf $ours $haproxy_port $nginx_port; do wait_port "$port"; done
for port in $ours $haproxy_port $nginx_port; do
  [[ $(curl -s "http://127.0.0.1:$port/") == ok ]] || { echo "proxy on $port does not answer" >&2; exit 1; }
done

# wrk: requests/s and p99 (ms) for one target.
load() {
  local out rps p99
  out=$(wrk -t1 -c"$CONNECTIONS" -d"${DURATION}s" --latency "http://127.0.0.1:$1/")
  rps=$(awk '/^Requests\/sec:/ {print $2}' <<<"$out")
  p99=$(awk '$1 == "99%" {v=$2; if (v ~ /us$/) {sub(/us/,"",v); v/=1000} else if (v ~ /ms$/) {sub(/ms/,"",v)} else if (v ~ /s$/) {sub(/s/,"",v); v*=1000}; print v}' <<<"$out")
  echo "$rps $p99"
}
throughput() {
  iperf3 -c 127.0.0.1 -p "$1" -t "$IPERF_SECONDS" -J 2>/dev/null |
    python3 -c 'import json,sys; print("%.2f" % (json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"]/1e9))'
}

median() { python3 -c 'import statistics,sys; print(statistics.median(float(x) for x in sys.argv[1:]))' "$@"; }

echo "lab-lb TCP benchmark: wrk -t1 -c$CONNECTIONS -d${DURATION}s, median of $ROUNDS interleaved rounds, one proxy thread each, $(nproc) cores"
declare -A rps p99
for target in direct ours haproxy nginx; do rps[$target]=""; p99[$target]=""; done
declare -A port_of=([direct]=$backend [ours]=$ours [haproxy]=$haproxy_port [nginx]=$nginx_port)
for round in $(seq "$ROUNDS"); do
  for target in direct ours haproxy nginx; do
    read -r r p < <(load "${port_of[$target]}")
    rps[$target]+=" $r"; p99[$target]+=" $p"
  done
done
# shellcheck disable=SC2086
{
  direct_rps=$(median ${rps[direct]}); direct_p99=$(median ${p99[direct]})
  ours_rps=$(median ${rps[ours]}); ours_p99=$(median ${p99[ours]})
  haproxy_rps=$(median ${rps[haproxy]}); haproxy_p99=$(median ${p99[haproxy]})
  nginx_rps=$(median ${rps[nginx]}); nginx_p99=$(median ${p99[nginx]})
}

ratio() { python3 -c "print('%.2f' % ($1 / $2))"; }
printf '%-16s %12s %10s %14s\n' target requests/s p99_ms ours/theirs
printf '%-16s %12.0f %10.2f %14s\n' "direct" "$direct_rps" "$direct_p99" "-"
printf '%-16s %12.0f %10.2f %14s\n' "lab-lb" "$ours_rps" "$ours_p99" "1.00"
printf '%-16s %12.0f %10.2f %14s\n' "haproxy" "$haproxy_rps" "$haproxy_p99" "$(ratio "$ours_rps" "$haproxy_rps")"
printf '%-16s %12.0f %10.2f %14s\n' "nginx-stream" "$nginx_rps" "$nginx_p99" "$(ratio "$ours_rps" "$nginx_rps")"

echo
echo "bulk throughput, iperf3 -t $IPERF_SECONDS (Gbit/s)"
direct_gbps=$(throughput "$iperf")
ours_gbps=$(throughput "$ours_iperf")
haproxy_gbps=$(throughput "$haproxy_iperf")
nginx_gbps=$(throughput "$nginx_iperf")
printf '%-16s %8s %14s\n' target Gbit/s ours/theirs
printf '%-16s %8s %14s\n' direct "$direct_gbps" "-"
printf '%-16s %8s %14s\n' lab-lb "$ours_gbps" "1.00"
printf '%-16s %8s %14s\n' haproxy "$haproxy_gbps" "$(ratio "$ours_gbps" "$haproxy_gbps")"
printf '%-16s %8s %14s\n' nginx-stream "$nginx_gbps" "$(ratio "$ours_gbps" "$nginx_gbps")"

if python3 -c "import sys; sys.exit(0 if $haproxy_rps >= $nginx_rps else 1)"; then
  best_rps=$haproxy_rps; best_p99=$haproxy_p99
else
  best_rps=$nginx_rps; best_p99=$nginx_p99
fi
echo
echo "RESULT lb-tcp ours/best=$(ratio "$ours_rps" "$best_rps") p99_ours_ms=$ours_p99 p99_best_ms=$best_p99"
