-- Extend the leases that have not expired.  KEYS[1] lease zset.  ARGV: now, lease_until, lease_ttl, tickets...
local now, until_ms, ttl = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
for i = 4, #ARGV do redis.call('ZADD', KEYS[1], 'XX', until_ms, ARGV[i]) end
redis.call('PEXPIRE', KEYS[1], ttl)
return 0
