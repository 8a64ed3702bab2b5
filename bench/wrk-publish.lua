-- wrk script for the publish-wrk scenario of bench/run.sh: POSTs one ~100-byte JSON message per
-- request (the gateway's body, or Nchan's, where the channel is in the URL) and prints one JSON
-- line of results at the end. BENCH_KEY: the API key to send (none for Nchan).
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local key = os.getenv("BENCH_KEY")
if key and key ~= "" then wrk.headers["Authorization"] = "Bearer " .. key end
wrk.body = '{"channel":"bench-wrk","event":"tick","data":{"payload":"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"}}'

function done(summary, latency, requests)
  local failed = summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.status + summary.errors.timeout
  local seconds = summary.duration / 1e6
  io.write(string.format(
    '{"scenario":"publish-wrk","published":%d,"publish_failed":%d,"seconds":%.3f,"publish_per_second":%.1f,' ..
    '"publish_latency_ms":{"p50":%.3f,"p90":%.3f,"p99":%.3f,"max":%.3f},"subscribers":0,"channels":1,"expected":0,"delivered":0,"lost":0}\n',
    summary.requests - failed, failed, seconds, (summary.requests - failed) / seconds,
    latency:percentile(50) / 1000, latency:percentile(90) / 1000, latency:percentile(99) / 1000, latency.max / 1000))
end
