#!/usr/bin/env bash
# Memory per idle client connection: lab-lb against HAProxy and nginx, side by side in one run.
# CONNECTIONS (10000) clients connect to each proxy in each listener mode and stay idle, and the
# proxy's resident memory (RSS of the process and its children: nginx's worker) is read before
# and after. The modes:
#   http    connected to the `http` listener, no request yet
#   https   TLS 1.3 handshake done (ALPN http/1.1), no request yet
#   h2      TLS 1.3 handshake done with ALPN h2, the client preface and SETTINGS sent (and the
#           server's SETTINGS acknowledged), no stream yet
#   ws      a WebSocket upgrade on an `http` listener answered 101 by the backend, then
#           nothing either way: the client's and the backend's connections are the proxy's
#   tcp     connected to a `tcp` listener (HAProxy `mode tcp`, nginx `stream`), which has
#           connected on to the backend: both connections are the proxy's
# Each proxy is started afresh for each mode and stopped after it: memory a mode's connections
# leave behind (still being given back, or kept by the allocator) is not the next mode's
# baseline. One proxy thread each, the same limits for all three; the http and https listeners'
# backend listens nowhere (no request ever goes on), so only the ws and tcp listeners have one
# (it accepts, answers an upgrade with 101, and holds). Prints KB per connection for each proxy
# and mode, and ours against the best. Last line, machine-readable:
#   RESULT lb-idle-memory http_kb=<ours> https_kb=<ours> h2_kb=<ours> ws_kb=<ours>
#     tcp_kb=<ours> best_http_kb=<x> best_https_kb=<y> best_h2_kb=<z> best_ws_kb=<v>
#     best_tcp_kb=<w>
# The descriptor limit is raised as far as the machine allows; CONNECTIONS is lowered to fit.
set -euo pipefail
cd "$(dirname "$0")/.."

CONNECTIONS=${CONNECTIONS:-10000}

declare -A needs=([haproxy]=haproxy [nginx]=nginx-light [openssl]=openssl [python3]=python3 [curl]=curl)
# nginx's stream module has no command of its own to look for.
[[ -e /usr/lib/nginx/modules/ngx_stream_module.so ]] || needs[ngx-stream-module]=libnginx-mod-stream
source bench/lib.sh

# Root may raise the hard limit too; anyone else goes as far as theirs.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
# The client (and in tcp mode the backend) holds one descriptor a connection, each proxy one
# (two in tcp mode); HAProxy reserves two per connection of its maxconn (client and server side)
# and refuses to start short of them.
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
  port[$target,http]=$(free_port); port[$target,https]=$(free_port); port[$target,tcp]=$(free_port)
  port[$target,ws]=$(free_port)
  # h2 is the https listener's, chosen by ALPN.
  port[$target,h2]=${port[$target,https]}
done
metrics=$(free_port); nothing=$(free_port); backend=$(free_port)

# The ws and tcp modes' backend: accepts every connection and holds it until the proxy closes
# it; a request asking for a WebSocket upgrade is answered 101 (and then held), any other 200.
cat > "$work/backend.py" <<'PY'
import asyncio, base64, hashlib, sys
GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
async def hold(reader, writer):
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            fields = dict(l.split(b":", 1) for l in head.split(b"\r\n")[1:] if b":" in l)
            fields = {k.strip().lower(): v.strip() for k, v in fields.items()}
            if fields.get(b"upgrade", b"").lower() == b"websocket":
                accept = base64.b64encode(hashlib.sha1(fields[b"sec-websocket-key"] + GUID).digest())
                writer.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                             b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n\r\n")
                break
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
        await reader.read()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    writer.close()
async def main():
    server = await asyncio.start_server(hold, "127.0.0.1", int(sys.argv[1]), backlog=4096)
    await server.serve_forever()
