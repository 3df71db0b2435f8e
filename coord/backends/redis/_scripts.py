"""The Lua scripts behind every RedisStore operation, and how their replies and errors read in Python.

Every script starts with ``PRELUDE``: it names the keys (see the package
docstring for the layout), reads the server's clock, and deletes the leases
and ttl keys whose deadline has passed, with their delete events, so every
operation sees only live keys. A mutation stores its reply under its request
id (``once``), so a retry after a lost reply cannot apply it twice.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..._errors import CoordError, LeaseExpired
from ..._store import check_revision
from ..._txn import ANY, Op
from ..._types import KVPair

KEYS = ("kv", "idx", "ttl", "leases", "lkeys", "rev", "log", "leaseid")

# Shared by every script. ARGV[1] is the stream length, ARGV[2] how long (ms)
# a mutation's reply is kept for retries; KEYS[9], when given, holds it.
PRELUDE = """
local KV, IDX, TTL, LEASES, LKEYS, REV, LOG, LEASEID = unpack(KEYS, 1, 8)
local clock = redis.call('TIME')
local NOW = tonumber(clock[1]) * 1000 + tonumber(clock[2]) / 1000

local function int(n) return string.format('%d', n) end
local function fail(code) error({err = code}) end

-- a record is "revision:created:lease:value"
local function fields(rec)
  local a = string.find(rec, ':', 1, true)
  local b = string.find(rec, ':', a + 1, true)
  local c = string.find(rec, ':', b + 1, true)
  return tonumber(string.sub(rec, 1, a - 1)), string.sub(rec, a + 1, b - 1), string.sub(rec, b + 1, c - 1)
end

-- every change takes the next revision and appends one entry to the log
local function append(kind, key, value)
  local rev = int(redis.call('INCR', REV))
  local entry = {'XADD', LOG, 'MAXLEN', '~', ARGV[1], rev .. '-0', 't', kind, 'k', key, 'v', value}
  redis.call(unpack(entry, 1, value and 12 or 10))
  return rev
end

local function remove(key)
  local rec = redis.call('HGET', KV, key)
  if not rec then return false end
  local _, _, lease = fields(rec)
  redis.call('HDEL', KV, key)
  redis.call('ZREM', IDX, key)
  redis.call('ZREM', TTL, key)
  if lease ~= '' then redis.call('ZREM', LKEYS, lease .. '/' .. key) end
  append('d', key)
  return true
end

-- a conditional write finding rec: expected is '' (any), 'new' (absent) or a revision;
-- op is the failing operation's number in a transaction
local function check(rec, expected, op)
  if expected == '' then return end
  local rev = rec and fields(rec)
  if expected == 'new' and not rec or rec and rev == tonumber(expected) then return end
  fail('REVISION ' .. (rec and int(rev) or '-') .. ' ' .. expected .. ' ' .. (op or 0))
end

-- write a key (the conditions were checked): its record, index, ttl and lease -> "revision:created:lease"
local function write(key, value, ttl, lease)
  local rec = redis.call('HGET', KV, key)
  local _, created, old_lease
  if rec then _, created, old_lease = fields(rec) end
  local new = append('p', key, value)
  created = created or new
  redis.call('HSET', KV, key, new .. ':' .. created .. ':' .. lease .. ':' .. value)
  redis.call('ZADD', IDX, 0, key)
  if ttl ~= '' then redis.call('ZADD', TTL, NOW + tonumber(ttl), key) else redis.call('ZREM', TTL, key) end
  if old_lease and old_lease ~= '' and old_lease ~= lease then redis.call('ZREM', LKEYS, old_lease .. '/' .. key) end
  if lease ~= '' then redis.call('ZADD', LKEYS, 0, lease .. '/' .. key) end
  return new .. ':' .. created .. ':' .. lease
end

-- the ZRANGEBYLEX bounds of the keys strictly under prefix ('0' follows '/')
local function under(prefix)
  if prefix == '' then return '-', '+' end
  return '[' .. prefix .. '/', '(' .. prefix .. '0'
end

