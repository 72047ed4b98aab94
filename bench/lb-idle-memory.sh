#!/usr/bin/env bash
# Memory per idle client connection: lab-lb against HAProxy and nginx, side by side in one run.
# CONNECTIONS (10000) clients connect to each proxy's `http` listener (connected, no request
# yet) and then to its `https` listener (TLS 1.3 handshake done, no request yet), and the
# proxy's resident memory (RSS of the process and its children: nginx's worker) is read before
# and after. One proxy thread each, the same limits for all three; nothing is proxied, so no
# backend runs. Prints KB per connection for each proxy and mode, and ours against the best.
# Last line, machine-readable:
#   RESULT lb-idle-memory http_kb=<ours> https_kb=<ours> best_http_kb=<x> best_https_kb=<y>
# The descriptor limit is raised as far as the machine allows; CONNECTIONS is lowered to fit.
set -euo pipefail
cd "$(dirname "$0")/.."

CONNECTIONS=${CONNECTIONS:-10000}

declare -A needs=([haproxy]=haproxy [nginx]=nginx-light [openssl]=openssl [python3]=python3 [curl]=curl)
source bench/lib.sh

# Root may raise the hard limit too; anyone else goes as far as theirs.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
# The client holds one descriptor a connection, each proxy one; HAProxy reserves two per
# connection of its maxconn (client and server side) and refuses to start short of them.
fit=$(( $(ulimit -n) / 2 - 1200 ))
if (( CONNECTIONS > fit )); then
  echo "descriptor limit $(ulimit -n): $fit connections instead of $CONNECTIONS" >&2
  CONNECTIONS=$fit
fi
limit=$(( CONNECTIONS + 1000 ))

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
  -keyout "$work/key.pem" -out "$work/cert.pem" -subj /CN=bench.test \
  -addext subjectAltName=DNS:bench.test >/dev/null 2>&1
cat "$work/cert.pem" "$work/key.pem" > "$work/combined.pem"

declare -A port pid
for target in ours haproxy nginx; do
  port[$target,http]=$(free_port); port[$target,https]=$(free_port)
done
metrics=$(free_port); nothing=$(free_port)

# No request ever comes, so every timeout that could close an idle client is set long for all
# three: what is measured is what a connection holds while it waits.
cat > "$work/lb.toml" <<CONF
[log]
level = "warn"
[metrics]
listen = "127.0.0.1:$metrics"
[runtime]
worker_threads = 1
[[listener]]
name = "http"
listen = "127.0.0.1:${port[ours,http]}"
mode = "http"
backend = "web"
max_connections = $limit
max_connections_per_client = $limit
hello_timeout = "300s"
[[listener]]
name = "https"
listen = "127.0.0.1:${port[ours,https]}"
mode = "https"
backend = "web"
max_connections = $limit
max_connections_per_client = $limit
hello_timeout = "300s"
[[listener.http.cert]]
cert = "$work/cert.pem"
key = "$work/key.pem"
[[backend]]
name = "web"
server = [{ address = "127.0.0.1:$nothing" }]
CONF
"${on_proxy_core[@]}" "$LB" run --config "$work/lb.toml" 2>"$work/lb.log" & pids+=($!); pid[ours]=$!

cat > "$work/haproxy.cfg" <<CONF
global
  nbthread 1
  maxconn $limit
defaults
  mode http
  timeout connect 5s
  timeout client 300s
  timeout http-request 300s
  timeout server 60s
frontend http
  bind 127.0.0.1:${port[haproxy,http]}
  bind 127.0.0.1:${port[haproxy,https]} ssl crt $work/combined.pem alpn h2,http/1.1
  default_backend web
backend web
  server s1 127.0.0.1:$nothing
CONF
"${on_proxy_core[@]}" haproxy -q -f "$work/haproxy.cfg" & pids+=($!); pid[haproxy]=$!

