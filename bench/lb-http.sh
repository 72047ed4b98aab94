#!/usr/bin/env bash
# lab-lb against HAProxy and nginx as HTTP proxies (L7), side by side in one run, on loopback:
# the same nginx backend, one proxy thread each, upstream keep-alive on for all three, no access
# log for any of them (ours logs at `info`, the level is `warn`), and all three adding the
# forwarding headers (X-Forwarded-For/-Proto/-Host; ours adds `Forwarded` as well). Loads:
#   keep-alive    wrk, persistent client connections
#   newconn       wrk with `Connection: close`: a TCP connection per request
#   tlsnew        the same over https: a full TLS 1.3 handshake per request (wrk resumes no
#                 session and offers no ALPN: HTTP/1.1)
#   h2            h2load over TLS (ALPN h2), TLS terminated by each proxy, 16 connections x 16
#                 streams
#   h2-4x64       the same with 4 connections x 64 streams
# Prints requests/s, p99 latency and ours/theirs for each. Last line, machine-readable
# (keep-alive, ours against the better of the two):
#   RESULT lb-http ours/best=<ratio> p99_ours_ms=<x> p99_best_ms=<y>
# PROFILE=LOAD (one of the loads above) also records lab-lb with perf over that load in the last
# round and prints where its CPU time goes (symbols at or above PROFILE_MIN %, default 1).
# Targets run in ROUNDS (5) interleaved rounds and medians are reported: these machines are
# noisy. The proxy under test gets a core of its own, wrk and the backend the others (PIN=0:
# unpinned; see bench/lib.sh). Each load runs DURATION seconds; everything it starts is stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-5}
ROUNDS=${ROUNDS:-5}
CONNECTIONS=${CONNECTIONS:-64}
H2_REQUESTS=${H2_REQUESTS:-50000}

declare -A needs=([haproxy]=haproxy [nginx]=nginx-light [wrk]=wrk [h2load]=nghttp2-client [curl]=curl [openssl]=openssl)
[[ -z ${PROFILE:-} ]] || needs[perf]=linux-perf
source bench/lib.sh

backend=$(free_port); metrics=$(free_port)
ours=$(free_port); ours_tls=$(free_port)
haproxy_port=$(free_port); haproxy_tls=$(free_port)
nginx_port=$(free_port); nginx_tls=$(free_port)

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
  -keyout "$work/key.pem" -out "$work/cert.pem" -subj /CN=bench.test \
  -addext subjectAltName=DNS:bench.test >/dev/null 2>&1
cat "$work/cert.pem" "$work/key.pem" > "$work/combined.pem"

# The backend: nginx answering a small body, two workers so it is not the bottleneck.
mkdir -p "$work/backend"
cat > "$work/backend/nginx.conf" <<CONF
worker_processes 2; daemon off; pid $work/backend/nginx.pid; error_log $work/backend/error.log;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 1000000; keepalive_timeout 300s;
  client_body_temp_path $work/backend; proxy_temp_path $work/backend; fastcgi_temp_path $work/backend;
  uwsgi_temp_path $work/backend; scgi_temp_path $work/backend;
  server { listen 127.0.0.1:$backend; location / { return 200 "ok\n"; } } }
CONF
"${on_load_cores[@]}" nginx -p "$work/backend" -c "$work/backend/nginx.conf" & pids+=($!); declare -A pid=([direct]=$!)

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
mode = "http"
backend = "web"
[[listener]]
name = "https"
listen = "127.0.0.1:$ours_tls"
mode = "https"
backend = "web"
[[listener.http.cert]]
cert = "$work/cert.pem"
key = "$work/key.pem"
[[backend]]
name = "web"
server = [{ address = "127.0.0.1:$backend" }]
CONF
"${on_proxy_core[@]}" "$LB" run --config "$work/lb.toml" 2>"$work/lb.log" & pids+=($!); pid[ours]=$!

cat > "$work/haproxy.cfg" <<CONF
global
  nbthread 1
  maxconn 8192
defaults
  mode http
  option http-keep-alive
  http-reuse always
  option forwardfor
  timeout connect 5s
  timeout client 60s
  timeout server 60s
