"""The Lua scripts behind every RedisStore operation (``_replies`` reads what they return).

Every script is called with one key, the namespace's hash tag ``{ns}``,
from which it names the others (so a store stays in one Cluster slot), and
three arguments before its own: the change log's length, how long (ms) a
mutation's reply is kept for retries, and the mutation's request id (or '').

Every script starts with ``PRELUDE``: it reads the server's clock and the
namespace's ``meta`` hash in one call. ``meta.due`` is a lower bound of the
earliest lease or ttl deadline, so a script reaps (deletes the leases and
ttl keys whose deadline has passed, with their delete events) only when
something may be due: one HMGET on the common path instead of two range
reads. ``meta.epoch`` missing (a new namespace, or FLUSHALL) starts a new
epoch (see ``new_epoch``). A mutation stores its reply under its request id
(``once``), so a retry after a lost reply cannot apply it twice; only a
retry looks for it (a first attempt's id starts with '+'). Every change
rings the bells of the Stores watching it (``ring``, ``listen``).
"""

from __future__ import annotations

#: Revisions and lease ids of an epoch start at epoch * EPOCH_SPAN; an epoch is a second of the server's
#: clock since EPOCH_BASE (2025-01-01 UTC), so a new epoch starts above every revision handed out before,
#: lost or not, while fewer than EPOCH_SPAN revisions a second were used on average since the last one.
EPOCH_SPAN = 1 << 20
EPOCH_BASE = 1_735_689_600
#: How long a Store's bell outlives its last refresh (its reader refreshes it every REAP_INTERVAL).
BELL_MS = 30_000