asyncio.run(main())
PY
"${on_load_cores[@]}" python3 "$work/backend.py" "$backend" & pids+=($!)

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
http = { keepalive_timeout = "300s" }
[[listener]]
name = "ws"
listen = "127.0.0.1:${port[ours,ws]}"
mode = "http"
backend = "held"
max_connections = $limit
max_connections_per_client = $limit
hello_timeout = "300s"
http = { keepalive_timeout = "300s" }
[[listener]]
name = "tcp"
listen = "127.0.0.1:${port[ours,tcp]}"
mode = "tcp"
backend = "held"
max_connections = $limit
max_connections_per_client = $limit
idle_timeout = "300s"
[[listener]]
name = "https"
listen = "127.0.0.1:${port[ours,https]}"
mode = "https"
backend = "web"
max_connections = $limit
max_connections_per_client = $limit
hello_timeout = "300s"
[listener.http]
keepalive_timeout = "300s"
[[listener.http.cert]]
cert = "$work/cert.pem"
key = "$work/key.pem"
[[backend]]
name = "web"
server = [{ address = "127.0.0.1:$nothing" }]
[[backend]]
name = "held"
server = [{ address = "127.0.0.1:$backend" }]
CONF

cat > "$work/haproxy.cfg" <<CONF
global
  nbthread 1
  maxconn $limit
defaults
  mode http
  timeout connect 5s
  timeout client 300s
  timeout http-request 300s
  timeout http-keep-alive 300s
  timeout server 300s
  timeout tunnel 300s
frontend http
  bind 127.0.0.1:${port[haproxy,http]}
  bind 127.0.0.1:${port[haproxy,https]} ssl crt $work/combined.pem alpn h2,http/1.1
  default_backend web
frontend ws
  bind 127.0.0.1:${port[haproxy,ws]}
  default_backend held
backend web
  server s1 127.0.0.1:$nothing
backend held
  server s1 127.0.0.1:$backend
listen tcp
  mode tcp
  bind 127.0.0.1:${port[haproxy,tcp]}
  server s1 127.0.0.1:$backend
CONF

mkdir -p "$work/nginx"
cat > "$work/nginx/nginx.conf" <<CONF
load_module /usr/lib/nginx/modules/ngx_stream_module.so;
worker_processes 1; daemon off; pid $work/nginx/nginx.pid; error_log $work/nginx/error.log;
worker_rlimit_nofile $(( 2 * limit + 100 ));
events { worker_connections $(( 2 * limit )); }
http { access_log off; client_header_timeout 300s; keepalive_timeout 300s;
  client_body_temp_path $work/nginx; proxy_temp_path $work/nginx; fastcgi_temp_path $work/nginx;
  uwsgi_temp_path $work/nginx; scgi_temp_path $work/nginx;
  server {
    listen 127.0.0.1:${port[nginx,http]};
    listen 127.0.0.1:${port[nginx,https]} ssl http2;
    ssl_certificate $work/cert.pem; ssl_certificate_key $work/key.pem; ssl_protocols TLSv1.2 TLSv1.3;
    location / { proxy_pass http://127.0.0.1:$nothing; }
  }
  server {
    listen 127.0.0.1:${port[nginx,ws]};
    proxy_read_timeout 300s; proxy_send_timeout 300s;
    location / { proxy_pass http://127.0.0.1:$backend; proxy_http_version 1.1;
      proxy_set_header Upgrade \$http_upgrade; proxy_set_header Connection upgrade; }
  } }
stream {
  server { listen 127.0.0.1:${port[nginx,tcp]}; proxy_pass 127.0.0.1:$backend; proxy_timeout 300s; }
}
CONF

wait_port "$backend"

# Starts TARGET afresh (pid[TARGET]) and waits for each of its listeners.
start() {
  case $1 in
    ours) "${on_proxy_core[@]}" "$LB" run --config "$work/lb.toml" 2>>"$work/lb.log" & ;;
    haproxy) "${on_proxy_core[@]}" haproxy -q -f "$work/haproxy.cfg" & ;;
    nginx) "${on_proxy_core[@]}" nginx -p "$work/nginx" -c "$work/nginx/nginx.conf" & ;;
  esac
  pid[$1]=$!; pids+=($!)
  local mode
  for mode in http https ws tcp; do wait_port "${port[$1,$mode]}"; done
}
# Stops TARGET and waits until it has exited (nginx's worker with it), so that its listening
# ports are free for the next start.
stop() {
  kill "${pid[$1]}" 2>/dev/null || true
  wait "${pid[$1]}" 2>/dev/null || true
  local mode
  for mode in http https ws tcp; do
    for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/"${port[$1,$mode]}") 2>/dev/null || break; sleep 0.05; done
  done
}

