-- Logins with the right password, cycling through WRK_USERS accounts
-- (bench0@example.com ...), each from an address of its own, so that no single
-- key holds more than a few of the in-flight reservations (SPEC section 6).
package.path = package.path .. ";" .. os.getenv("WRK_DIR") .. "/?.lua"
require("report")

local users = tonumber(os.getenv("WRK_USERS"))
local password = os.getenv("WRK_PASSWORD")
local n = 0

request = function()
  local u = (n * 2 + id) % users
  n = n + 1
  return wrk.format("POST", "/auth/login",
    { ["Content-Type"] = "application/json",
      ["X-Forwarded-For"] = string.format("198.18.%d.%d", math.floor(u / 256), u % 256) },
    string.format('{"email":"bench%d@example.com","password":"%s"}', u, password))
end

done = report
