#!/usr/bin/env python3
"""Writes the seed corpus of every fuzz target into fuzz/corpus/<target>/ (run from anywhere;
deterministic but for the ClientHellos' random fields). The seeds are small: what the unit
tests and configs/ exercise, a few files a target. Inputs the fuzzers found worth keeping as
regressions (regression-*) are added by hand next to them."""

import pathlib
import re
import ssl
import struct

FUZZ = pathlib.Path(__file__).resolve().parent
ROOT = FUZZ.parent


def write(target, name, data):
    d = FUZZ / "corpus" / target
    d.mkdir(parents=True, exist_ok=True)
    (d / name).write_bytes(data if isinstance(data, bytes) else data.encode())


requests = {
    "get": b"GET /a/b?x=1 HTTP/1.1\r\nHost: App.Lab:8080\r\nConnection: close\r\n\r\n",
    "post": b"POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello",
    "upgrade": b"GET /chat HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, Upgrade\r\n"
    b"Upgrade: websocket\r\nSec-WebSocket-Key: k\r\n\r\n",
    "hop-by-hop": b"GET /x HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, X-Secret\r\nX-Secret: 1\r\n"
    b"Keep-Alive: 5\r\nX-Forwarded-For: 6.6.6.6\r\nForwarded: for=6.6.6.6\r\nAccept: */*\r\n\r\n",
    "connection-names-length": b"POST / HTTP/1.1\r\nHost: a\r\nConnection: Content-Length\r\n"
    b"Content-Length: 3\r\n\r\nabc",
    "chunked": b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
}
for name, data in requests.items():
    write("http_request", name, data)

