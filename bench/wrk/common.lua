-- Shared by every bench script: headers from the environment and one JSON summary line.
-- bench/run.py passes everything through BENCH_* variables, so the scripts hold no secrets.
local M = {}

function M.headers()
   local h = {}
   local auth = os.getenv("BENCH_AUTH")
   if auth and auth ~= "" then h["Authorization"] = auth end
   local producer = os.getenv("BENCH_PRODUCER")
   if producer and producer ~= "" then h["X-Producer-ID"] = producer end
   local consumer = os.getenv("BENCH_CONSUMER")
   if consumer and consumer ~= "" then h["X-Consumer-ID"] = consumer end
   local ctype = os.getenv("BENCH_CONTENT_TYPE")
   if ctype and ctype ~= "" then h["Content-Type"] = ctype end
   return h
end

-- wrk calls done() once, after the run; run.py reads the line that starts with BENCH_JSON.
function M.done(summary, latency, requests)
   local e = summary.errors
   io.write(string.format(
      'BENCH_JSON {"requests":%d,"duration_us":%d,"bytes":%d,"connect":%d,"read":%d,"write":%d,' ..
      '"status":%d,"timeout":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,"mean_us":%.1f,"max_us":%d}\n',
      summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status,
      e.timeout, latency:percentile(50), latency:percentile(90), latency:percentile(99),
      latency.mean, latency.max))
end

return M
