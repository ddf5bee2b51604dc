-- The OpenID Connect figures 12b. Every thread keeps a queue of what its
-- connections hand each other.
-- WRK_STEP=code: a connection with no code in the queue asks
-- GET /oidc/authorize as a signed-in browser (the session cookies of many
-- people in WRK_COOKIES, one a line, taken in turn; consent implicit)
-- and queues the code of the redirect; one with a code exchanges it at
-- POST /oidc/token as the client (WRK_BASIC, an Authorization header value).
-- WRK_STEP=refresh: each connection rotates a refresh token at
-- POST /oidc/token as the client and queues the new one; the first tokens come from
-- WRK_TOKENS.<thread>, one a line. wrk may ask a connection for its next
-- request before it hands the script the answer to the last one, so that
-- file holds several tokens a connection: the queue never runs dry.
-- Requests carry distinct X-Forwarded-For addresses, so that per-address
-- rules see many clients, as they would in life.
package.path = package.path .. ";" .. os.getenv("WRK_DIR") .. "/?.lua"
require("report")

local step = os.getenv("WRK_STEP")
local redirect = "http://bench.example/cb"
local queue = {}
local cookies = {}
local sent = 0

init = function(args)
  if step == "code" then
    for line in io.lines(os.getenv("WRK_COOKIES")) do
      table.insert(cookies, line)
    end
  end
  if step == "refresh" then
    for line in io.lines(os.getenv("WRK_TOKENS") .. "." .. id) do
      table.insert(queue, line)
    end
  end
end

local function address()
  local n = sent * 2 + id
  sent = sent + 1
  return string.format("10.%d.%d.%d", math.floor(n / 65536) % 256, math.floor(n / 256) % 256, n % 256)
end

request = function()
  local ip = address()
  local item = table.remove(queue)
  local form = { ["Content-Type"] = "application/x-www-form-urlencoded", ["X-Forwarded-For"] = ip,
    ["Authorization"] = os.getenv("WRK_BASIC") }
  if step == "refresh" then
    return wrk.format("POST", "/oidc/token", form, "grant_type=refresh_token&refresh_token=" .. (item or ""))
  end
  if item then
    return wrk.format("POST", "/oidc/token", form,
      "grant_type=authorization_code&redirect_uri=http%3A%2F%2Fbench.example%2Fcb&code=" .. item)
  end
  return wrk.format("GET",
    "/oidc/authorize?response_type=code&client_id=bench&scope=openid%20email%20groups&state=s" ..
    "&redirect_uri=http%3A%2F%2Fbench.example%2Fcb",
    { ["Cookie"] = "portcullis_session=" .. cookies[(sent * 2 + id) % #cookies + 1], ["X-Forwarded-For"] = ip })
end

response = function(status, headers, body)
  if step == "refresh" then
    local token = body:match('"refresh_token":"([^"]+)"')
    if token then table.insert(queue, token) end
    return
  end
  for name, value in pairs(headers) do
    if name:lower() == "location" then
      local code = value:match("[?&]code=([^&]+)")
      if code then table.insert(queue, code) end
    end
  end
end

done = report