PRELUDE = """
local NS = KEYS[1] .. ':'
local KV, IDX, TTL, LEASES, LKEYS = NS .. 'kv', NS .. 'idx', NS .. 'ttl', NS .. 'leases', NS .. 'lkeys'
local REV, LOG, LEASEID, META = NS .. 'rev', NS .. 'log', NS .. 'leaseid', NS .. 'meta'
local WATCHED, BELL_TTL = NS .. 'watched', BELL_MS
-- the request id: '' none, '+id' a first attempt (nothing to look up), 'id' a retry
local FIRST = string.sub(ARGV[3], 1, 1) == '+'
local REQ = ARGV[3] ~= '' and NS .. 'req:' .. (FIRST and string.sub(ARGV[3], 2) or ARGV[3]) or nil
local RETRY = REQ and not FIRST
local clock = redis.call('TIME')
local NOW = tonumber(clock[1]) * 1000 + tonumber(clock[2]) / 1000
local meta = redis.call('HMGET', META, 'epoch', 'due')
-- DUE nil: unknown (reap, and find out); stored as '': nothing is due, ever
local DUE = meta[2] == '' and math.huge or tonumber(meta[2])

local function int(n) return string.format('%d', n) end
local function fail(code) error({err = code}) end

-- a record is "revision:created:lease:value"
local function fields(rec)
  local a = string.find(rec, ':', 1, true)
  local b = string.find(rec, ':', a + 1, true)
  local c = string.find(rec, ':', b + 1, true)
  return tonumber(string.sub(rec, 1, a - 1)), string.sub(rec, a + 1, b - 1), string.sub(rec, b + 1, c - 1)
end

-- Wake the Stores whose watches cover key: WATCHED maps '=' .. key (a key's watchers) and
-- '/' .. prefix (a tree's) to their 'bell.token' entries (see listen); a bell is a stream of
-- one entry that a Store's reader blocks on. Entries of a bell that is gone (its Store closed
-- or died) are dropped. rung[bell]: true rung, false gone, nil not yet looked at.
local rung, watched = {}, nil
local function ring(key)
  if watched == nil then watched = redis.call('EXISTS', WATCHED) == 1 end
  if not watched then return end
  local targets = {'=' .. key, '/'}
  local at = string.find(key, '/', 1, true)
  while at do
    targets[#targets + 1] = '/' .. string.sub(key, 1, at - 1)
    at = string.find(key, '/', at + 1, true)
  end
  local found = redis.call('HMGET', WATCHED, unpack(targets))
  for i = 1, #targets do
    if found[i] then
      local prune = false
      for entry in string.gmatch(found[i], '%S+') do
        local bell = string.match(entry, '^[^.]+')
        if rung[bell] == nil then
          rung[bell] = redis.call('XADD', NS .. 'bell:' .. bell, 'NOMKSTREAM', 'MAXLEN', '1', '*', 'r', '') and true
        end
        prune = prune or not rung[bell]
      end
      if prune then
        local live = {}
        for entry in string.gmatch(found[i], '%S+') do
          if rung[string.match(entry, '^[^.]+')] then live[#live + 1] = entry end
        end
        if #live > 0 then redis.call('HSET', WATCHED, targets[i], table.concat(live, ' '))
        else redis.call('HDEL', WATCHED, targets[i]) end
      end
    end
  end
end

-- every change takes the next revision and appends one entry to the log
local function append(kind, key, value)
  ring(key)
  local rev = int(redis.call('INCR', REV))
  if value then
    redis.call('XADD', LOG, 'MAXLEN', '~', ARGV[1], rev .. '-0', 't', kind, 'k', key, 'v', value)
  else
    redis.call('XADD', LOG, 'MAXLEN', '~', ARGV[1], rev .. '-0', 't', kind, 'k', key)
  end
  return rev
end

-- a new deadline: keep meta.due no later than the earliest one
local function deadline(at)
  if not DUE or at < DUE then
    DUE = at
    redis.call('HSET', META, 'due', string.format('%.3f', at))
  end
end

-- rec: the key's record if the caller read it already (false: absent)
local function remove(key, rec)
  if rec == nil then rec = redis.call('HGET', KV, key) end
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
  if expected == '' then return rec end
  local rev = rec and fields(rec)
  if expected == 'new' and not rec or rec and rev == tonumber(expected) then return rec end
  fail('REVISION ' .. (rec and int(rev) or '-') .. ' ' .. expected .. ' ' .. (op or 0))
end

-- write a key (its conditions were checked): record, index, ttl and lease -> "revision:created:lease";
-- rec as for remove
local function write(key, value, ttl, lease, rec)
  if rec == nil then rec = redis.call('HGET', KV, key) end
  local _, created, old_lease
  if rec then _, created, old_lease = fields(rec) end
  local new = append('p', key, value)
  created = created or new
  redis.call('HSET', KV, key, new .. ':' .. created .. ':' .. lease .. ':' .. value)
  redis.call('ZADD', IDX, 0, key)
  if ttl ~= '' then
    redis.call('ZADD', TTL, NOW + tonumber(ttl), key)
    deadline(NOW + tonumber(ttl))
  elseif rec then
    redis.call('ZREM', TTL, key)
  end
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

-- delete what is due, then record the earliest deadline left ('' if none)
local function reap()
  for _, lease in ipairs(redis.call('ZRANGEBYSCORE', LEASES, '-inf', NOW)) do drop_lease(lease) end
  for _, key in ipairs(redis.call('ZRANGEBYSCORE', TTL, '-inf', NOW)) do remove(key) end
  local a = redis.call('ZRANGE', LEASES, 0, 0, 'WITHSCORES')[2]
  local b = redis.call('ZRANGE', TTL, 0, 0, 'WITHSCORES')[2]
  DUE = math.min(tonumber(a) or math.huge, tonumber(b) or math.huge)
  redis.call('HSET', META, 'due', DUE < math.huge and string.format('%.3f', DUE) or '')
end

-- A new epoch, where the server may have come back without its last writes (a restart after
-- a crash, a failover to a replica, FLUSHALL): revisions and lease ids jump past every one
-- handed out before, lost or not, and an entry of kind 'e' in the log says where the history
-- this server has ended ('v'), so a watch that was further on knows that it saw lost writes.
local function new_epoch(run)
  local epoch = math.max(tonumber(meta[1] or '0') + 1, tonumber(clock[1]) - EPOCH_BASE)
  local rev = tonumber(redis.call('GET', REV) or '0')
  local last = redis.call('XREVRANGE', LOG, '+', '-', 'COUNT', 1)[1]
  local top = math.max(rev, last and tonumber(string.match(last[1], '^%d+')) or 0)
  local floor = math.max(epoch * EPOCH_SPAN, top + EPOCH_SPAN)
  redis.call('XADD', LOG, 'MAXLEN', '~', ARGV[1], int(floor) .. '-0', 't', 'e', 'k', '', 'v', int(rev))
  redis.call('SET', REV, int(floor))
  redis.call('SET', LEASEID, int(math.max(tonumber(redis.call('GET', LEASEID) or '0') + EPOCH_SPAN, floor)))
  redis.call('HSET', META, 'epoch', int(epoch))
  if run then redis.call('HSET', META, 'boot', run) end
  meta[1] = int(epoch)
  return meta[1]
end

-- the pairs {key, record, ...} of names (records read in batches: unpack has a limit)
local function records(names)
  local found = {}
  for first = 1, #names, 1000 do
    local last = math.min(first + 999, #names)
    local recs = redis.call('HMGET', KV, unpack(names, first, last))
    for i = first, last do
      local rec = recs[i - first + 1]
      if rec then found[#found + 1] = names[i]; found[#found + 1] = rec end
    end
  end
  return found
end

-- Register ('+') or drop ('-') watches for a Store's bell: ARGV from `from` on holds triples of
-- how, target ('=' .. key or '/' .. prefix) and the watch's token. WATCHED[target] lists
-- 'bell.token' entries, one per watch, so a drop never undoes a later registration.
local function listen(bell, from)
  watched = nil  -- as ring finds it from now on
  local key = NS .. 'bell:' .. bell
  for i = from, #ARGV, 3 do
    if ARGV[i] == '+' then
      if redis.call('EXISTS', key) == 0 then redis.call('XADD', key, 'MAXLEN', '1', '*', 'r', '') end
      redis.call('PEXPIRE', key, BELL_TTL)
      break
    end
  end
  for i = from, #ARGV, 3 do
    local how, target, entry = ARGV[i], ARGV[i + 1], bell .. '.' .. ARGV[i + 2]
    local ids = redis.call('HGET', WATCHED, target)
    if how == '+' then
      redis.call('HSET', WATCHED, target, ids and ids .. ' ' .. entry or entry)
    elseif ids then
      local live = {}
      for id in string.gmatch(ids, '%S+') do if id ~= entry then live[#live + 1] = id end end
      if #live > 0 then redis.call('HSET', WATCHED, target, table.concat(live, ' '))
      else redis.call('HDEL', WATCHED, target) end
    end
  end
end

-- Drop the registrations of bells that are gone (Stores that died without closing), a few
-- fields of WATCHED at a time: a key nobody writes again would otherwise keep them.
local function sweep()
  local scan = redis.call('HSCAN', WATCHED, redis.call('HGET', META, 'sweep') or '0', 'COUNT', 20)
  redis.call('HSET', META, 'sweep', scan[1])
  local alive = {}
  for i = 1, #scan[2], 2 do
    local live, dead = {}, false
    for entry in string.gmatch(scan[2][i + 1], '%S+') do
      local bell = string.match(entry, '^[^.]+')
      if alive[bell] == nil then alive[bell] = redis.call('EXISTS', NS .. 'bell:' .. bell) == 1 end
      if alive[bell] then live[#live + 1] = entry else dead = true end
    end
    if dead and #live > 0 then redis.call('HSET', WATCHED, scan[2][i], table.concat(live, ' '))
    elseif dead then redis.call('HDEL', WATCHED, scan[2][i]) end
  end
end

-- reply from an earlier attempt of the same request, if it got through
local function once(body)
  if not REQ then return body() end
  local done = RETRY and redis.call('GET', REQ)
  if done then return done end
  local reply = body()
  redis.call('SET', REQ, reply, 'PX', ARGV[2])
  return reply
end
"""

