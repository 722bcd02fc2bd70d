--[[
  Extend the lease of a RUNNING run, only while its claim is current (the heartbeat).

  Input:
    KEYS[1]  task document (hash)
    ARGV[1]  task_name
    ARGV[2]  claim token of the run
    ARGV[3]  run lease from now, milliseconds
    ARGV[4]  document TTL, seconds

  Output: 1 when renewed, 0 when the claim is no longer current (or the document is gone)
]]
local rcall = redis.call
if redis.replicate_commands then redis.replicate_commands() end

local doc_key = KEYS[1]
local stage_field = 's:' .. ARGV[1]
local token = ARGV[2]
local run_lease_ms = tonumber(ARGV[3])
local ttl_seconds = tonumber(ARGV[4])

local raw = rcall('HGET', doc_key, stage_field)
if not raw then return 0 end
local stage = cjson.decode(raw)
if stage.token ~= token or stage.status ~= 'RUNNING' then return 0 end

local t = rcall('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
stage.lease_ms = now_ms + run_lease_ms
rcall('HSET', doc_key, stage_field, cjson.encode(stage))
rcall('EXPIRE', doc_key, ttl_seconds)
return 1
