-- wrk script: POST /subscribe with a unique address per request.
--
--   wrk -t2 -c32 -d20s -s benches/signup.lua http://127.0.0.1:8080/subscribe
--
-- Every request is a form-encoded signup for u<thread>-<counter>@example.com,
-- so each one creates a subscriber, a consent event, a confirmation and a
-- confirmation email (nothing is answered from a "recently sent" shortcut).
-- done() prints one machine-readable line that benches/run.sh parses.

local threads = {}
local next_thread = 0

function setup(thread)
  next_thread = next_thread + 1
  thread:set("thread_id", next_thread)
  table.insert(threads, thread)
end

local counter = 0
local headers = { ["Content-Type"] = "application/x-www-form-urlencoded" }

function request()
  counter = counter + 1
  local body = "email=u" .. thread_id .. "-" .. counter .. "%40example.com"
  return wrk.format("POST", nil, headers, body)
end

function done(summary, latency, requests)
  local seconds = summary.duration / 1e6
  io.write(string.format(
    "BENCH requests=%d seconds=%.3f rps=%.1f p50_ms=%.3f p99_ms=%.3f max_ms=%.3f " ..
    "errors_connect=%d errors_read=%d errors_write=%d errors_status=%d errors_timeout=%d\n",
    summary.requests, seconds, summary.requests / seconds,
    latency:percentile(50) / 1000, latency:percentile(99) / 1000, latency.max / 1000,
    summary.errors.connect, summary.errors.read, summary.errors.write,
    summary.errors.status, summary.errors.timeout))
end
