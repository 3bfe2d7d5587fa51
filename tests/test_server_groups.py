#!/usr/bin/python3
"""test_server_groups.py — consumer groups and dead letters on the real `evstore serve` binary, through
redis-py (Debian's python3-redis) and redis-cli: Redis 7.0's reply shapes and errors, blocking
XREADGROUP, group state across SIGKILL, exactly-once dead-lettering with concurrent claimers
and a kill in the middle. Usage: test_server_groups.py path/to/evstore"""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest

import redis

import test_server
from test_server import Base, Server, http_req


def restart_after_kill(case):
    """SIGKILL the case's server and start a new one on the same folder."""
    case.srv.proc.send_signal(signal.SIGKILL)
    case.srv.proc.wait()
    case.srv.log.close()
    case.r.close()
    try:
        case.srv = Server(case.srv.data).start()
    except RuntimeError as e:
        log = open(os.path.join(os.path.dirname(case.srv.data), "server.log"), errors="replace").read()
        raise RuntimeError("%s\n%s" % (e, log[-3000:]))
    case.r = case.srv.client(decode_responses=True)


class Groups(Base):
    def test_create_read_ack_pending_shapes(self):
        r = self.r
        with self.assertRaisesRegex(redis.ResponseError, "requires the key to exist"):
            r.xgroup_create("s", "g", "0")
        self.assertTrue(r.xgroup_create("s", "g", "$", mkstream=True))
        with self.assertRaisesRegex(redis.ResponseError, "^BUSYGROUP Consumer Group name already exists"):
            r.xgroup_create("s", "g", "$")
        ids = [r.xadd("s", {"n": str(i)}) for i in range(5)]
        got = r.xreadgroup("g", "alice", {"s": ">"}, count=2)
        self.assertEqual(got, [["s", [(ids[0], {"n": "0"}), (ids[1], {"n": "1"})]]])
        got = r.xreadgroup("g", "bob", {"s": ">"})
        self.assertEqual([e[0] for e in got[0][1]], ids[2:])
        self.assertEqual(r.xreadgroup("g", "bob", {"s": ">"}), [])
        p = r.xpending("s", "g")
        self.assertEqual((p["pending"], p["min"], p["max"]), (5, ids[0], ids[4]))
        self.assertEqual(p["consumers"], [{"name": "alice", "pending": 2}, {"name": "bob", "pending": 3}])
        rng = r.xpending_range("s", "g", "-", "+", 10, consumername="alice")
        self.assertEqual([(x["message_id"], x["consumer"], x["times_delivered"]) for x in rng],
                         [(ids[0], "alice", 1), (ids[1], "alice", 1)])
        self.assertEqual(r.xack("s", "g", ids[0], ids[0], "9-9"), 1)
        self.assertEqual(r.xack("nope", "g", ids[0]), 0)
        with self.assertRaisesRegex(redis.ResponseError, "Invalid stream ID"):
            r.xack("s", "g", "bad")
        # history: alice's own pending entries, each delivered once more; a deleted one is nil
        r.xdel("s", ids[1])
        hist = r.xreadgroup("g", "alice", {"s": "0"})
        self.assertEqual(hist[0][0], "s")
        self.assertEqual(hist[0][1][0][0], ids[1])
        self.assertFalse(hist[0][1][0][1])
        self.assertEqual(r.xreadgroup("g", "bob", {"s": ids[3]}), [["s", [(ids[4], {"n": "4"})]]])
        rng = r.xpending_range("s", "g", ids[4], ids[4], 1)
        self.assertEqual(rng[0]["times_delivered"], 2)
        info = r.xinfo_groups("s")
        self.assertEqual(len(info), 1)
        g = info[0]
        self.assertEqual((g["name"], g["consumers"], g["pending"], g["last-delivered-id"],
                          g["entries-read"], g["lag"]), ("g", 2, 4, ids[4], 5, 0))
        cons = r.xinfo_consumers("s", "g")
        self.assertEqual([(c["name"], c["pending"]) for c in cons], [("alice", 1), ("bob", 3)])
        self.assertTrue(all(c["idle"] >= 0 for c in cons))
        self.assertEqual(r.xinfo_stream("s")["groups"], 1)
        full = r.xinfo_stream("s", full=True)
        self.assertEqual(full["groups"][0]["name"], "g")
        self.assertEqual(full["groups"][0]["pel-count"], 4)
        # errors clients rely on
        with self.assertRaisesRegex(redis.ResponseError, "^NOGROUP No such key 's' or consumer group 'x' in XREADGROUP"):
            r.xreadgroup("x", "c", {"s": ">"})
        with self.assertRaisesRegex(redis.ResponseError, "^NOGROUP No such key 'nope' or consumer group 'g'"):
            r.xpending("nope", "g")
        with self.assertRaisesRegex(redis.ResponseError, "The \\$ ID is meaningless"):
            r.xreadgroup("g", "c", {"s": "$"})
        with self.assertRaisesRegex(redis.ResponseError, "^NOGROUP No such consumer group 'x' for key name 's'"):
            r.xinfo_consumers("s", "x")
        with self.assertRaisesRegex(redis.ResponseError, "^no such key"):
            r.xinfo_groups("nope")

    def test_claim_autoclaim_setid_consumers_destroy(self):
        r = self.r
        ids = [r.xadd("c", {"n": str(i)}) for i in range(6)]
        r.xgroup_create("c", "g", "0")
        r.xreadgroup("g", "a", {"c": ">"})
        time.sleep(0.05)
        self.assertEqual(r.xclaim("c", "g", "b", 1000, [ids[0]]), [])  # not idle long enough
        self.assertEqual(r.xclaim("c", "g", "b", 10, [ids[0], ids[1]], justid=True), [ids[0], ids[1]])
        self.assertEqual(r.xclaim("c", "g", "b", 0, [ids[2]], retrycount=7), [(ids[2], {"n": "2"})])
        self.assertEqual(r.xpending_range("c", "g", ids[2], ids[2], 1)[0]["times_delivered"], 7)
        r.xdel("c", ids[3])
        nxt, claimed, deleted = r.xautoclaim("c", "g", "d", 0, "0-0", count=2)
        self.assertEqual([e[0] for e in claimed], [ids[0], ids[1]])
        self.assertEqual(nxt, ids[2])
        self.assertEqual(deleted, [])
        raw = self.srv.client(decode_responses=True)
        raw.response_callbacks.pop("XAUTOCLAIM", None)  # redis-py drops the cursor with JUSTID
        nxt, claimed, deleted = raw.execute_command("XAUTOCLAIM", "c", "g", "d", 0, nxt, "COUNT", 10, "JUSTID")
        raw.close()
        self.assertEqual(claimed, [ids[2], ids[4], ids[5]])
        self.assertEqual(deleted, [ids[3]])
        self.assertEqual(nxt, "0-0")
        with self.assertRaisesRegex(redis.ResponseError, "^NOGROUP No such key 'c' or consumer group 'zz'"):
            r.xautoclaim("c", "zz", "d", 0, "0")
        self.assertEqual(r.xgroup_createconsumer("c", "g", "e"), 1)
        self.assertEqual(r.xgroup_createconsumer("c", "g", "e"), 0)
        self.assertEqual(r.xgroup_delconsumer("c", "g", "d"), 5)
        self.assertEqual(r.xpending("c", "g")["pending"], 0)
        self.assertTrue(r.xgroup_setid("c", "g", ids[1], entries_read=2))
        g = r.xinfo_groups("c")[0]
        self.assertEqual((g["last-delivered-id"], g["entries-read"], g["lag"]), (ids[1], 2, None))  # a tombstone ahead: unknown, as Redis
        self.assertEqual([e[0] for e in r.xreadgroup("g", "a", {"c": ">"})[0][1]], [ids[2], ids[4], ids[5]])
        with self.assertRaisesRegex(redis.ResponseError, "^NOGROUP No such consumer group 'x' for key name 'c'"):
            r.xgroup_setid("c", "x", "0")
        self.assertEqual(r.xgroup_destroy("c", "g"), 1)
        self.assertEqual(r.xgroup_destroy("c", "g"), 0)
        self.assertEqual(r.xinfo_groups("c"), [])
        with self.assertRaisesRegex(redis.ResponseError, "ENTRIESREAD must be positive or -1"):
            r.xgroup_create("c", "g", "0", entries_read=-5)
        with self.assertRaisesRegex(redis.ResponseError, "unknown subcommand"):
            r.execute_command("XGROUP", "BOGUS", "c", "g")
        self.assertIn("CREATE <key> <groupname> <id|$> [option]", r.execute_command("XGROUP", "HELP"))

    def test_blocking_xreadgroup_is_woken(self):
        r = self.r
        r.xgroup_create("b", "g", "$", mkstream=True)
        other = self.srv.client(decode_responses=True)
        t = threading.Timer(0.3, lambda: other.xadd("b", {"k": "v"}))
        t.start()
        got = r.xreadgroup("g", "c", {"b": ">"}, block=5000)
        t.join()
        self.assertEqual(got[0][1][0][1], {"k": "v"})
        start = time.time()
        self.assertEqual(r.xreadgroup("g", "c", {"b": ">"}, block=200), [])
        self.assertGreaterEqual(time.time() - start, 0.18)
        # destroyed group -> NOGROUP; deleted stream -> UNBLOCKED (Redis 7.0)
        t = threading.Timer(0.3, lambda: other.xgroup_destroy("b", "g"))
        t.start()
        with self.assertRaisesRegex(redis.ResponseError, "consumer group this client was blocked on no longer exists"):
            r.xreadgroup("g", "c", {"b": ">"}, block=5000)
        t.join()
        r.xgroup_create("b", "g", "$")
        t = threading.Timer(0.3, lambda: other.delete("b"))
        t.start()
        with self.assertRaisesRegex(redis.ResponseError, "the stream key no longer exists"):
            r.xreadgroup("g", "c", {"b": ">"}, block=5000)
        t.join()
        # two consumers block; one entry wakes exactly one of them, the other keeps waiting
        r.xgroup_create("b", "g", "$", mkstream=True)
        results = []

        def reader(name):
            c = self.srv.client(decode_responses=True)
            results.append((name, c.xreadgroup("g", name, {"b": ">"}, block=1500)))
            c.close()

        ts = [threading.Thread(target=reader, args=(n,)) for n in ("x", "y")]
        for th in ts:
            th.start()
        time.sleep(0.3)
        other.xadd("b", {"one": "1"})
        for th in ts:
            th.join()
        got = [res for _, res in results if res]
        self.assertEqual(len(got), 1, results)
        self.assertEqual(r.info("clients")["blocked_clients"], 0)
        other.close()

    def test_concurrent_consumers_get_each_entry_once(self):
        """Eight consumers, each sending its next command as soon as its reply comes (the
        batches that wait for them: net/server.c G1-G2): every entry delivered once, all
        acknowledged, nothing pending, and INFO's batch-wait counters consistent."""
        n = 800
        p = self.r.pipeline(transaction=False)
        for k in range(n):
            p.xadd("work", {"k": str(k)})
        ids = p.execute()
        self.r.xgroup_create("work", "g", "0")
        got, errors = [], []

        def consume(name):
            c = self.srv.client(decode_responses=True)
            try:
                while True:
                    res = c.xreadgroup("g", name, {"work": ">"}, count=1)
                    if not res:
                        return
                    eid = res[0][1][0][0]
                    got.append(eid)
                    self.assertEqual(c.xack("work", "g", eid), 1)
            except Exception as e:  # reported below: a thread cannot fail the test itself
                errors.append(repr(e))
            finally:
                c.close()

        ts = [threading.Thread(target=consume, args=("c%d" % k,)) for k in range(8)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        self.assertEqual(errors, [])
        self.assertEqual(sorted(got), sorted(ids))
        self.assertEqual(self.r.xpending("work", "g")["pending"], 0)
        info = self.r.info("evstore")
        self.assertLessEqual(info["commit_wait_timeouts"], info["commit_waits"])

    def test_pipelined_acks(self):
        r = self.r
        ids = [r.xadd("pa", {"n": str(i)}) for i in range(300)]
        r.xgroup_create("pa", "g", "0")
        r.xreadgroup("g", "c", {"pa": ">"})
        p = r.pipeline(transaction=False)
        for i in ids:
            p.xack("pa", "g", i)
        p.xack("pa", "nogroup", ids[0])  # answered at once, still in order
        p.xadd("pa", {"after": "acks"})
        p.xack("pa", "g", ids[0])        # already acknowledged by the first
        res = p.execute()
        self.assertEqual(res[:300], [1] * 300)
        self.assertEqual(res[300], 0)
        self.assertEqual(res[302], 0)
        self.assertEqual(r.xpending("pa", "g")["pending"], 0)

    def test_exec_acks_and_appends_together(self):
        r = self.r
        i = r.xadd("in", {"job": "1"})
        r.xgroup_create("in", "g", "0")
        r.xreadgroup("g", "w", {"in": ">"})
        p = r.pipeline(transaction=True)
        p.xack("in", "g", i)
        p.xadd("out", {"done": i})
        res = p.execute()
        self.assertEqual(res[0], 1)
        self.assertEqual(r.xpending("in", "g")["pending"], 0)
        self.assertEqual(r.xrange("out")[0][1], {"done": i})

    def test_exec_group_ops_on_an_idle_writer(self):
        """Inside EXEC a group command waits for its own commit on the loop thread, which holds
        submissions for the read: it must wake the writer itself. After 0.1 s of quiet the writer
        has nothing due (index committed, log synced) and sleeps until woken."""
        r = self.r
        ids = [r.xadd("idle", {"n": str(n)}) for n in range(4)]
        r.xgroup_create("idle", "g", "0")
        r.xreadgroup("g", "a", {"idle": ">"}, count=2)
        steps = [
            (lambda p: p.xack("idle", "g", ids[0]), 1),
            (lambda p: p.xreadgroup("g", "b", {"idle": ">"}), [["idle", [(ids[2], {"n": "2"}),
                                                                         (ids[3], {"n": "3"})]]]),
            (lambda p: p.xclaim("idle", "g", "c", 0, [ids[1]], justid=True), [ids[1]]),
            (lambda p: p.xgroup_createconsumer("idle", "g", "d"), 1),
        ]
        for queue, want in steps:
            time.sleep(0.1)
            p = r.pipeline(transaction=True)
            queue(p)
            self.assertEqual(p.execute(), [want])
        self.assertEqual(r.xpending("idle", "g")["pending"], 3)

    def test_group_state_survives_sigkill(self):
        r = self.r
        ids = [r.xadd("k", {"n": str(i)}) for i in range(60)]
        r.xgroup_create("k", "g", "0")
        r.xgroup_create("k", "h", ids[10])
        for name, n in (("a", 20), ("b", 15), ("c", 5)):
            r.xreadgroup("g", name, {"k": ">"}, count=n)
        r.xreadgroup("h", "z", {"k": ">"}, count=7)
        r.xack("k", "g", *ids[0:20:3])
        r.xclaim("k", "g", "c", 0, ids[21:25])
        r.xreadgroup("g", "b", {"k": "0"}, count=3)
        r.xgroup_createconsumer("k", "g", "idle")

        def state():
            out = {}
            for g in r.xinfo_groups("k"):
                name = g["name"]
                pend = r.xpending_range("k", name, "-", "+", 1000)
                cons = r.xinfo_consumers("k", name)
                out[name] = (g["consumers"], g["pending"], g["last-delivered-id"], g["entries-read"], g["lag"],
                             [(p["message_id"], p["consumer"], p["times_delivered"]) for p in pend],
                             [(c["name"], c["pending"]) for c in cons])
            return out

        before = state()
        self.assertEqual(before["g"][1], 40 - 7)
        restart_after_kill(self)
        r = self.r
        self.assertEqual(state(), before)
        # and it keeps working from there
        got = r.xreadgroup("g", "a", {"k": ">"}, count=1)
        self.assertEqual(got[0][1][0][0], ids[40])


class DeadLetters(Base):
    def test_dead_letter_stream_and_counts(self):
        r = self.r
        i = r.xadd("jobs", {"type": "poison", "payload": "x"})
        r.execute_command("XGROUP", "CREATE", "jobs", "w", "0", "MAXDELIVERIES", "2")
        r.xreadgroup("w", "c1", {"jobs": ">"})                  # delivery 1
        r.xreadgroup("w", "c1", {"jobs": "0"})                  # delivery 2
        self.assertEqual(r.xreadgroup("w", "c1", {"jobs": "0"}), [["jobs", []]])  # 3rd: dead-lettered
        self.assertEqual(r.xpending("jobs", "w")["pending"], 0)
        g = r.xinfo_groups("jobs")[0]
        self.assertEqual((g["max-deliveries"], g["dead-letter-key"], g["dead-letters"]), (2, "jobs:dlq", 1))
        metrics = http_req(self.srv, "GET", "/metrics")[1].decode()
        self.assertIn('evstore_group_dead_letters_total{stream="jobs",group="w"} 1', metrics)
        self.assertIn('evstore_group_pending{stream="jobs",group="w"} 0', metrics)
        dl = r.xrange("jobs:dlq")
        self.assertEqual(len(dl), 1)
        self.assertEqual(dl[0][1], {"type": "poison", "payload": "x", "dlq-source-key": "jobs",
                                    "dlq-source-id": i, "dlq-group": "w", "dlq-deliveries": "2"})
        # SETDLQ: another stream, another limit
        j = r.xadd("jobs", {"type": "poison2"})
        r.execute_command("XGROUP", "SETDLQ", "jobs", "w", "MAXDELIVERIES", "1", "DEADLETTER", "graveyard")
        r.xreadgroup("w", "c1", {"jobs": ">"})
        self.assertEqual(r.xclaim("jobs", "w", "c2", 0, [j]), [])
        self.assertEqual(r.xrange("graveyard")[0][1]["dlq-source-id"], j)
        with self.assertRaisesRegex(redis.ResponseError, "own dead-letter stream"):
            r.execute_command("XGROUP", "CREATE", "jobs", "x", "0", "MAXDELIVERIES", "1", "DEADLETTER", "jobs")

    def test_names_at_their_limits_keep_the_store_writable(self):
        """A group on a 400-byte stream (whose default dead-letter name, "<stream>:dlq", cannot
        exist) once failed the writer half-way and refused every later write; the empty
        consumer name (Redis allows it) was refused. Each limit answers its own error."""
        r = self.r
        long = "s" * 400
        r.xadd(long, {"f": "v"}, id="1-1")
        r.xgroup_create(long, "g", "0")
        with self.assertRaisesRegex(redis.ResponseError, r'"<stream>:dlq" would be 404 bytes'):
            r.execute_command("XGROUP", "SETDLQ", long, "g", "MAXDELIVERIES", "2")
        with self.assertRaisesRegex(redis.ResponseError, r'"<stream>:dlq" would be 404 bytes'):
            r.execute_command("XGROUP", "CREATE", long, "h", "0", "MAXDELIVERIES", "2")
        r.execute_command("XGROUP", "SETDLQ", long, "g", "MAXDELIVERIES", "1", "DEADLETTER", "dead")
        self.assertEqual(r.xreadgroup("g", "", {long: ">"}), [[long, [("1-1", {"f": "v"})]]])
        self.assertEqual(r.xreadgroup("g", "", {long: "0"}), [[long, []]])  # dead-lettered
        self.assertEqual(r.xrange("dead")[0][1]["dlq-source-id"], "1-1")
        for cmd, msg in ((("XGROUP", "CREATE", long, "g" * 257, "0"), "group name is 257 bytes"),
                         (("XGROUP", "CREATECONSUMER", long, "g", "c" * 257), "consumer name is 257 bytes"),
                         (("XREADGROUP", "GROUP", "g", "c" * 257, "STREAMS", long, ">"), "consumer name is 257 bytes"),
                         (("XCLAIM", long, "g", "c" * 300, "0", "1-1"), "consumer name is 300 bytes"),
                         (("XGROUP", "CREATE", "t" * 401, "g", "0", "MKSTREAM"), "stream name is 401 bytes")):
            with self.assertRaisesRegex(redis.ResponseError, "^%s, the limit is (256|400)$" % msg):
                r.execute_command(*cmd)
        r.xadd(long, {"f": "w"}, id="2-1")  # still writable
        r.xreadgroup("g", "", {long: ">"})
        restart_after_kill(self)
        r = self.r
        self.assertEqual([c["name"] for c in r.xinfo_consumers(long, "g")], [""])
        self.assertEqual(r.xpending(long, "g")["consumers"], [{"name": "", "pending": 1}])

    def test_exactly_once_with_concurrent_claimers_and_a_kill(self):
        r = self.r
        n = 300
        p = r.pipeline(transaction=False)
        for k in range(n):
            p.xadd("q", {"k": str(k)})
        src = p.execute()
        r.execute_command("XGROUP", "CREATE", "q", "g", "0", "MAXDELIVERIES", "3")
        r.xreadgroup("g", "first", {"q": ">"})
        for round_ in range(2):
            stop = threading.Event()

            def claimer(name, srv=self.srv):
                c = srv.client(decode_responses=True)
                cursor = "0-0"
                while not stop.is_set():
                    try:
                        cursor, _, _ = c.xautoclaim("q", "g", name, 0, cursor, count=7)
                    except (redis.ConnectionError, redis.TimeoutError, ConnectionError):
                        return
                c.close()

            ts = [threading.Thread(target=claimer, args=("c%d" % k,)) for k in range(4)]
            for t in ts:
                t.start()
            time.sleep(0.4)
            if round_ == 0:
                restart_after_kill(self)  # killed while claimers run
            stop.set()
            for t in ts:
                t.join()
            r = self.r
        # drain whatever is left
        for _ in range(50):
            if r.xpending("q", "g")["pending"] == 0:
                break
            r.xautoclaim("q", "g", "last", 0, "0-0", count=100)
        self.assertEqual(r.xpending("q", "g")["pending"], 0)
        dl = [f["dlq-source-id"] for _, f in r.xrange("q:dlq")]
        self.assertEqual(len(dl), len(set(dl)), "a dead letter was copied twice")
        self.assertEqual(sorted(dl), sorted(src))


class GroupsHttp(Base):
    def test_create_read_ack_list(self):
        srv = self.srv
        for i in range(3):
            self.r.xadd("h", {"source": "api", "type": "t", "payload": '{"n": %d}' % i})
        st, body, _ = http_req(srv, "POST", "/streams/h/groups", {"name": "g", "start": "0", "max_deliveries": 5})
        self.assertEqual((st, body), (201, {"name": "g"}))
        st, body, _ = http_req(srv, "POST", "/streams/h/groups", {"name": "g"})
        self.assertEqual((st, body["code"]), (409, "group_exists"))
        st, body, _ = http_req(srv, "POST", "/streams/nope/groups", {"name": "g"})
        self.assertEqual((st, body["code"]), (404, "not_found"))
        st, body, _ = http_req(srv, "POST", "/streams/nope/groups", {"name": "g", "mkstream": True})
        self.assertEqual(st, 201)
        st, body, _ = http_req(srv, "POST", "/streams/h/groups", {"name": ""})
        self.assertEqual(st, 400)
        st, body, _ = http_req(srv, "POST", "/streams/h/groups/g/read", {"consumer": "c1", "count": 2})
        self.assertEqual(st, 200)
        self.assertEqual([e["payload"]["n"] for e in body["events"]], [0, 1])
        ids = [e["id"] for e in body["events"]]
        st, body, _ = http_req(srv, "POST", "/streams/h/groups/g/ack", {"ids": ids[:1]})
        self.assertEqual((st, body), (200, {"acked": 1}))
        st, body, _ = http_req(srv, "POST", "/streams/h/groups/g/ack", {"ids": ["bad"]})
        self.assertEqual(st, 400)
        st, body, _ = http_req(srv, "POST", "/streams/h/groups/zz/read", {"consumer": "c1"})
        self.assertEqual((st, body["code"]), (404, "no_group"))
        st, body, _ = http_req(srv, "POST", "/streams/h/groups/g/read", {"consumer": "c1", "count": "x"})
        self.assertEqual(st, 400)
        # 0 is no count at all (it was read as 1 without a word): refused, as 10001 is
        for bad in (0, 10001, -1):
            st, body, _ = http_req(srv, "POST", "/streams/h/groups/g/read", {"consumer": "c1", "count": bad})
            self.assertEqual((st, body["error"]), (400, '"count" must be an integer from 1 to 10000'))
        st, body, _ = http_req(srv, "GET", "/streams/h/groups")
        self.assertEqual(st, 200)
        g = body["groups"][0]
        self.assertEqual((g["name"], g["pending"], g["lag"], g["max_deliveries"], g["dead_letter_stream"]),
                         ("g", 1, 1, 5, "h:dlq"))
        st, _, _ = http_req(srv, "POST", "/streams/h/groups", {"name": "quiet"})
        self.assertEqual(st, 201)
        st, body, _ = http_req(srv, "GET", "/streams/h/groups")
        quiet = [q for q in body["groups"] if q["name"] == "quiet"][0]
        self.assertEqual((quiet["max_deliveries"], quiet["dead_letter_stream"]), (0, None))
        self.assertEqual(http_req(srv, "DELETE", "/streams/h/groups/quiet")[0], 200)
        self.assertEqual(g["consumers"][0]["name"], "c1")
        self.assertGreaterEqual(g["oldest_pending_age_ms"], 0)
        # a long poll woken by a publish
        t = threading.Timer(0.3, lambda: self.r.xadd("h", {"type": "late"}))
        t.start()
        start = time.time()
        st, body, _ = http_req(srv, "POST", "/streams/h/groups/g/read", {"consumer": "c2", "block_ms": 5000})
        t.join()
        self.assertEqual(st, 200)
        self.assertEqual([e["payload"]["n"] for e in body["events"] if "payload" in e], [2])
        st, body, _ = http_req(srv, "POST", "/streams/h/groups/g/read", {"consumer": "c2", "block_ms": 5000})
        self.assertEqual(body["events"][0]["type"], "late")
        start = time.time()
        st, body, _ = http_req(srv, "POST", "/streams/h/groups/g/read", {"consumer": "c2", "block_ms": 300})
        self.assertEqual((st, body), (200, {"events": []}))
        self.assertGreaterEqual(time.time() - start, 0.25)
        st, body, _ = http_req(srv, "DELETE", "/streams/h/groups/g")
        self.assertEqual((st, body), (200, {"destroyed": True}))
        self.assertEqual(self.r.xinfo_groups("h"), [])

    def test_long_poll_of_a_client_gone_claims_nothing(self):
        """A parked read whose client disconnects is dropped, as Redis unblocks an XREADGROUP
        BLOCK client that goes: the next event stays for the consumers still listening, not
        pending for one nobody reads as. A read still connected is answered as before."""
        srv = self.srv
        st, _, _ = http_req(srv, "POST", "/streams/p/groups", {"name": "g", "start": "$", "mkstream": True})
        self.assertEqual(st, 201)

        def park(consumer, block_ms=20000):
            body = json.dumps({"consumer": consumer, "block_ms": block_ms}).encode()
            s = socket.create_connection(("127.0.0.1", srv.http_port), timeout=10)
            s.sendall(b"POST /streams/p/groups/g/read HTTP/1.1\r\nHost: localhost\r\n"
                      b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
            return s
        gone = [park("gone-%d" % i) for i in range(3)]
        answers = []
        stays = threading.Thread(target=lambda: answers.append(http_req(
            srv, "POST", "/streams/p/groups/g/read", {"consumer": "stays", "block_ms": 20000})))
        stays.start()
        time.sleep(0.3)  # all four parked
        for s in gone:
            s.close()
        self.assertTrue(test_server.eventually(lambda: self.r.info("clients")["http_clients"] == 1))
        first = self.r.xadd("p", {"type": "t", "payload": "1"})
        stays.join(10)
        self.assertEqual([(st, [e["id"] for e in body["events"]]) for st, body, _ in answers],
                         [(200, [first])])
        pending = self.r.xpending("p", "g")
        self.assertEqual((pending["pending"], [c["name"] for c in pending["consumers"]]),
                         (1, ["stays"]))
        # with nobody left, the next event waits in the group for whoever reads next
        second = self.r.xadd("p", {"type": "t", "payload": "2"})
        time.sleep(0.2)
        self.assertEqual(self.r.xpending("p", "g")["pending"], 1)
        st, body, _ = http_req(srv, "POST", "/streams/p/groups/g/read", {"consumer": "later"})
        self.assertEqual([e["id"] for e in body["events"]], [second])
        # a request pipelined behind a long poll is bytes, not a hang-up (H4): both answered
        s = park("piped", 800)
        time.sleep(0.3)  # parked, its request read: the next bytes wake the watch
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        s.settimeout(10)
        got = b""
        while got.count(b"HTTP/1.1 200") < 2 or not got.endswith(b"}\n"):
            chunk = s.recv(4096)
            if not chunk:
                break
            got += chunk
        s.close()
        self.assertEqual(got.count(b"HTTP/1.1 200"), 2, got)
        self.assertIn(b'{"status":"ok"}', got)


class GroupsCli(Base):
    def test_redis_cli(self):
        cli = ["redis-cli", "-p", str(self.srv.port)]
        self.r.xadd("s", {"a": "1"}, id="1-1")
        run = lambda *a: subprocess.run(cli + list(a), capture_output=True, text=True, timeout=10).stdout
        self.assertEqual(run("XGROUP", "CREATE", "s", "g", "0").strip(), "OK")
        self.assertEqual(run("XREADGROUP", "GROUP", "g", "c", "STREAMS", "s", ">").split(),
                         ["s", "1-1", "a", "1"])
        self.assertEqual(run("XACK", "s", "g", "1-1").strip(), "1")


if __name__ == "__main__":
    test_server.EVSTORE = os.path.abspath(sys.argv.pop(1))
    unittest.main(verbosity=2)
