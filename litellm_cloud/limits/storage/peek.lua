-- The counters of one subject.  ARGV: now, window.  Returns usage (see _expire.lua).
return usage(expire(tonumber(ARGV[1]), tonumber(ARGV[2])))
