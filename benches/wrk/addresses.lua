-- Failed logins, each from a new client address (X-Forwarded-For, sent
-- through a trusted proxy) for an email of its own. Each wrk thread sends
-- WRK_PER_THREAD requests, then stops: threads * WRK_PER_THREAD addresses.
package.path = package.path .. ";" .. os.getenv("WRK_DIR") .. "/?.lua"
require("report")

local per_thread = tonumber(os.getenv("WRK_PER_THREAD"))
local sent = 0
local base = 0

init = function(args)
  base = id * per_thread
end

request = function()
  if sent >= per_thread then
    wrk.thread:stop()
  end
  local n = base + sent
  sent = sent + 1
  -- 10.0.0.0/8 and 11.0.0.0/8 hold 2^25 addresses: enough for every run.
  local ip = string.format("%d.%d.%d.%d", 10 + math.floor(n / 16777216),
    math.floor(n / 65536) % 256, math.floor(n / 256) % 256, n % 256)
  return wrk.format("POST", "/auth/login",
    { ["Content-Type"] = "application/json", ["X-Forwarded-For"] = ip },
    string.format('{"email":"visitor%d@example.com","password":"not the password"}', n))
end

done = report
