#!/usr/bin/env python3
"""A flood of WireGuard handshake initiations with a valid mac1, for bench/vpn.sh.

Each message has the gateway's mac1 (BLAKE2s-128 keyed with BLAKE2s-256("mac1----" || the
gateway's public key), what any holder of a client config can compute) over random contents:
the gateway must verify mac1 before it may drop the message, and past its rate limit it answers
each with a cookie reply. Sends RATE messages a second for SECONDS from the namespace it runs in;
prints the number sent and the cookie replies (type 3) seen to stderr: replies are the proof
that mac1 was valid and the gateway was under load.

usage: handshake-flood.py HOST:PORT GATEWAY_PUBLIC_KEY_BASE64 RATE SECONDS
"""
import base64
import hashlib
import os
import socket
import struct
import sys
import time


def initiations(public_key: bytes, count: int) -> list[bytes]:
    mac1_key = hashlib.blake2s(b"mac1----" + public_key).digest()
    messages = []
    for _ in range(count):
        # type 1, 3 reserved bytes, sender index, ephemeral, encrypted static, encrypted timestamp
        body = struct.pack("<I", 1) + os.urandom(4 + 32 + 48 + 28)
        mac1 = hashlib.blake2s(body, digest_size=16, key=mac1_key).digest()
        messages.append(body + mac1 + bytes(16))
    return messages


def main() -> None:
    if len(sys.argv) != 5:
        sys.exit(__doc__)
    host, port = sys.argv[1].rsplit(":", 1)
    public_key = base64.b64decode(sys.argv[2])
    rate, seconds = float(sys.argv[3]), float(sys.argv[4])
    messages = initiations(public_key, 1024)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setblocking(False)
    target = (host, int(port))
    start = time.monotonic()
    sent = cookies = 0
    while (elapsed := time.monotonic() - start) < seconds:
        # Catch up to the rate every millisecond: a steady flood, not bursts.
        due = int(elapsed * rate)
        while sent < due:
            try:
                sock.sendto(messages[sent % len(messages)], target)
            except BlockingIOError:
                break
            sent += 1
        try:
            while True:
                cookies += sock.recv(256)[:1] == b"\x03"
        except BlockingIOError:
            pass
        time.sleep(0.001)
    print(f"{sent} initiations, {cookies} cookie replies in {time.monotonic() - start:.1f} s",
          file=sys.stderr)


main()
