-- Extend the leases that still exist.  KEYS[1] lease zset.  ARGV: lease_until, lease_ttl, tickets...
local until_ms, ttl = tonumber(ARGV[1]), tonumber(ARGV[2])
for i = 3, #ARGV do redis.call('ZADD', KEYS[1], 'XX', until_ms, ARGV[i]) end
redis.call('PEXPIRE', KEYS[1], ttl)
return 0
