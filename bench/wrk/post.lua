-- POST load for wrk: cycles through request bodies, one compact JSON body per line of a file,
-- and prints one machine-readable summary line at the end.
--
--   wrk -t1 -c16 -d8s -s bench/wrk/post.lua http://127.0.0.1:8787/v1/chat/completions -- BODIES [HEADER=VALUE ...]
--
-- Requests are formatted once per thread in init(), so the per-request cost in wrk is a table
-- lookup. Extra arguments NAME=VALUE become request headers (e.g. x-mock-pace=20,5).

local prepared = {}
local n = 0

function init(args)
  local headers = { ["Content-Type"] = "application/json" }
  for i = 2, #args do
    local name, value = string.match(args[i], "^([^=]+)=(.*)$")
    if name then headers[name] = value end
  end
  for line in io.lines(args[1]) do
    if #line > 0 then
      local h = {}
      for k, v in pairs(headers) do h[k] = v end
      prepared[#prepared + 1] = wrk.format("POST", nil, h, line)
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
    'WRK_JSON {"requests":%d,"duration_us":%d,"bytes":%d,' ..
    '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
    '"latency_us":{"mean":%.1f,"max":%d,"p50":%d,"p90":%d,"p99":%d}}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency.mean, latency.max, latency:percentile(50), latency:percentile(90),
    latency:percentile(99)))
end
