-- wrk script for bench/run. Modes (env BENCH_MODE):
--   hits    round-robin over conv_bench_0000 .. conv_bench_{BENCH_IDS-1}, each
--           thread starting at its own offset; requests are prebuilt so the
--           client spends as little CPU as possible (it shares the cores).
--   unique  a never-seen id per request: {BENCH_PREFIX}_{thread}_{counter}.
--   fresh   the ids in turn, each request with a never-seen credential
--           (Bearer {BENCH_PREFIX}_{thread}_{counter}): every request a miss
--           for a cache keyed on the credential, and the ids exist upstream
--           (the miss phase's static-file upstream serves only those).
-- BENCH_PACE_MS > 0: each connection waits that long before each request, so
-- the load stays light and latency (not saturation) is measured.
-- Every request carries Authorization: Bearer {BENCH_TOKEN}, and
-- Accept-Encoding: {BENCH_ACCEPT_ENCODING} when that is set.
-- done() prints one line "BENCH_RESULT {json}" that bench/run parses.

local mode = os.getenv("BENCH_MODE") or "hits"
local n_ids = tonumber(os.getenv("BENCH_IDS") or "1000")
local prefix = os.getenv("BENCH_PREFIX") or "conv_miss"
local token = os.getenv("BENCH_TOKEN") or "sk_bench"
local pace_ms = tonumber(os.getenv("BENCH_PACE_MS") or "0")
local accept_encoding = os.getenv("BENCH_ACCEPT_ENCODING") or ""

local thread_count = 0

function setup(thread)
  thread:set("tid", thread_count)
  thread_count = thread_count + 1
end

function init(args)
  headers = { ["Authorization"] = "Bearer " .. token }
  if accept_encoding ~= "" then
    headers["Accept-Encoding"] = accept_encoding
  end
  counter = 0
  if mode == "hits" then
    prebuilt = {}
    for i = 0, n_ids - 1 do
      prebuilt[i] = wrk.format("GET", string.format("/v1/conversations/conv_bench_%04d", i), headers)
    end
    -- spread the threads over the id space
    counter = (tid * 7919) % n_ids
  end
end

function request()
  counter = counter + 1
  if mode == "hits" then
    return prebuilt[counter % n_ids]
  end
  if mode == "fresh" then
    local fresh = { ["Authorization"] = string.format("Bearer %s_%d_%d", prefix, tid, counter) }
    if accept_encoding ~= "" then
      fresh["Accept-Encoding"] = accept_encoding
    end
    return wrk.format("GET", string.format("/v1/conversations/conv_bench_%04d", counter % n_ids), fresh)
  end
  return wrk.format("GET", string.format("/v1/conversations/%s_%d_%d", prefix, tid, counter), headers)
end

if pace_ms > 0 then
  function delay()
    return pace_ms
  end
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_RESULT {"requests":%d,"duration_us":%d,"bytes":%d,' ..
    '"err_connect":%d,"err_read":%d,"err_write":%d,"err_status":%d,"err_timeout":%d,' ..
    '"p50_us":%d,"p90_us":%d,"p99_us":%d,"p999_us":%d,"max_us":%d,"mean_us":%.1f}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9), latency.max, latency.mean))
end