frontend http
  bind 127.0.0.1:$haproxy_port
  bind 127.0.0.1:$haproxy_tls ssl crt $work/combined.pem alpn h2,http/1.1
  http-request set-header X-Forwarded-Proto https if { ssl_fc }
  http-request set-header X-Forwarded-Proto http unless { ssl_fc }
  http-request set-header X-Forwarded-Host %[req.hdr(host)]
  default_backend web
backend web
  server s1 127.0.0.1:$backend
CONF
"${on_proxy_core[@]}" haproxy -q -f "$work/haproxy.cfg" & pids+=($!); pid[haproxy]=$!

mkdir -p "$work/nginx"
cat > "$work/nginx/nginx.conf" <<CONF
worker_processes 1; daemon off; pid $work/nginx/nginx.pid; error_log $work/nginx/error.log;
events { worker_connections 8192; }
http { access_log off; keepalive_requests 1000000;
  client_body_temp_path $work/nginx; proxy_temp_path $work/nginx; fastcgi_temp_path $work/nginx;
  uwsgi_temp_path $work/nginx; scgi_temp_path $work/nginx;
  upstream web { server 127.0.0.1:$backend; keepalive 128; }
  server {
    listen 127.0.0.1:$nginx_port;
    listen 127.0.0.1:$nginx_tls ssl http2;
    # nginx 1.22 (Debian 12) leaves TLS 1.3 out by default: every proxy speaks it here.
    ssl_certificate $work/cert.pem; ssl_certificate_key $work/key.pem; ssl_protocols TLSv1.2 TLSv1.3;
    location / { proxy_pass http://web; proxy_http_version 1.1; proxy_set_header Connection "";
      proxy_set_header Host \$host; proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto \$scheme; proxy_set_header X-Forwarded-Host \$host; }
  } }
CONF
"${on_proxy_core[@]}" nginx -p "$work/nginx" -c "$work/nginx/nginx.conf" & pids+=($!); pid[nginx]=$!

for port in $backend $ours $ours_tls $haproxy_port $haproxy_tls $nginx_port $nginx_tls; do wait_port "$port"; done
for port in $ours $haproxy_port $nginx_port; do
  [[ $(curl -s "http://127.0.0.1:$port/") == ok ]] || { echo "proxy on $port does not answer" >&2; KEEP=1; exit 1; }
done
for port in $ours_tls $haproxy_tls $nginx_tls; do
  [[ $(curl -sk --http2 --tlsv1.3 "https://127.0.0.1:$port/") == ok ]] || { echo "proxy on $port does not answer h2 over TLS 1.3" >&2; KEEP=1; exit 1; }
done

# h2load with CLIENTS connections of STREAMS streams each: requests/s, the max request time
# (ms; h2load prints no p99) and CPU us/request.
h2_load() {
  local port=$1 target_pid=$2 clients=$3 streams=$4 out before
  before=$(cpu_ticks "$target_pid")
  out=$("${on_load_cores[@]}" h2load -n "$H2_REQUESTS" -c "$clients" -m "$streams" -t 1 "https://127.0.0.1:$port/" 2>&1)
  echo "$(awk '/^finished in/ {gsub(/,/,""); print $4}' <<<"$out")" \
    "$(awk '/^time for request:/ {print $5}' <<<"$out" | ms)" \
    "$(us_per_request "$before" "$(cpu_ticks "$target_pid")" "$H2_REQUESTS")"
}