PRELUDE = (
    PRELUDE.replace("EPOCH_BASE", str(EPOCH_BASE))
    .replace("EPOCH_SPAN", str(EPOCH_SPAN))
    .replace("BELL_MS", str(BELL_MS))
)

# Every script but ``boot`` starts with this, after PRELUDE.
START = """
if not meta[1] then new_epoch(nil) end
if not DUE or DUE <= NOW then reap() end
"""

SCRIPTS = {
    # ARGV: key, value, expected ('' any, 'new' absent, else a revision), ttl ms or '', lease or ''
    "put": """
return once(function()
  local key, lease = ARGV[4], ARGV[8]
  local rec = check(redis.call('HGET', KV, key), ARGV[6])
  if lease ~= '' and not redis.call('ZSCORE', LEASES, lease) then fail('LEASE') end
  return write(key, ARGV[5], ARGV[7], lease, rec)
end)
""",
    # ARGV: ops, each a kind and its fields: 'p' key value expected ttl lease, 'd' key expected,
    # 'c' key expected, 'g' key, 'l' prefix -> one reply per op (see ``txn_results``)
    "txn": """
local done = RETRY and redis.call('GET', REQ)
if done then return cmsgpack.unpack(done) end
local ops, i = {}, 4
while i <= #ARGV do
  local kind = ARGV[i]
  ops[#ops + 1] = i
  i = i + (kind == 'p' and 6 or (kind == 'd' or kind == 'c') and 3 or 2)
end
-- every condition against the store as it was before the transaction; the records read for
-- them serve the writes too, unless an earlier write of the transaction changed the key
local read = {}
for n, at in ipairs(ops) do
  local kind = ARGV[at]
  if kind == 'p' then
    if ARGV[at + 3] ~= '' then read[n] = check(redis.call('HGET', KV, ARGV[at + 1]), ARGV[at + 3], n) end
    local lease = ARGV[at + 5]
    if lease ~= '' and not redis.call('ZSCORE', LEASES, lease) then fail('LEASE ' .. n) end
  elseif (kind == 'd' or kind == 'c') and ARGV[at + 2] ~= '' then
    read[n] = check(redis.call('HGET', KV, ARGV[at + 1]), ARGV[at + 2], n)
  end
end
local reply, written = {}, {}
for n, at in ipairs(ops) do
  local kind, key = ARGV[at], ARGV[at + 1]
  local rec = read[n]
  if written[key] then rec = nil end
  if kind == 'p' then
    reply[n] = write(key, ARGV[at + 2], ARGV[at + 4], ARGV[at + 5], rec)
    written[key] = true
  elseif kind == 'd' then
    reply[n] = remove(key, rec) and '1' or '0'
    written[key] = true
  elseif kind == 'g' then
    reply[n] = redis.call('HGET', KV, key) or ''
  elseif kind == 'l' then
    reply[n] = records(redis.call('ZRANGEBYLEX', IDX, under(key)))
  else
    reply[n] = ''
  end
end
if REQ then redis.call('SET', REQ, cmsgpack.pack(reply), 'PX', ARGV[2]) end
return reply
""",
    # ARGV: key, expected revision or '' -> '1' deleted, '0' absent
    "delete": """
return once(function()
  local rec = check(redis.call('HGET', KV, ARGV[4]), ARGV[5])
  if not rec then return '0' end
  remove(ARGV[4], rec)
  return '1'
end)
""",
    # ARGV: prefix
    "delete_tree": """
return once(function()
  local keys = redis.call('ZRANGEBYLEX', IDX, under(ARGV[4]))
  for _, key in ipairs(keys) do remove(key) end
  return int(#keys)
end)
""",
    # ARGV: key or prefix, 'key' | 'tree' | 'none'[, a bell and registrations, as listen takes them,
    # applied first] -> {revision, key, record, key, record, ...}
    "read": """
local found = {}
if ARGV[6] then listen(ARGV[6], 7) end
if ARGV[5] == 'tree' then
  found = records(redis.call('ZRANGEBYLEX', IDX, under(ARGV[4])))
elseif ARGV[5] == 'key' then
  local rec = redis.call('HGET', KV, ARGV[4])
  if rec then found = {ARGV[4], rec} end
end
table.insert(found, 1, redis.call('GET', REV) or '0')
return found
""",
    # ARGV: ttl ms -> lease id
    "grant": """
return once(function()
  local id = int(redis.call('INCR', LEASEID))
  redis.call('ZADD', LEASES, NOW + tonumber(ARGV[4]), id)
  deadline(NOW + tonumber(ARGV[4]))
  return id
end)
""",
    # ARGV: lease, ttl ms -> 1 renewed, 0 gone (expired leases were reaped above)
    "keepalive": """
if not redis.call('ZSCORE', LEASES, ARGV[4]) then return 0 end
redis.call('ZADD', LEASES, 'XX', NOW + tonumber(ARGV[5]), ARGV[4])
deadline(NOW + tonumber(ARGV[5]))
return 1
""",
    # ARGV: lease
    "revoke": "drop_lease(ARGV[4])\nreturn 1\n",
    # ARGV: a bell or '', 'sweep' or '', then registrations to apply (as listen takes them)
    #   -> {the server's clock (ms), the earliest deadline left (ms) or '', 0 if the bell was gone}
    "reap": """
local bell = ARGV[4] ~= '' and redis.call('PEXPIRE', NS .. 'bell:' .. ARGV[4], BELL_TTL) or 1
if ARGV[5] == 'sweep' then sweep() end
if ARGV[6] then listen(ARGV[4], 6) end
return {string.format('%.3f', NOW), DUE < math.huge and string.format('%.3f', DUE) or '', bell}
""",
    # ARGV: bell, then registrations: triples of '+' or '-', a target and a token -> 1
    "listen": "listen(ARGV[4], 5)\nreturn 1\n",
    # ARGV: revision -> {current revision, id of the oldest entry or '', type and key of the entry at revision}
    "position": """
local first = redis.call('XRANGE', LOG, '-', '+', 'COUNT', 1)
local at = redis.call('XRANGE', LOG, ARGV[4] .. '-0', ARGV[4] .. '-0')
local reply = {redis.call('GET', REV) or '0', first[1] and first[1][1] or ''}
if at[1] then reply[3] = at[1][2][2]; reply[4] = at[1][2][4] end
return reply
""",
}

#: Run on every new connection, before any other command: a server whose run id is not the one
#: recorded in ``meta.boot`` restarted, or took over from a failed primary, and may have lost
#: acknowledged writes, so a new epoch starts before anything else runs there. -> the epoch
BOOT = """
local run = string.match(redis.call('INFO', 'server'), 'run_id:(%x+)')
local epoch = meta[1]
if not epoch or redis.call('HGET', META, 'boot') ~= run then epoch = new_epoch(run) end
if not DUE or DUE <= NOW then reap() end
return epoch
"""

#: The scripts that change the store, each with a request id.
MUTATIONS = frozenset({"put", "delete", "delete_tree", "grant", "txn"})
#: The scripts after which ``replicas=`` waits for the replicas (all that write, but the reaper's).
WRITES = MUTATIONS | {"keepalive", "revoke"}


def source(name: str) -> str:
    """The full text of a script."""
    return PRELUDE + (BOOT if name == "boot" else START + SCRIPTS[name])
