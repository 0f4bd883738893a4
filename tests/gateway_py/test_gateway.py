"""redis-py against a running `vasto gateway`: strings, expiry, counters, errors, pipelines of
1,000, SCAN over 10,000 keys, in RESP2 and RESP3. Run by tests/gateway.rs as
`python test_gateway.py PORT [PASSWORD]`; prints one line per failed check and a closing
"N passed, M failed" line, and exits non-zero when anything failed.
"""
import os
import sys
import time
import warnings

import redis

warnings.simplefilter("ignore", DeprecationWarning)  # setex, psetex: still Redis commands
PORT = int(sys.argv[1])
PASSWORD = sys.argv[2] if len(sys.argv) > 2 else None
# Keys of this run start with RUN, so a rerun against the same keyspace starts clean.
RUN = f"run{os.getpid()}{int(time.time())}:"
passed = 0
failed = 0


def check(name, got, want):
    global passed, failed
    if got == want:
        passed += 1
    else:
        failed += 1
        print(f"FAIL {name}: got {got!r:.300}, want {want!r:.300}", flush=True)


def check_error(name, fn, text):
    """fn() must raise a ResponseError whose message contains `text`."""
    global passed, failed
    try:
        got = fn()
    except redis.ResponseError as e:
        if text in str(e):
            passed += 1
        else:
            failed += 1
            print(f"FAIL {name}: error {e!r} does not contain {text!r}", flush=True)
        return
    failed += 1
    print(f"FAIL {name}: no error, got {got!r}", flush=True)


def strings_and_expiry(r, p):
    check("set", r.set(p + "s", "v"), True)
    check("get", r.get(p + "s"), b"v")
    check("get missing", r.get(p + "missing"), None)
    check("set nx on existing", r.set(p + "s", "w", nx=True), None)
    check("set xx get", r.set(p + "s", "w", xx=True, get=True), b"v")
    check("set nx new", r.set(p + "new", "n", nx=True), True)
    check("setnx", r.setnx(p + "new", "x"), False)
    check("getset", r.getset(p + "s", "z"), b"w")
    check("getdel", r.getdel(p + "s"), b"z")
    check("getdel again", r.getdel(p + "s"), None)
    check("mset", r.mset({p + "a": "1", p + "b": "2"}), True)
    check("mget", r.mget([p + "a", p + "nope", p + "b"]), [b"1", None, b"2"])
    check("msetnx refused", r.msetnx({p + "a": "x", p + "c": "3"}), False)
    check("msetnx refused wrote nothing", r.get(p + "c"), None)
    check("msetnx", r.msetnx({p + "c": "3", p + "d": "4"}), True)
    check("append new", r.append(p + "ap", "ab"), 2)
    check("append", r.append(p + "ap", "cde"), 5)
    check("strlen", r.strlen(p + "ap"), 5)
    check("strlen missing", r.strlen(p + "missing"), 0)
    check("exists counts repeats", r.exists(p + "a", p + "a", p + "missing"), 2)
    check("type", r.type(p + "a"), b"string")
    check("type none", r.type(p + "missing"), b"none")
    check("delete", r.delete(p + "a", p + "b", p + "missing"), 2)
    check("unlink", r.unlink(p + "c", p + "c"), 1)
    # Expiry.
    check("ttl without expiry", r.ttl(p + "d"), -1)
    check("ttl missing", r.ttl(p + "missing"), -2)
    check("pttl missing", r.pttl(p + "missing"), -2)
    r.set(p + "e", "v", ex=100)
    check("ttl", r.ttl(p + "e") in (99, 100), True)
    check("pttl", 98_000 < r.pttl(p + "e") <= 100_000, True)
    check("expire nx refused", r.expire(p + "e", 50, nx=True), False)
    check("expire gt refused", r.expire(p + "e", 50, gt=True), False)
    check("expire lt", r.expire(p + "e", 50, lt=True), True)
    check("ttl after lt", r.ttl(p + "e") in (49, 50), True)
    check("persist", r.persist(p + "e"), True)
    check("persist again", r.persist(p + "e"), False)
    check("ttl persisted", r.ttl(p + "e"), -1)
    check("pexpire", r.pexpire(p + "e", 200), True)
    check("expire missing", r.expire(p + "missing", 10), False)
    time.sleep(0.4)
    check("expired", r.get(p + "e"), None)
    check("expired exists", r.exists(p + "e"), 0)
    r.set(p + "f", "v", px=150)
    check("px set", r.get(p + "f"), b"v")
    time.sleep(0.4)
    check("px expired", r.get(p + "f"), None)
    r.set(p + "g", "v", ex=100)
    check("set keepttl", r.set(p + "g", "w", keepttl=True), True)
    check("keepttl kept", r.ttl(p + "g") in (99, 100), True)
    check("plain set clears ttl", (r.set(p + "g", "x"), r.ttl(p + "g")), (True, -1))
    check("expireat", r.expireat(p + "g", int(time.time()) + 1000), True)
    check("expireat ttl", 990 < r.ttl(p + "g") <= 1000, True)
    check("expireat in the past deletes", (r.expireat(p + "g", 1), r.get(p + "g")), (True, None))
    check("setex", r.setex(p + "h", 100, "v"), True)
    check("setex ttl", r.ttl(p + "h") in (99, 100), True)
    check("psetex", r.psetex(p + "i", 100_000, "v"), True)
    check("getex ex", (r.getex(p + "i", ex=500), r.ttl(p + "i") in (499, 500)), (b"v", True))
    check("getex persist", (r.getex(p + "i", persist=True), r.ttl(p + "i")), (b"v", -1))
    check("getex plain", r.getex(p + "i"), b"v")
    check("getex missing", r.getex(p + "missing", ex=5), None)


