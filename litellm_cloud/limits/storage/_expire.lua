-- Shared prologue (prepended to admit.lua, settle.lua and peek.lua by redis.py).
-- KEYS[1] requests zset (ticket -> admitted ms)   KEYS[2] token zset (entry -> ms)
-- KEYS[3] token hash (entry -> tokens, "_sum")    KEYS[4] lease zset (ticket -> expiry ms)
-- KEYS[5] day counter
-- An entry made at t counts while now < t + window: it goes once t <= now - window.
local function expire(now, window)
  local cutoff = now - window
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', cutoff)
  local gone = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', cutoff)
  local sum = tonumber(redis.call('HGET', KEYS[3], '_sum') or '0')
  if #gone > 0 then
    for i = 1, #gone, 500 do
      local chunk = {}
      for j = i, math.min(i + 499, #gone) do chunk[#chunk + 1] = gone[j] end
      local amounts = redis.call('HMGET', KEYS[3], unpack(chunk))
      for _, a in ipairs(amounts) do sum = sum - (tonumber(a) or 0) end
      redis.call('HDEL', KEYS[3], unpack(chunk))
    end
    redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', cutoff)
    redis.call('HSET', KEYS[3], '_sum', sum)
  end
  redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', now)
  return sum
end

local function oldest(key)
  local first = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
  if #first == 0 then return -1 end
  return tonumber(first[2])
end

-- {requests, tokens, day tokens, in flight, oldest request ms, oldest token ms}; -1 means none.
local function usage(sum)
  return {redis.call('ZCARD', KEYS[1]), sum, tonumber(redis.call('GET', KEYS[5]) or '0'),
          redis.call('ZCARD', KEYS[4]), oldest(KEYS[1]), oldest(KEYS[2])}
end

-- Idle keys go on their own: the minute's after two windows, the day's after day_ttl. The lease key's
-- TTL is set where leases are written (admit, renew): the newest lease ends last.
local function touch(window, day_ttl)
  redis.call('PEXPIRE', KEYS[1], window * 2)
  redis.call('PEXPIRE', KEYS[2], window * 2)
  redis.call('PEXPIRE', KEYS[3], window * 2)
  redis.call('PEXPIRE', KEYS[5], day_ttl)
end
