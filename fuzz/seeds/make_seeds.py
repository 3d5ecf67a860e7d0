#!/usr/bin/env python3
"""Writes the seed inputs of the fuzz targets under seeds/<target>/ (run from fuzz/).

Seeds only shorten the way to the interesting code (a valid archive, an authentic proxy
message); the fuzzer finds the rest. Rerun after changing a target's input format.
"""
import base64, gzip, hashlib, io, json, os, tarfile, zipfile

def put(target, name, data):
    os.makedirs(f"seeds/{target}", exist_ok=True)
    with open(f"seeds/{target}/{name}", "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())

# seed_request: request heads against the fixture tree of the target.
H = "0123456789abcdef0123456789abcdef01234567"
R = "89abcdef0123456789abcdef0123456789abcdef"
for i, head in enumerate([
    "GET /payload.bin HTTP/1.1\r\nHost: x\r\n\r\n",
    "HEAD /payload.bin HTTP/1.1\r\nRange: bytes=10-19\r\n\r\n",
    "GET /payload.bin HTTP/1.1\r\nRange: bytes=-5\r\n\r\n",
    "GET /payload.bin HTTP/1.1\r\nRange: bytes=90-\r\n\r\n",
    "GET /payload.bin HTTP/1.0\r\nRange: bytes=200-300\r\n\r\n",
    f"GET /{H}/file HTTP/1.1\r\nRange: bytes=0-0\r\n\r\n",
    f"GET /{R}/file?relay HTTP/1.1\r\nRange: bytes=50-\r\n\r\n",
    f"GET /{H}/up HTTP/1.1\r\n\r\n",
    "GET /%2e%2e/secret HTTP/1.1\r\n\r\n",
    "GET /out HTTP/1.1\r\n\r\n",
    "GET /in HTTP/1.1\r\n\r\n",
    "GET /fifo HTTP/1.1\r\n\r\n",
    "POST /payload.bin HTTP/1.1\r\n\r\n",
]):
    put("seed_request", f"head{i}", head)

# extract: first byte 0 = tar (gzipped by the target), 1 = .tar.gz, 2 = zip.
def tar(entries, fmt=tarfile.GNU_FORMAT):
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=fmt) as t:
        for name, kind, data, mode in entries:
            info = tarfile.TarInfo(name)
            info.mode = mode
            if kind == "dir":
                info.type = tarfile.DIRTYPE
                t.addfile(info)
            elif kind == "sym":
                info.type = tarfile.SYMTYPE
                info.linkname = data
                t.addfile(info)
            else:
                info.size = len(data)
                t.addfile(info, io.BytesIO(data))
    return out.getvalue()

plain = tar([("mod/", "dir", None, 0o755), ("mod/init.pp", "file", b"class x {}\n", 0o644),
             ("mod/bin/run", "file", b"#!/bin/sh\n", 0o4755)])
put("extract", "tar", b"\0" + plain)
put("extract", "targz", b"\1" + gzip.compress(plain))
put("extract", "tar-pax", b"\0" + tar([("a/" + "n" * 150, "file", b"long", 0o644)], tarfile.PAX_FORMAT))
put("extract", "tar-link", b"\0" + tar([("link", "sym", "../etc", 0o777)]))
z = io.BytesIO()
with zipfile.ZipFile(z, "w") as zf:
    zf.writestr("dir/", b"")
    zf.writestr("dir/a.txt", b"hello")
    zf.writestr(zipfile.ZipInfo("b.txt"), b"stored")
    zf.writestr("c.txt", b"deflated " * 20, compress_type=zipfile.ZIP_DEFLATED)
put("extract", "zip", b"\2" + z.getvalue())

# key_payload: the Ed25519 base point is a valid, strong public key.
point = bytes.fromhex("58" + "66" * 31)
pub = "p2pu-ed25519:" + base64.b64encode(point).decode()
put("key_payload", "pub", pub + " ops@example laptop\n")
put("key_payload", "pub-bare", pub)
put("key_payload", "revoke", "p2pu-revoke:0123456789abcdef leaked laptop\n")
put("key_payload", "secret", "p2pu-ed25519-secret:" + base64.b64encode(bytes(range(32))).decode() + "\n")

# serf_answers: (older JSON seeds; the RPC ones are below and beside them).
def bstr(b): return str(len(b)).encode() + b":" + b
def bint(k, v): return bstr(k) + b"i%de" % v
ann = (b"d" + bstr(b"ih") + bstr(bytes(20)) + bstr(b"kid") + bstr(bytes(8)) + bstr(b"kind")
       + bstr(b"manifest") + bint(b"len", 10) + bstr(b"name") + bstr(b"site.pp")
       + bint(b"seq", 7) + bstr(b"sha256") + bstr(bytes(32)) + bstr(b"sig") + bstr(bytes(64))
       + bint(b"v", 1) + b"e")
wire = "p2pu1:" + base64.urlsafe_b64encode(ann).decode().rstrip("=")
status = {"node": "n1", "updates": [
    {"name": "site.pp", "seq": 7, "status": "applied", "at": 1700000000},
    {"name": "mod.tgz", "seq": 2, "status": "failed", "reason": "puppet exit 1", "at": 1700000001},
    {"name": "held.pp", "seq": 9, "status": "held", "at": 1700000002}]}