def counters_and_errors(r, p):
    check("incr new", r.incr(p + "n"), 1)
    check("incrby", r.incrby(p + "n", 41), 42)
    check("decr", r.decr(p + "n"), 41)
    check("decrby", r.decrby(p + "n", 50), -9)
    check("get counter", r.get(p + "n"), b"-9")
    check("incrbyfloat", r.incrbyfloat(p + "fl", 10.5), 10.5)
    check("incrbyfloat again", r.incrbyfloat(p + "fl", 0.25), 10.75)
    check("incrbyfloat text", r.get(p + "fl"), b"10.75")
    r.set(p + "whole", "2999")
    check("incrbyfloat whole", r.incrbyfloat(p + "whole", 1), 3000.0)
    check("incrbyfloat no exponent", r.get(p + "whole"), b"3000")
    r.set(p + "text", "abc")
    check_error("incr of text", lambda: r.incr(p + "text"), "value is not an integer or out of range")
    check_error("incrbyfloat of text", lambda: r.incrbyfloat(p + "text", 1), "value is not a valid float")
    check_error("incrbyfloat bad delta", lambda: r.execute_command("INCRBYFLOAT", p + "fl", "abc"), "value is not a valid float")
    check_error("incrby bad delta", lambda: r.execute_command("INCRBY", p + "n", "1.5"), "value is not an integer or out of range")
    r.set(p + "max", str(2**63 - 1))
    check_error("incr overflow", lambda: r.incr(p + "max"), "increment or decrement would overflow")
    check_error("unknown command", lambda: r.execute_command("NOSUCH", "a"), "unknown command 'NOSUCH', with args beginning with: 'a'")
    check_error("arity", lambda: r.execute_command("GET"), "wrong number of arguments for 'get' command")
    check_error("syntax", lambda: r.execute_command("SET", p + "x", "v", "EX", "1", "PX", "1"), "syntax error")
    check_error("bad expire", lambda: r.execute_command("SET", p + "x", "v", "EX", "0"), "invalid expire time in 'set' command")
    check_error("select", lambda: r.execute_command("SELECT", 3), "DB index is out of range")
    check_error("bad cursor", lambda: r.execute_command("SCAN", "12345"), "invalid cursor")
    check("select 0", r.execute_command("SELECT", 0) in (True, b"OK"), True)
    check("echo", r.echo("hi"), b"hi")
    check("ping", r.ping(), True)
    check("client id", isinstance(r.client_id(), int), True)
    check("client setname", r.client_setname("tester"), True)
    check("client getname", r.client_getname() in ("tester", b"tester"), True)
    info = r.info()
    check("info version", info.get("redis_version"), "7.2.0")
    check("info clients", info.get("connected_clients", 0) >= 1, True)
    stats = r.info("commandstats")
    # redis-py sends INCR as INCRBY key 1.
    check("commandstats", stats.get("cmdstat_incrby", {}).get("calls", 0) >= 1, True)
    check("time", len(r.time()), 2)
    check("config get", r.config_get("appendonly"), {"appendonly": "no"})
    check("config get unknown", r.config_get("no-such-parameter"), {})


