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
"${on_load_cores[@]}" nginx -p "$work/backend" -c "$work/backend/nginx.conf" & pids+=($!); declare -A pid=([direct]=$!)
"${on_load_cores[@]}" iperf3 -s -p "$iperf" -B 127.0.0.1 >/dev/null 2>&1 & pids+=($!)

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
"${on_proxy_core[@]}" "$LB" run --config "$work/lb.toml" 2>"$work/lb.log" & pids+=($!); pid[ours]=$!

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
"${on_proxy_core[@]}" haproxy -q -f "$work/haproxy.cfg" & pids+=($!); pid[haproxy]=$!

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
"${on_proxy_core[@]}" nginx -p "$work/nginx" -c "$work/nginx/nginx.conf" & pids+=($!); pid[nginx]=$!

for port in $backend $iperf $ours $haproxy_port $nginx_port; do wait_port "$port"; done
for port in $ours $haproxy_port $nginx_port; do
  [[ $(curl -s "http://127.0.0.1:$port/") == ok ]] || { echo "proxy on $port does not answer" >&2; exit 1; }
done

throughput() {
  "${on_load_cores[@]}" iperf3 -c 127.0.0.1 -p "$1" -t "$IPERF_SECONDS" -J 2>/dev/null |
    python3 -c 'import json,sys; print("%.2f" % (json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"]/1e9))'
}

echo "lab-lb TCP benchmark: wrk -t1 -c$CONNECTIONS -d${DURATION}s, median of $ROUNDS interleaved rounds, one proxy thread each, $(nproc) cores, $placement"
declare -A rps p99 cpu
declare -A port_of=([direct]=$backend [ours]=$ours [haproxy]=$haproxy_port [nginx]=$nginx_port)
for round in $(seq "$ROUNDS"); do
  for target in direct ours haproxy nginx; do
    read -r r p c < <(wrk_load "${port_of[$target]}" "${pid[$target]}")
    rps[$target]+=" $r"; p99[$target]+=" $p"; cpu[$target]+=" $c"
  done
done
declare -A med_rps med_p99 med_cpu
for target in direct ours haproxy nginx; do
  # shellcheck disable=SC2086
  { med_rps[$target]=$(median ${rps[$target]}); med_p99[$target]=$(median ${p99[$target]}); med_cpu[$target]=$(median ${cpu[$target]}); }
done

# cpu_us/req: CPU the target itself spent per request (for `direct`, the backend alone).
printf '%-16s %12s %10s %12s %14s\n' target requests/s p99_ms cpu_us/req ours/theirs
declare -A label=([direct]=direct [ours]=lab-lb [haproxy]=haproxy [nginx]=nginx-stream)
for target in direct ours haproxy nginx; do
  case $target in
    direct) r="-" ;;
    ours) r="1.00" ;;
    *) r=$(ratio "${med_rps[ours]}" "${med_rps[$target]}") ;;
  esac
  printf '%-16s %12.0f %10.2f %12.1f %14s\n' "${label[$target]}" "${med_rps[$target]}" "${med_p99[$target]}" "${med_cpu[$target]}" "$r"
done

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

if python3 -c "import sys; sys.exit(0 if ${med_rps[haproxy]} >= ${med_rps[nginx]} else 1)"; then
  best=haproxy
else
  best=nginx
fi
echo
echo "RESULT lb-tcp ours/best=$(ratio "${med_rps[ours]}" "${med_rps[$best]}") p99_ours_ms=${med_p99[ours]} p99_best_ms=${med_p99[$best]}"