echo "lab-lb HTTP benchmark: wrk -t1 -c$CONNECTIONS -d${DURATION}s, h2load -n$H2_REQUESTS -c16 -m16 and -c4 -m64; median of $ROUNDS interleaved rounds; one proxy thread each, $(nproc) cores, $placement"
declare -A rps p99 cpu
declare -A plain=([ours]=$ours [haproxy]=$haproxy_port [nginx]=$nginx_port [direct]=$backend)
declare -A tls=([ours]=$ours_tls [haproxy]=$haproxy_tls [nginx]=$nginx_tls)
# Around a load of TARGET: perf on lab-lb when it is PROFILE's load, in the last round.
recorder=
profile_from() {
  [[ ${PROFILE:-} == "$1" && $2 == ours && $round == "$ROUNDS" ]] || return 0
  recorder=$(perf_record "${pid[ours]}" "$work/perf.data")
}
profile_to() { [[ -z $recorder ]] || perf_stop "$recorder"; recorder=; }
for round in $(seq "$ROUNDS"); do
  for target in direct ours haproxy nginx; do
    profile_from keepalive "$target"
    read -r r p c < <(wrk_load "${plain[$target]}" "${pid[$target]}")
    profile_to
    rps[keepalive,$target]+=" $r"; p99[keepalive,$target]+=" $p"; cpu[keepalive,$target]+=" $c"
    profile_from newconn "$target"
    read -r r p c < <(wrk_load "${plain[$target]}" "${pid[$target]}" -H "Connection: close")
    profile_to
    rps[newconn,$target]+=" $r"; p99[newconn,$target]+=" $p"; cpu[newconn,$target]+=" $c"
    if [[ $target != direct ]]; then
      profile_from tlsnew "$target"
      read -r r p c < <(wrk_load "https://127.0.0.1:${tls[$target]}/" "${pid[$target]}" -H "Connection: close")
      profile_to
      rps[tlsnew,$target]+=" $r"; p99[tlsnew,$target]+=" $p"; cpu[tlsnew,$target]+=" $c"
      profile_from h2 "$target"
      read -r r p c < <(h2_load "${tls[$target]}" "${pid[$target]}" 16 16)
      profile_to
      rps[h2,$target]+=" $r"; p99[h2,$target]+=" $p"; cpu[h2,$target]+=" $c"
      profile_from h2-4x64 "$target"
      read -r r p c < <(h2_load "${tls[$target]}" "${pid[$target]}" 4 64)
      profile_to
      rps[h2-4x64,$target]+=" $r"; p99[h2-4x64,$target]+=" $p"; cpu[h2-4x64,$target]+=" $c"
    fi
  done
done
[[ -z ${PROFILE:-} ]] || perf_top "$work/perf.data" "lab-lb, $PROFILE, last round"

# cpu_us/req: CPU the target itself spent per request (for `direct`, the backend alone).
declare -A med_rps med_p99 med_cpu
for load in keepalive newconn tlsnew h2 h2-4x64; do
  for target in direct ours haproxy nginx; do
    [[ -n ${rps[$load,$target]:-} ]] || continue
    # shellcheck disable=SC2086
    med_rps[$load,$target]=$(median ${rps[$load,$target]})
    # shellcheck disable=SC2086
    med_p99[$load,$target]=$(median ${p99[$load,$target]})
    # shellcheck disable=SC2086
    med_cpu[$load,$target]=$(median ${cpu[$load,$target]})
  done
  echo
  label=p99_ms; [[ $load == h2* ]] && label=max_ms
  printf '%-10s %-10s %12s %10s %12s %14s\n' load target requests/s "$label" cpu_us/req ours/theirs
  for target in direct ours haproxy nginx; do
    [[ -n ${med_rps[$load,$target]:-} ]] || continue
    case $target in
      direct) r="-" ;;
      ours) r="1.00" ;;
      *) r=$(ratio "${med_rps[$load,ours]}" "${med_rps[$load,$target]}") ;;
    esac
    printf '%-10s %-10s %12.0f %10.2f %12.1f %14s\n' "$load" "$target" "${med_rps[$load,$target]}" "${med_p99[$load,$target]}" "${med_cpu[$load,$target]}" "$r"
  done
done

if python3 -c "import sys; sys.exit(0 if ${med_rps[keepalive,haproxy]} >= ${med_rps[keepalive,nginx]} else 1)"; then
  best=haproxy
else
  best=nginx
fi
# Each round's keep-alive ratio against the better peer of that round: how far the noise
# moves the result.
echo
echo "keep-alive ours/best by round (machine noise): $(python3 -c '
import sys
ours, haproxy, nginx = ([float(x) for x in a.split()] for a in sys.argv[1:])
print(" ".join("%.2f" % (o / max(h, n)) for o, h, n in zip(ours, haproxy, nginx)))
' "${rps[keepalive,ours]}" "${rps[keepalive,haproxy]}" "${rps[keepalive,nginx]}")"
echo
echo "RESULT lb-http ours/best=$(ratio "${med_rps[keepalive,ours]}" "${med_rps[keepalive,$best]}") p99_ours_ms=${med_p99[keepalive,ours]} p99_best_ms=${med_p99[keepalive,$best]}"
