-- GET BENCH_PATH (with its eventName and limit query) as one consumer that never acks,
-- so every request is answered with the same first `limit` events.
local common = dofile(os.getenv("BENCH_LUA_DIR") .. "/common.lua")

wrk.method = "GET"
wrk.path = os.getenv("BENCH_PATH")
wrk.headers = common.headers()

done = common.done
