-- One fixed request, repeated: method, body and headers come from the
-- environment (WRK_METHOD, WRK_BODY, WRK_AUTH, WRK_XFF, and WRK_HEADERS:
-- "Name: value" lines).
package.path = package.path .. ";" .. os.getenv("WRK_DIR") .. "/?.lua"
require("report")

wrk.method = os.getenv("WRK_METHOD") or "GET"
local body = os.getenv("WRK_BODY")
if body and body ~= "" then
  wrk.body = body
  wrk.headers["Content-Type"] = "application/json"
end
local auth = os.getenv("WRK_AUTH")
if auth and auth ~= "" then
  wrk.headers["Authorization"] = "Bearer " .. auth
end
local xff = os.getenv("WRK_XFF")
if xff and xff ~= "" then
  wrk.headers["X-Forwarded-For"] = xff
end

local extra = os.getenv("WRK_HEADERS")
if extra and extra ~= "" then
  for line in extra:gmatch("[^\n]+") do
    local name, value = line:match("^([^:]+):%s*(.*)$")
    if name then
      wrk.headers[name] = value
    end
  end
end

done = report
