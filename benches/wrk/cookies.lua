-- Forward-auth checks that cycle through the session cookies of the file
-- WRK_COOKIES (one a line), each thread through its own share, with the
-- forwarded headers of WRK_HEADERS ("Name: value" lines): figure 11d.
package.path = package.path .. ";" .. os.getenv("WRK_DIR") .. "/?.lua"
require("report")

local cookies = {}
local headers = {}
local n = 0

init = function(args)
  for line in io.lines(os.getenv("WRK_COOKIES")) do
    cookies[#cookies + 1] = line
  end
  for line in os.getenv("WRK_HEADERS"):gmatch("[^\n]+") do
    local name, value = line:match("^([^:]+):%s*(.*)$")
    if name then
      headers[name] = value
    end
  end
  -- Threads start far apart, so that no two ask about the same session at once.
  n = math.floor(id * #cookies / tonumber(os.getenv("WRK_THREADS")))
end

request = function()
  n = n + 1
  headers["Cookie"] = "portcullis_session=" .. cookies[n % #cookies + 1]
  return wrk.format("GET", nil, headers)
end

done = report
