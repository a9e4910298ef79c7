-- Admit one request atomically, or say why not (see storage/__init__.py for the algorithm).
-- ARGV: now, window, rpm, tpm, daily, parallel, need, want, ticket, lease_until, lease_ttl, day_ttl (ms)
-- Returns {admitted 0|1, refusal ("" | day | rpm | tpm | parallel), reserved, free_at (-1), usage...}
local now, window = tonumber(ARGV[1]), tonumber(ARGV[2])
local rpm, tpm, daily, parallel = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local need, want, ticket = tonumber(ARGV[7]), tonumber(ARGV[8]), ARGV[9]
local lease_until, lease_ttl, day_ttl = tonumber(ARGV[10]), tonumber(ARGV[11]), tonumber(ARGV[12])

local sum = expire(now, window)
local day_used = tonumber(redis.call('GET', KEYS[5]) or '0')
local requests = redis.call('ZCARD', KEYS[1])

local refusal, free_at = nil, -1
if day_used + need > daily then
  refusal = 'day'
elseif requests >= rpm then
  refusal, free_at = 'rpm', oldest(KEYS[1])
elseif sum + need > tpm then
  refusal = 'tpm'
  local room_needed = sum + need - tpm
  local entries = redis.call('ZRANGE', KEYS[2], 0, -1, 'WITHSCORES')
  local freed = 0
  for i = 1, #entries, 2 do
    freed = freed + (tonumber(redis.call('HGET', KEYS[3], entries[i]) or '0'))
    if freed >= room_needed then free_at = tonumber(entries[i + 1]); break end
  end
elseif redis.call('ZCARD', KEYS[4]) >= parallel then
  refusal = 'parallel'
end

if refusal then
  local out = {0, refusal, 0, free_at}
  for _, v in ipairs(usage(sum)) do out[#out + 1] = v end
  return out
end

local reserved = math.min(want, tpm - sum, daily - day_used)
redis.call('ZADD', KEYS[1], now, ticket)
redis.call('ZADD', KEYS[2], now, ticket)
sum = sum + reserved
redis.call('HSET', KEYS[3], ticket, reserved, '_sum', sum)
redis.call('INCRBY', KEYS[5], reserved)
redis.call('ZADD', KEYS[4], lease_until, ticket)
touch(window, day_ttl)
redis.call('PEXPIRE', KEYS[4], lease_ttl)
local out = {1, '', reserved, -1}
for _, v in ipairs(usage(sum)) do out[#out + 1] = v end
return out
