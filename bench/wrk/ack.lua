-- POST action=ACK for distinct events: ids are BENCH_ID_PREFIX (the stream epoch's first 24
-- characters) followed by the sequence's low 48 bits as 12 hex digits, sequences
-- BENCH_FIRST..BENCH_LAST, wrapping around (a wrapped ack is a repeat, still 200).
-- Run with -t1: the counter lives in the one thread's Lua state.
local common = dofile(os.getenv("BENCH_LUA_DIR") .. "/common.lua")

local base = os.getenv("BENCH_PATH")  -- ends with "/events/"
local prefix = os.getenv("BENCH_ID_PREFIX")
local first = tonumber(os.getenv("BENCH_FIRST"))
local last = tonumber(os.getenv("BENCH_LAST"))
local headers = common.headers()
local n = first - 1
local calls = 0

local function ack(sequence)
   return wrk.format("POST", base .. prefix .. string.format("%012x", sequence), headers, "action=ACK")
end

request = function()
   calls = calls + 1
   -- wrk 4 calls request() once on thread 0's state to verify the script and never sends
   -- that request: it must not use up a sequence, or that event stays unacknowledged and
   -- every later ack of its name lands in the consumer's out-of-order set. (A wrk that
   -- sends it costs one repeated ack.)
   if calls == 1 then return ack(first) end
   n = n + 1
   if n > last then n = first end
   return ack(n)
end

done = common.done
