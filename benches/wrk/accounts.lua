-- Makes accounts and browser sessions for the forward-auth figure 11d.
-- WRK_STEP=register: POST /auth/register for bench-s<n>@example.com, n in
-- [0, WRK_USERS), split between the threads. WRK_STEP=sign_in: POST
-- /ui/login as a browser (one form cookie and token, WRK_FORM and
-- WRK_CSRF, serve every sign-in) cycling over the accounts; each session
-- cookie received is written, one a line, to WRK_OUT.<thread>. The harness
-- stops wrk once the server has answered enough of them.
package.path = package.path .. ";" .. os.getenv("WRK_DIR") .. "/?.lua"
require("report")

local step = os.getenv("WRK_STEP")
local users = tonumber(os.getenv("WRK_USERS"))
local password = os.getenv("WRK_PASSWORD")
local sent = 0
local out = nil

init = function(args)
  if step == "sign_in" then
    out = io.open(os.getenv("WRK_OUT") .. "." .. id, "w")
    out:setvbuf("line")
  end
end

local function encode(text)
  return (text:gsub("[^%w%-%._~]", function(c) return string.format("%%%02X", string.byte(c)) end))
end

request = function()
  -- Thread 0 takes the even numbers, thread 1 the odd ones.
  local n = sent * 2 + id
  sent = sent + 1
  local u = n % users
  local ip = string.format("10.%d.%d.%d", math.floor(n / 65536) % 256, math.floor(n / 256) % 256, n % 256)
  if step == "register" then
    return wrk.format("POST", "/auth/register",
      { ["Content-Type"] = "application/json", ["X-Forwarded-For"] = ip },
      string.format('{"email":"bench-s%d@example.com","password":"%s"}', u, password))
  end
  return wrk.format("POST", "/ui/login",
    { ["Content-Type"] = "application/x-www-form-urlencoded", ["X-Forwarded-For"] = ip,
      ["Cookie"] = "portcullis_form=" .. os.getenv("WRK_FORM") },
    string.format("email=bench-s%d%%40example.com&password=%s&csrf_token=%s", u,
      encode(password), encode(os.getenv("WRK_CSRF"))))
end

response = function(status, headers, body)
  if out then
    for name, value in pairs(headers) do
      if name:lower() == "set-cookie" then
        local cookie = value:match("portcullis_session=([^;]+)")
        if cookie then
          out:write(cookie, "\n")
        end
      end
    end
  end
end

done = report
