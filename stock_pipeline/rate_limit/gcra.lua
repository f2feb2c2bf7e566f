-- GCRA reservation (or penalty) on every window of one bucket, atomically and on the
-- Redis server clock, so processes on machines with skewed clocks agree.
-- The maths and its proof are in gcra.py (reserve_all, penalise); this is the same
-- computation. Times are whole microseconds since the epoch (exact in a double until
-- the year 2255), always rounded up: rounding can only make the limiter stricter.
--
-- KEYS[1]   the bucket: a hash with one field per window holding its TAT
-- ARGV[1]   'reserve' or 'penalise'
-- ARGV[2]   reserve: the cost in units; penalise: the pause in microseconds
-- ARGV[3..] four per window: field name, emission interval T (microseconds),
--           burst B (units), limit L (units)
-- Returns   reserve: microseconds to wait before sending; penalise: 0

local bucket = KEYS[1]
local mode = ARGV[1]
local amount = tonumber(ARGV[2])

local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])

local windows = {}
for i = 3, #ARGV, 4 do
  local field = ARGV[i]
  windows[#windows + 1] = {
    field = field,
    interval = tonumber(ARGV[i + 1]),
    burst = tonumber(ARGV[i + 2]),
    limit = tonumber(ARGV[i + 3]),
    -- A missing field is a bucket idle for ever: the epoch is far enough in the past.
    tat = tonumber(redis.call('HGET', bucket, field)) or 0,
  }
end

local wait = 0
if mode == 'reserve' then
  local start = now
  for _, w in ipairs(windows) do
    start = math.max(start, w.tat + (amount - w.burst) * w.interval)
  end
  start = math.ceil(start)
  for _, w in ipairs(windows) do
    w.tat = math.ceil(math.max(w.tat, start) + amount * w.interval)
  end
  wait = start - now
elseif mode == 'penalise' then
  for _, w in ipairs(windows) do
    w.tat = math.max(w.tat, math.ceil(now + amount + (w.burst - 1) * w.interval))
  end
else
  return redis.error_reply('gcra.lua: unknown mode ' .. tostring(mode))
end

-- Keep the key while its state still matters: a TAT more than (L - B) * T in the past
-- behaves exactly like a missing one, so the key may vanish then.
local keep_for = 0
for _, w in ipairs(windows) do
  -- '%.0f': a plain number would be written with 14 significant digits, too few.
  redis.call('HSET', bucket, w.field, string.format('%.0f', w.tat))
  keep_for = math.max(keep_for, w.tat - now + (w.limit - w.burst) * w.interval)
end
redis.call('PEXPIRE', bucket, math.ceil(keep_for / 1000))
return wait