# Opens COUNT connections to PORT in MODE, prints `open N` once they are, and holds them until
# its stdin closes.
cat > "$work/hold.py" <<'PY'
import asyncio, ssl, sys
port, count, mode = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
context = None
if mode in ("https", "h2"):
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.set_alpn_protocols(["h2" if mode == "h2" else "http/1.1"])
UPGRADE = (b"GET /socket HTTP/1.1\r\nHost: bench.test\r\nUpgrade: websocket\r\n"
           b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
           b"Sec-WebSocket-Version: 13\r\n\r\n")
async def ws_upgrade(reader, writer):
    writer.write(UPGRADE)
    head = await reader.readuntil(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 101"):
        raise RuntimeError(f"no upgrade: {head.splitlines()[0]!r}")
# The client connection preface and an empty SETTINGS frame; then, once the server's SETTINGS
# came, their acknowledgement: an h2 connection set up, no stream opened.
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0])
SETTINGS_ACK = bytes([0, 0, 0, 4, 1, 0, 0, 0, 0])
async def h2_setup(reader, writer):
    if writer.get_extra_info("ssl_object").selected_alpn_protocol() != "h2":
        raise RuntimeError("the server did not choose h2")
    writer.write(PREFACE)
    # The server's first frame is its SETTINGS (RFC 9113 3.4).
    head = await reader.readexactly(9)
    if head[3] != 4:
        raise RuntimeError(f"first frame of type {head[3]}, not SETTINGS")
    await reader.readexactly(int.from_bytes(head[:3], "big"))
    writer.write(SETTINGS_ACK)
    await writer.drain()
async def main():
    held, slots = [], asyncio.Semaphore(64)
    async def one():
        async with slots:
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", port, ssl=context,
                server_hostname="bench.test" if context else None)
            if mode == "h2":
                await h2_setup(reader, writer)
            elif mode == "ws":
                await ws_upgrade(reader, writer)
            held.append(writer)
    results = await asyncio.gather(*(one() for _ in range(count)), return_exceptions=True)
    failed = [r for r in results if isinstance(r, Exception)]
    print(f"open {len(held)} failed {len(failed)} {failed[0] if failed else ''}", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
asyncio.run(main())
PY

declare -A kb
# MODES="http ws" runs some of them.
read -ra modes <<< "${MODES:-http https h2 ws tcp}"
mb() { awk -v kb="$1" 'BEGIN { printf "%.1f", kb / 1024 }'; }
echo "lab-lb idle connections: $CONNECTIONS per proxy and mode ($placement)"
printf '%-8s %-6s %10s %10s %10s %12s\n' proxy mode "rss0 MB" "rss MB" "KB/conn" "after close"
for mode in "${modes[@]}"; do
  for target in ours haproxy nginx; do
    start "$target"
    # A request first, so what is set up on first use is in the baseline.
    case $mode in
      # The tcp mode's backend never answers.
      tcp) curl -s -m 1 -o /dev/null "http://127.0.0.1:${port[$target,$mode]}/" || true ;;
      http|ws) curl -s -o /dev/null "http://127.0.0.1:${port[$target,$mode]}/" || true ;;
      https) curl -sk --http1.1 -o /dev/null "https://127.0.0.1:${port[$target,$mode]}/" || true ;;
      h2) curl -sk --http2 -o /dev/null "https://127.0.0.1:${port[$target,$mode]}/" || true ;;
    esac
    sleep 1
    before=$(rss_kb "${pid[$target]}")
    exec {to_client}> >(exec "${on_load_cores[@]}" python3 "$work/hold.py" "${port[$target,$mode]}" "$CONNECTIONS" "$mode" > "$work/hold.out")
    # Thousands of handshakes from one Python thread: minutes on a busy machine.
    for _ in $(seq 3000); do [[ -s $work/hold.out ]] && break; sleep 0.1; done
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
    stop "$target"
  done
done

result="RESULT lb-idle-memory" bests=""
against="ours/best KB per connection:"
for mode in "${modes[@]}"; do
  best=$(python3 -c "print(min(${kb[haproxy,$mode]}, ${kb[nginx,$mode]}))")
  against+=" $mode $(python3 -c "print('%.1f' % (${kb[ours,$mode]} / max($best, 0.1)))")x"
  result+=" ${mode}_kb=${kb[ours,$mode]}"
  bests+=" best_${mode}_kb=$best"
done
echo "$against"
echo "$result$bests"
