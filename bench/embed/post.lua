-- POST load for the middleware benchmark: cycles through request bodies (one compact JSON body
-- per line of a file) and prints one machine-readable summary line at the end.
--
--   wrk -t1 -c1 -d8s -s bench/embed/post.lua http://127.0.0.1:PORT/v1/chat/completions -- BODIES
--
-- Every request is formatted once in init(), so wrk's per-request cost is a table lookup.

local prepared = {}
local n = 0

function init(args)
  local headers = { ["Content-Type"] = "application/json" }
  for line in io.lines(args[1]) do
    if #line > 0 then
      prepared[#prepared + 1] = wrk.format("POST", nil, headers, line)
    end
  end
  if #prepared == 0 then error("no request bodies in " .. args[1]) end
end

function request()
  n = n % #prepared + 1
  return prepared[n]
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'EMBED_WRK {"requests":%d,"duration_us":%d,"errors":%d,' ..
    '"latency_us":{"mean":%.1f,"p50":%d,"p90":%d,"p99":%d}}\n',
    summary.requests, summary.duration, e.connect + e.read + e.write + e.status + e.timeout,
    latency.mean, latency:percentile(50), latency:percentile(90), latency:percentile(99)))
end