local function drop_lease(lease)
  redis.call('ZREM', LEASES, lease)
  for _, member in ipairs(redis.call('ZRANGEBYLEX', LKEYS, under(lease))) do
    remove(string.sub(member, #lease + 2))
  end
end

-- reply from an earlier attempt of the same request, if it got through
local function once(body)
  local done = redis.call('GET', KEYS[9])
  if done then return done end
  local reply = body()
  redis.call('SET', KEYS[9], reply, 'PX', ARGV[2])
  return reply
end

for _, lease in ipairs(redis.call('ZRANGEBYSCORE', LEASES, '-inf', NOW)) do drop_lease(lease) end
for _, key in ipairs(redis.call('ZRANGEBYSCORE', TTL, '-inf', NOW)) do remove(key) end
"""

SCRIPTS = {
    # ARGV: key, value, expected ('' any, 'new' absent, else a revision), ttl ms or '', lease or ''
    "put": """
return once(function()
  local key, value, expected, ttl, lease = ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7]
  check(redis.call('HGET', KV, key), expected)
  if lease ~= '' and not redis.call('ZSCORE', LEASES, lease) then fail('LEASE') end
  return write(key, value, ttl, lease)
end)
""",
    # ARGV: ops, each a kind and its fields: 'p' key value expected ttl lease, 'd' key expected,
    # 'c' key expected, 'g' key, 'l' prefix -> one reply per op (see ``txn_results``)
    "txn": """
local done = KEYS[9] and redis.call('GET', KEYS[9])
if done then return cmsgpack.unpack(done) end
local ops, i = {}, 3
while i <= #ARGV do
  local kind = ARGV[i]
  local width = kind == 'p' and 6 or (kind == 'd' or kind == 'c') and 3 or 2
  ops[#ops + 1] = i
  i = i + width
end
-- every condition against the store as it was before the transaction
for n, at in ipairs(ops) do
  local kind, key = ARGV[at], ARGV[at + 1]
  local expected = (kind == 'p' and ARGV[at + 3]) or ((kind == 'd' or kind == 'c') and ARGV[at + 2]) or ''
  if expected ~= '' then check(redis.call('HGET', KV, key), expected, n) end
  if kind == 'p' and ARGV[at + 5] ~= '' and not redis.call('ZSCORE', LEASES, ARGV[at + 5]) then fail('LEASE ' .. n) end
end
local function body()
  local reply = {}
  for n, at in ipairs(ops) do
    local kind, key = ARGV[at], ARGV[at + 1]
    if kind == 'p' then
      reply[n] = write(key, ARGV[at + 2], ARGV[at + 4], ARGV[at + 5])
    elseif kind == 'd' then
      reply[n] = remove(key) and '1' or '0'
    elseif kind == 'g' then
      reply[n] = redis.call('HGET', KV, key) or ''
    elseif kind == 'l' then
      local found = {}
      for _, name in ipairs(redis.call('ZRANGEBYLEX', IDX, under(key))) do
        found[#found + 1] = name
        found[#found + 1] = redis.call('HGET', KV, name)
      end
      reply[n] = found
    else
      reply[n] = ''
    end
  end
  return reply
end
local reply = body()
if KEYS[9] then redis.call('SET', KEYS[9], cmsgpack.pack(reply), 'PX', ARGV[2]) end
return reply
""",
    # ARGV: key, expected revision or '' -> '1' deleted, '0' absent
    "delete": """
return once(function()
  local rec = redis.call('HGET', KV, ARGV[3])
  check(rec, ARGV[4])
  if not rec then return '0' end
  remove(ARGV[3])
  return '1'
end)
""",
    # ARGV: prefix
    "delete_tree": """
return once(function()
  local keys = redis.call('ZRANGEBYLEX', IDX, under(ARGV[3]))
  for _, key in ipairs(keys) do remove(key) end
  return int(#keys)
end)
""",
    # ARGV: key or prefix, 'key' | 'tree' | 'none' -> {revision, key, record, key, record, ...}
    "read": """
local keys = {}
if ARGV[4] == 'tree' then keys = redis.call('ZRANGEBYLEX', IDX, under(ARGV[3]))
elseif ARGV[4] == 'key' then keys = {ARGV[3]} end
local reply = {redis.call('GET', REV) or '0'}
for _, key in ipairs(keys) do
  local rec = redis.call('HGET', KV, key)
  if rec then reply[#reply + 1] = key; reply[#reply + 1] = rec end
end
return reply
""",
    # ARGV: ttl ms -> lease id
    "grant": """
return once(function()
  local id = int(redis.call('INCR', LEASEID))
  redis.call('ZADD', LEASES, NOW + tonumber(ARGV[3]), id)
  return id
end)
""",
    # ARGV: lease, ttl ms -> 1 renewed, 0 gone (expired leases were reaped above)
    "keepalive": """
if not redis.call('ZSCORE', LEASES, ARGV[3]) then return 0 end
redis.call('ZADD', LEASES, 'XX', NOW + tonumber(ARGV[4]), ARGV[3])
return 1
""",
    # ARGV: lease
    "revoke": "drop_lease(ARGV[3])\nreturn 1\n",
    "reap": "return 1\n",
    # ARGV: revision -> {current revision, id of the oldest entry or '', type and key of the entry at revision}
    "position": """
local first = redis.call('XRANGE', LOG, '-', '+', 'COUNT', 1)
local at = redis.call('XRANGE', LOG, ARGV[3] .. '-0', ARGV[3] .. '-0')
local reply = {redis.call('GET', REV) or '0', first[1] and first[1][1] or ''}
if at[1] then reply[3] = at[1][2][2]; reply[4] = at[1][2][4] end
return reply
""",
}


#: The scripts that change the store, each with a request id.
MUTATIONS = frozenset({"put", "delete", "delete_tree", "grant", "txn"})


def _conflict(rest: str) -> CoordError:
    """The error of a conditional write that failed: "<actual revision or -> <expected revision or new>"."""
    actual, expected = rest.split()[:2]  # Redis appends where in the script the error was raised
    try:
        check_revision(None if actual == "-" else int(actual), None if expected == "new" else int(expected))
    except CoordError as exc:
        return exc
    return CoordError(f"redis reported a conflict that is none: {rest}")


ERRORS: dict[str, Callable[[str], CoordError]] = {
    "REVISION": _conflict,
    "LEASE": lambda _: LeaseExpired("the lease has expired"),
}


def failed_op(error: CoordError) -> int | None:
    """The index of the transaction's operation whose condition failed (its number follows the error's fields)."""
    cause = str(error.__cause__ or "").split()
    at = {"REVISION": 3, "LEASE": 1}.get(cause[0] if cause else "")
    if at is None or len(cause) <= at or not cause[at].isdigit() or cause[at] == "0":
        return None
    return int(cause[at]) - 1


_KINDS = {"put": "p", "delete": "d", "check": "c", "get": "g", "list": "l"}


def _expected(expect: object) -> str:
    return "" if expect is ANY else "new" if expect is None else str(expect)


def txn_args(ops: list[Op]) -> tuple[list[str | bytes], bool]:
    """The arguments of the ``txn`` script for ``ops``, and whether any of them writes."""
    args: list[str | bytes] = []
    writes = False
    for op in ops:
        args += (_KINDS[op.kind], op.key)
        if op.kind == "put":
            ttl = "" if op.ttl is None else ms(op.ttl)
            args += (op.value, _expected(op.expect), ttl, "" if op.lease is None else str(op.lease.id))
        elif op.kind != "get" and op.kind != "list":
            args.append(_expected(op.expect))
        writes = writes or op.writes
    return args, writes


def txn_results(ops: list[Op], reply: list[Any]) -> list[object]:
    results: list[object] = []
    for op, result in zip(ops, reply, strict=True):
        if op.kind == "put":
            results.append(pair(op.key, op.value, result))
        elif op.kind == "delete":
            results.append(result == b"1")
        elif op.kind == "get":
            results.append(record(op.key.encode(), result) if result else None)
        elif op.kind == "list":
            results.append([record(result[i], result[i + 1]) for i in range(0, len(result), 2)])
        else:
            results.append(None)
    return results


def ms(seconds: float) -> str:
    return repr(seconds * 1000.0)


def pair(key: str, value: bytes, meta: bytes) -> KVPair:
    revision, created, lease = meta.split(b":", 2)
    return KVPair(key, value, int(revision), int(created), int(lease) if lease else None)


def record(key: bytes, record: bytes) -> KVPair:
    revision, created, lease, value = record.split(b":", 3)
    return KVPair(key.decode(), value, int(revision), int(created), int(lease) if lease else None)