put("serf_answers", "status", json.dumps({"Acks": ["n1", "n2"], "Responses": {
    "n1": json.dumps(status), "n2": wire + "\n"}}))
put("serf_answers", "empty", '{"Acks":null,"Responses":{}}')
# A `members` reply body as Serf's RPC sends it (MessagePack; addresses as 4 or 16 bytes).
def mp(v):
    if isinstance(v, bool): return b"\xc3" if v else b"\xc2"
    if isinstance(v, int): return b"\xcd" + v.to_bytes(2, "big")
    if isinstance(v, str): v = v.encode(); return bytes([0xa0 | len(v)]) + v if len(v) < 32 else b"\xd9" + bytes([len(v)]) + v
    if isinstance(v, bytes): return b"\xc4" + bytes([len(v)]) + v
    if isinstance(v, list): return bytes([0x90 | len(v)]) + b"".join(mp(x) for x in v)
    if isinstance(v, dict): return bytes([0x80 | len(v)]) + b"".join(mp(k) + mp(x) for k, x in v.items())
put("serf_answers", "members", mp({"Members": [
    {"Name": "n1", "Addr": bytes([127, 0, 0, 1]), "Port": 7946, "Tags": {"role": "a"}, "Status": "alive"},
    {"Name": "n2", "Addr": bytes(15) + b"\x01", "Port": 7946, "Tags": {}, "Status": "failed"},
    {"Name": "n\x1b3", "Addr": b"\x01\x02\x03", "Port": 1, "Tags": {}, "Status": "alive"}]}))

# nat_client and proxy_dispatch: one datagram a line, the first byte picks the source and
# framing (see the targets), the rest is the sealed JSON payload.
def line(flags, sender, body):
    return bytes([flags]) + json.dumps({"from": sender, "body": body}, separators=(",", ":")).encode()

P, B = 0, 1  # nat_client sources: the proxy, the session peer b
client = [
    line(P, "proxy", {"t": "registered", "mapped": "203.0.113.5:4000", "alt_port": 3479}),
    line(P, "proxy", {"t": "punch", "peer": "c", "local": "127.0.0.1:9", "mapped": "127.0.0.1:9", "cert": "ab" * 32}),
    line(P, "proxy", {"t": "refused", "target": "c", "reason": "not registered"}),
    line(P, "proxy", {"t": "unknown"}),
    line(B, "b", {"t": "probe"}),
    line(B, "b", {"t": "probe_ack", "seen_as": "203.0.113.5:4000"}),
    line(B, "b", {"t": "ping"}),
    line(B, "b", {"t": "announce", "id": 1, "wire": wire}),
    line(B, "b", {"t": "announce_ack", "id": 1}),
    line(B, "b", {"t": "peers", "names": ["c", "d"]}),
    line(P, "b", {"t": "relayed", "inner": {"t": "announce", "id": 2, "wire": wire}}),
    line(P, "b", {"t": "relayed", "inner": {"t": "ping"}}),
    line(B, "b", {"t": "end_session"}),
]
for i, l in enumerate(client):
    put("nat_client", f"msg{i}", l)
put("nat_client", "all", b"\n".join(client))

A, Bm, C = 0, 1, 2  # proxy_dispatch sources: members a and b, a stranger
proxy = [
    line(A, "a", {"t": "register", "local": "192.168.1.10:4000", "keepalive_secs": 5, "cert": "x"}),
    line(C, "c", {"t": "register", "local": "10.0.0.3:4000", "keepalive_secs": 1, "cert": ""}),
    line(A, "a", {"t": "talk_to", "target": "b"}),
    line(A, "a", {"t": "talk_to", "target": "a"}),
    line(A, "a", {"t": "talk_to", "target": "zz"}),
    line(A, "a", {"t": "relay", "to": "b", "inner": {"t": "announce", "id": 1, "wire": wire}}),
    line(Bm, "b", {"t": "relay", "to": "a", "inner": {"t": "probe"}}),
    line(C, "a", {"t": "ping"}),
    line(Bm, "b", {"t": "unregister"}),
    bytes([0xA0, 0, 1]) + b"quic packet",
    bytes([0xC0]),
    bytes([0xE0]) + bytes.fromhex("000100002112a442") + bytes(12),
]
for i, l in enumerate(proxy):
    put("proxy_dispatch", f"msg{i}", l)
put("proxy_dispatch", "all", b"\n".join(proxy))

# blocks: a metainfo whose info dict carries the `p2pu` key, then a leaf layer and a proof
# behind the target's 10-byte header (a length of 0x0c00 * 16 + 1 = 49153 bytes, block 3, a zero root).
V = "../tests/vectors/blocks"
spec = open(f"{V}/p2pu-49157.spec", "rb").read()
info = b"d6:lengthi49157e4:name1:x4:p2pu" + spec + b"12:piece lengthi16384e6:pieces80:" + b"a" * 80 + b"e"
put("blocks", "metainfo", b"d4:info" + info + b"e")
head = bytes([0x0C, 0x00, 3]) + bytes(7)
put("blocks", "leaves", head + open(f"{V}/p2pu-49157.leaves", "rb").read())
put("blocks", "proof", head + open(f"{V}/p2pu-49157-block3.proof", "rb").read())

# roster: the captured four-member roster.
put("roster", "four.roster", open(f"{V}/four.roster", "rb").read())
