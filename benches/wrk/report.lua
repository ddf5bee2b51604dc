-- Shared by every wrk script of the load harness: the threads numbered 0,
-- 1, ... (each sees its number as the global `id`), and one JSON line at the
-- end with the figures benches/load.py reads (latencies in microseconds).
local next_id = 0
setup = function(thread)
  thread:set("id", next_id)
  next_id = next_id + 1
end

report = function(summary, latency)
  io.write(string.format(
    '\nRESULT {"requests": %d, "duration_us": %d, "non_2xx_3xx": %d, ' ..
    '"socket_errors": %d, "p50_us": %d, "p99_us": %d, "max_us": %d}\n',
    summary.requests, summary.duration, summary.errors.status,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    latency:percentile(50), latency:percentile(99), latency.max))
end
