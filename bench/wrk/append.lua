-- POST one constant event body (BENCH_BODY_FILE) to BENCH_PATH; the fastest wrk mode: a static request.
-- BENCH_DELAY_MS > 0 paces each connection (the mixed run's producers).
local common = dofile(os.getenv("BENCH_LUA_DIR") .. "/common.lua")

local f = assert(io.open(os.getenv("BENCH_BODY_FILE"), "rb"))
wrk.method = "POST"
wrk.path = os.getenv("BENCH_PATH")
wrk.body = f:read("*a")
f:close()
wrk.headers = common.headers()

local pause = tonumber(os.getenv("BENCH_DELAY_MS") or "0")
if pause > 0 then
   delay = function() return pause end
end

done = common.done
