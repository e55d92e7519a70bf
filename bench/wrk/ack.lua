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

request = function()
   n = n + 1
   if n > last then n = first end
   return wrk.format("POST", base .. prefix .. string.format("%012x", n), headers, "action=ACK")
end

done = common.done