# First byte: 1 = answer to HEAD, 2 = client closes after it, 4 = upgrade asked for.
responses = {
    "length": (0, b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nX-App: 1\r\n\r\nabc"),
    "chunked-and-length": (2, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n"
                              b"Keep-Alive: timeout=5\r\n\r\n"),
    "gzip-until-close": (0, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\nContent-Length: 9\r\n\r\n"),
    "no-content": (0, b"HTTP/1.1 204 No Content\r\nContent-Length: 3\r\nX-A: 1\r\n\r\n"),
    "head": (1, b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n"),
    "http10": (0, b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 1\r\n\r\nx"),
    "switching": (4, b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     b"Sec-WebSocket-Accept: x\r\n\r\nframe"),
    "continue": (0, b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 304 Not Modified\r\nETag: x\r\n\r\n"),
}
for name, (flags, data) in responses.items():
    write("http_response", name, bytes([flags]) + data)

# First byte: the size of the pieces the body is fed in.
bodies = {
    "two-chunks": (1, b"5\r\nhello\r\n1a;name=value\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\n\r\n"),
    "trailers": (3, b"4\r\nwiki\r\n0\r\nExpires: never\r\nX-Other: 1\r\n\r\n"),
    "then-next": (7, b"3\r\nabc\r\n0\r\n\r\nHTTP/1.1 200 OK\r\n"),
    "unfinished": (2, b"5\r\nhello\r\n0\r\n"),
    "too-large": (255, b"fffffffffffffffffff\r\n"),
}
for name, (step, data) in bodies.items():
    write("chunked", name, bytes([step]) + data)

# The h2 path's reader of a server's chunked body. First byte: the size of the reads.
h2_bodies = {
    "grpc-trailers": (1, b"5\r\n\0\0\0\0\0\r\n0\r\ngrpc-status: 0\r\ngrpc-message: ok\r\n\r\n"),
    "hop-by-hop-trailers": (4, b"3\r\nabc\r\n0\r\nConnection: close\r\nContent-Length: 9\r\n"
                               b"Keep-Alive: 1\r\nX-Ok: 1\r\n\r\n"),
    "bare-lf": (2, b"3\nabc\n0\n\n"),
    "extension-then-next": (5, b"2;a=b\r\nhi\r\n0\r\n\r\nHTTP/1.1 200 OK\r\n"),
    "data-too-long": (3, b"3\r\nabcd\r\n0\r\n\r\n"),
    "bad-trailer": (7, b"0\r\nbad field\r\n\r\n"),
    "size-overflow": (255, b"fffffffffffffffffff\r\n"),
    "unfinished": (1, b"a\r\n0123"),
}
for name, (step, data) in h2_bodies.items():
    write("h2_dechunk", name, bytes([step]) + data)


def client_hello(name, maximum_version=None):
    """A real ClientHello (Python's TLS stack), as the first bytes a client sends."""
    ctx = ssl.create_default_context()
    if maximum_version:
        ctx.maximum_version = maximum_version
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ctx.wrap_bio(incoming, outgoing, server_hostname=name)
    try:
        tls.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return outgoing.read()


hello = client_hello("a.apps.lab")
# The same handshake message in two records.
hello_split = b"".join(b"\x16\x03\x01" + struct.pack(">H", len(part)) + part
                       for body in [hello[5:]] for part in (body[:100], body[100:]))
write("sni", "hello", hello)
write("sni", "hello-split-records", hello_split)
write("sni", "hello-ip-address", client_hello("10.0.0.1"))
write("sni", "not-tls", b"GET / HTTP/1.1\r\n")

# A TLS server connection of an https listener, given these as the client's first bytes.
write("tls_server", "hello", hello)
write("tls_server", "hello-split-records", hello_split)
write("tls_server", "hello-then-data", hello + b"\x17\x03\x03\x00\x05hello")
write("tls_server", "hello-then-alert", hello + b"\x15\x03\x03\x00\x02\x02\x28")
# Plain HTTP to an https port: once read twice by rustls (a panic in a debug build).
write("tls_server", "plain-http", b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
write("tls_server", "empty", b"")
write("tls_server", "hello-tls12", client_hello("fuzz.test", ssl.TLSVersion.TLSv1_2))

v2 = b"\r\n\r\n\x00\r\nQUIT\n"
proxies = {
    "v1-tcp4": b"PROXY TCP4 203.0.113.7 10.10.2.2 40000 443\r\nGET / HTTP/1.1\r\n",
    "v1-tcp6": b"PROXY TCP6 2001:db8::1 ::ffff:10.0.0.1 5000 80\r\n",
    "v1-unknown": b"PROXY UNKNOWN\r\n",
    "v2-tcp4": v2 + b"\x21\x11\x00\x0c" + bytes([203, 0, 113, 7, 10, 10, 2, 2]) + struct.pack(">HH", 40000, 443),
    "v2-tcp6": v2 + b"\x21\x21\x00\x24" + bytes(range(32)) + struct.pack(">HH", 5000, 443) + b"payload",
    "v2-local": v2 + b"\x20\x00\x00\x00",
}
for name, data in proxies.items():
    write("proxy_protocol", name, data)


def ipv4(payload):
    header = bytearray(b"\x45\x00" + struct.pack(">H", 20 + len(payload)) + b"\x00\x00\x00\x00\x40\x11\x00\x00"
                       + bytes([10, 10, 100, 2]) + bytes([10, 10, 1, 1]))
    return bytes(header) + payload


# First byte: 1 = preshared key, 2 = the device under load. Then operations (see
# fuzz-targets/src/wireguard.rs): 0 raw, 1 the peer's packet (length in 8 bytes), 2 altered,
# 3 replayed, 4 new handshake, 5 the gateway's packet, 6 typed with the session's index, 7 raw
# to the peer.
packet = ipv4(b"\x00" * 20)  # 40 bytes: 5 units of 8
programs = {
    "data": bytes([0, 1, 5]) + packet,
    "data-psk-under-load": bytes([3, 1, 5]) + packet + bytes([4, 1, 5]) + packet,
    "altered-and-replayed": bytes([0, 2, 40]) + packet + bytes([17, 0x80, 1, 5]) + packet + bytes([3, 0]),
    "raw-and-typed": bytes([0, 0, 8]) + b"\x04\x00\x00\x00\x01\x02\x03\x04" + bytes([6, 4, 16]) + bytes(16),
    "rekey-and-back": bytes([0, 4, 5, 3]) + b"abc" + bytes([7, 4]) + b"\x01\x00\x00\x00",
}
for name, data in programs.items():
    write("wireguard", name, data)

key = "22" * 32
other = "44" * 32
uapi = {
    "add": f"public_key={other}\nendpoint=192.0.2.7:51820\npersistent_keepalive_interval=25\n"
           f"allowed_ip=10.10.100.3/32\nallowed_ip=fd00::/64\n\n",
    "change": f"private_key={'11' * 32}\nlisten_port=51820\npublic_key={key}\nreplace_allowed_ips=true\n"
              f"allowed_ip=10.10.100.9/24\npreshared_key={'33' * 32}\nendpoint=[2001:db8::1]:51820\n\n",
    "remove": f"public_key={key}\nremove=true\n\n",
    "replace-update-only": f"replace_peers=true\npublic_key={other}\nupdate_only=true\nallowed_ip=10.0.0.0/8\n"
                           f"public_key={key}\nprotocol_version=1\n\n",
}
for name, data in uapi.items():
    write("uapi", name, data)

lb = (ROOT / "configs/lb.toml").read_text()
write("config_lb", "lb.toml", lb)
# The commented L7 example, enabled in place of the two ingress listeners (without its
# certificate: https needs a readable pair).
l7 = re.sub(r"(?s)\[\[listener\]\]\nname = \"ingress-http\".*?(?=\[\[backend\]\])", "", lb)
l7 = l7.replace('[[listener]]\nname = "ingress-https"\nlisten = "192.168.1.50:443"\nmode = "tls-passthrough"', "")
example = lb.split("# L7 instead")[1]
example = "\n".join(line[2:] for line in example.splitlines()[2:] if line.startswith("# "))
example = re.sub(r'(?s)name = "ingress-https".*?(?=\[\[listener\]\])', "", example)
example = example.replace("[[listener]]\n[[listener]]", "[[listener]]")
write("config_lb", "lb-http.toml", l7.split("# L7 instead")[0] + example
      + '\n[[listener.http.route]]\npath = "/api"\nbackend = "workers-http"\nadd_request_headers = { x-api = "1" }\n'
      'remove_response_headers = ["server"]\nmax_body = 1048576\n')
write("config_lb", "not-toml", "[[listener]\nname = ")
write("config_vpn", "vpn.toml", (ROOT / "configs/vpn.toml").read_text())
write("config_vpn", "bad-peer", (ROOT / "configs/vpn.toml").read_text().replace('"10.10.100.2/32"', '"10.10.1.5/32"'))
write("config_lab", "lab.toml", (ROOT / "configs/lab.toml").read_text())