def pipelines(r, p):
    pipe = r.pipeline(transaction=False)
    for i in range(1000):
        pipe.set(f"{p}pipe:{i}", i)
    check("pipeline of 1000 sets", pipe.execute(), [True] * 1000)
    pipe = r.pipeline(transaction=False)
    for i in range(1000):
        pipe.get(f"{p}pipe:{i}")
    check("pipeline of 1000 gets", pipe.execute(), [str(i).encode() for i in range(1000)])
    # Writes and reads of one key in one pipeline keep their order.
    pipe = r.pipeline(transaction=False)
    for i in range(1000):
        pipe.set(p + "same", i)
        if i % 100 == 99:
            pipe.get(p + "same")
    results = pipe.execute()
    check("pipelined overwrites then reads", [x for x in results if x is not True], [str(i).encode() for i in range(99, 1000, 100)])
    pipe = r.pipeline(transaction=False)
    for _ in range(1000):
        pipe.incr(p + "pc")
    check("pipelined increments", pipe.execute(), list(range(1, 1001)))
    pipe = r.pipeline(transaction=False)
    pipe.set(p + "m", "1").append(p + "m", "2").get(p + "m").delete(p + "m").get(p + "m").incr(p + "m").getdel(p + "m").exists(p + "m")
    check("mixed pipeline", pipe.execute(), [True, 2, b"12", 1, None, 1, b"1", 0])


def scan(r):
    pipe = r.pipeline(transaction=False)
    for i in range(10_000):
        pipe.set(f"{RUN}scan:{i:05}", i)
        if i % 1000 == 999:
            pipe.execute()
            pipe = r.pipeline(transaction=False)
    keys = list(r.scan_iter(match=RUN + "scan:*", count=500))
    check("scan_iter yields 10000 keys", len(keys), 10_000)
    check("scan_iter yields each once", len(set(keys)), 10_000)
    check("scan_iter yields the right keys", sorted(keys), [f"{RUN}scan:{i:05}".encode() for i in range(10_000)])
    few = list(r.scan_iter(match=RUN + "scan:0012?", count=1000))
    check("scan match pattern", sorted(few), [f"{RUN}scan:0012{d}".encode() for d in range(10)])
    check("scan type string", len(list(r.scan_iter(match=RUN + "scan:0000*", count=100, _type="string"))), 10)
    check("scan type hash", list(r.scan_iter(match=RUN + "scan:*", _type="hash")), [])
    check("keys", sorted(r.keys(RUN + "scan:0999*")), [f"{RUN}scan:0999{d}".encode() for d in range(10)])
    check("dbsize", r.dbsize() >= 10_000, True)


def main():
    for proto in (2, 3):
        r = redis.Redis(port=PORT, protocol=proto, password=PASSWORD, socket_timeout=30)
        hello = r.execute_command("HELLO", proto)
        if isinstance(hello, list):
            hello = dict(zip(hello[::2], hello[1::2]))
        check(f"hello {proto}", {k.decode() if isinstance(k, bytes) else k: v for k, v in hello.items()}.get("proto"), proto)
        p = f"{RUN}py{proto}:"
        strings_and_expiry(r, p)
        counters_and_errors(r, p)
        pipelines(r, p)
    scan(redis.Redis(port=PORT, password=PASSWORD, socket_timeout=30))
    print(f"{passed} passed, {failed} failed", flush=True)
    sys.exit(1 if failed else 0)


main()
