--[[
  time_ms(): the Redis server's clock, in whole milliseconds since the epoch. Every time a
  script stores comes from here, so that all processes share one clock.
]]
local function time_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
