-- Settle a ticket to its real token count and drop its lease.
-- ARGV: now, window, ticket, reserved, actual, day_ttl.  Returns usage (see _expire.lua).
local now, window, ticket = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3]
local reserved, actual = tonumber(ARGV[4]), tonumber(ARGV[5])
local day_ttl = tonumber(ARGV[6])

local sum = expire(now, window)
local held = redis.call('HGET', KEYS[3], ticket)
if held then
  sum = sum + actual - tonumber(held)
  redis.call('HSET', KEYS[3], ticket, actual, '_sum', sum)
elseif actual > reserved then
  -- The reservation already left the window: count only what was used beyond it, from now.
  local entry = ticket .. ':s'
  redis.call('ZADD', KEYS[2], now, entry)
  sum = sum + actual - reserved
  redis.call('HSET', KEYS[3], entry, actual - reserved, '_sum', sum)
end
local day_used = tonumber(redis.call('GET', KEYS[5]) or '0') + actual - reserved
if day_used < 0 then day_used = 0 end
redis.call('SET', KEYS[5], day_used)
redis.call('ZREM', KEYS[4], ticket)
touch(window, day_ttl)
return usage(sum)
