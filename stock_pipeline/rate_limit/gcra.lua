-- GCRA reservation (or penalty) on every window of one bucket, atomically and on the
-- Redis server clock, so processes on machines with skewed clocks agree.
-- The maths and its proof are in gcra.py (reserve_all, penalise); this is the same
-- computation. Times are whole microseconds since the epoch (exact in a double until
-- the year 2255), always rounded up: rounding can only make the limiter stricter.
--
-- KEYS[1]   the bucket: a hash with one field per window holding its TAT, and the field
--           'paused_until' holding the end of the last 429 pause
-- ARGV[1]   'reserve', 'penalise' or 'paused'
-- ARGV[2]   reserve: the cost in units; penalise: the pause in microseconds; paused: unused
-- ARGV[3..] four per window: field name, emission interval T (microseconds),
--           burst B (units), limit L (units)
-- Returns   reserve: microseconds to wait before sending; penalise: 0;
--           paused: microseconds left of the pause (0 when none), and nothing is changed

local bucket = KEYS[1]
local mode = ARGV[1]
local amount = tonumber(ARGV[2])

local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])

-- A caller that reserved before a 429 and slept asks this before sending: a pause imposed
-- meanwhile (by any process) has moved every TAT, so it reserves again behind the pause.
if mode == 'paused' then
  local paused_until = tonumber(redis.call('HGET', bucket, 'paused_until')) or 0
  return math.max(0, paused_until - now)
end

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
  local paused_until = math.max(tonumber(redis.call('HGET', bucket, 'paused_until')) or 0, now + amount)
  redis.call('HSET', bucket, 'paused_until', string.format('%.0f', paused_until))
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