mkdir -p "$work/nginx"
cat > "$work/nginx/nginx.conf" <<CONF
worker_processes 1; daemon off; pid $work/nginx/nginx.pid; error_log $work/nginx/error.log;
worker_rlimit_nofile $limit;
events { worker_connections $limit; }
http { access_log off; client_header_timeout 300s;
  client_body_temp_path $work/nginx; proxy_temp_path $work/nginx; fastcgi_temp_path $work/nginx;
  uwsgi_temp_path $work/nginx; scgi_temp_path $work/nginx;
  server {
    listen 127.0.0.1:${port[nginx,http]};
    listen 127.0.0.1:${port[nginx,https]} ssl http2;
    ssl_certificate $work/cert.pem; ssl_certificate_key $work/key.pem; ssl_protocols TLSv1.2 TLSv1.3;
    location / { proxy_pass http://127.0.0.1:$nothing; }
  } }
CONF
"${on_proxy_core[@]}" nginx -p "$work/nginx" -c "$work/nginx/nginx.conf" & pids+=($!); pid[nginx]=$!

for target in ours haproxy nginx; do
  wait_port "${port[$target,http]}"; wait_port "${port[$target,https]}"
done

# Opens COUNT connections to PORT (TLS handshakes done when TLS=1), prints `open N` once they
# are, and holds them until its stdin closes.
cat > "$work/hold.py" <<'PY'
import asyncio, ssl, sys
port, count, tls = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3] == "1"
context = None
if tls:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.set_alpn_protocols(["http/1.1"])
async def main():
    held, slots = [], asyncio.Semaphore(64)
    async def one():
        async with slots:
            held.append(await asyncio.open_connection(
                "127.0.0.1", port, ssl=context, server_hostname="bench.test" if tls else None))
    results = await asyncio.gather(*(one() for _ in range(count)), return_exceptions=True)
    failed = [r for r in results if isinstance(r, Exception)]
    print(f"open {len(held)} failed {len(failed)} {failed[0] if failed else ''}", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
asyncio.run(main())
PY

declare -A kb
mb() { awk -v kb="$1" 'BEGIN { printf "%.1f", kb / 1024 }'; }
echo "lab-lb idle connections: $CONNECTIONS per proxy and mode ($placement)"
printf '%-8s %-6s %10s %10s %10s %12s\n' proxy mode "rss0 MB" "rss MB" "KB/conn" "after close"
for mode in http https; do
  tls=0; [[ $mode == https ]] && tls=1
  for target in ours haproxy nginx; do
    # A request first, so what is set up on first use is in the baseline.
    curl -sk -o /dev/null "$([[ $tls == 1 ]] && echo https || echo http)://127.0.0.1:${port[$target,$mode]}/" || true
    sleep 1
    before=$(rss_kb "${pid[$target]}")
    exec {to_client}> >(exec "${on_load_cores[@]}" python3 "$work/hold.py" "${port[$target,$mode]}" "$CONNECTIONS" "$tls" > "$work/hold.out")
    for _ in $(seq 600); do [[ -s $work/hold.out ]] && break; sleep 0.1; done
    opened=$(awk '{ print $2 }' "$work/hold.out")
    sleep 2
    during=$(rss_kb "${pid[$target]}")
    exec {to_client}>&-
    sleep 3
    after=$(rss_kb "${pid[$target]}")
    if [[ ${opened:-0} -lt $CONNECTIONS ]]; then
      echo "$target $mode: only ${opened:-0} of $CONNECTIONS connections opened: $(cat "$work/hold.out")" >&2
      (( ${opened:-0} * 2 >= CONNECTIONS )) || exit 1
    fi
    kb[$target,$mode]=$(python3 -c "print('%.1f' % (($during - $before) / max(${opened:-0}, 1)))")
    printf '%-8s %-6s %10s %10s %10s %12s\n' "$target" "$mode" "$(mb "$before")" \
      "$(mb "$during")" "${kb[$target,$mode]}" "$(mb "$after")"
    : > "$work/hold.out"
  done
done

best() { python3 -c "print(min(float(a) for a in '$1 $2'.split()))"; }
best_http=$(best "${kb[haproxy,http]}" "${kb[nginx,http]}")
best_https=$(best "${kb[haproxy,https]}" "${kb[nginx,https]}")
echo "ours/best KB per connection: http $(python3 -c "print('%.1f' % (${kb[ours,http]} / max($best_http, 0.1)))")x," \
  "https $(python3 -c "print('%.1f' % (${kb[ours,https]} / max($best_https, 0.1)))")x"
echo "RESULT lb-idle-memory http_kb=${kb[ours,http]} https_kb=${kb[ours,https]} best_http_kb=$best_http best_https_kb=$best_https"
