--[[
  Look at one run the sweeper was pointed to. If its lease is over (its worker died or
  its job was lost), claim it again for a new attempt, or, after too many lost runs,
  end it FAILED and release its subscribers. Otherwise report it alive.

  Input:
    KEYS[1]  task document (hash)
    ARGV[1]  task_name
    ARGV[2]  claim token for a new attempt
    ARGV[3]  most runs that may be lost before the stage ends FAILED
    ARGV[4]  queue lease of a new PENDING run, milliseconds
    ARGV[5]  document TTL, seconds

  Output: array
    {"gone"}                                  no document or no such stage
    {"ended"}                                 the stage is SUCCESS or FAILED
    {"alive", status, token, lease_ms}        PENDING/RUNNING with a live lease
    {"rerun", attempt, token}                 claimed again; the caller enqueues the run
    {"failed", input JSON, error, delivery ids...}   ended FAILED; deliveries now due
]]
local rcall = redis.call
if redis.replicate_commands then redis.replicate_commands() end

local doc_key = KEYS[1]
local task_name = ARGV[1]
local token = ARGV[2]
local max_lost = tonumber(ARGV[3])
local queue_lease_ms = tonumber(ARGV[4])
local ttl_seconds = tonumber(ARGV[5])
local stage_field = 's:' .. task_name

local raw = rcall('HGET', doc_key, stage_field)
if not raw then return {'gone'} end
local stage = cjson.decode(raw)
if stage.status ~= 'PENDING' and stage.status ~= 'RUNNING' then return {'ended'} end

local t = rcall('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if stage.lease_ms > now_ms then
  return {'alive', stage.status, stage.token, tostring(stage.lease_ms)}
end

local lost = (stage.lost or 0) + 1
local result
if lost < max_lost then
  stage = {
    status = 'PENDING', attempt = stage.attempt + 1, token = token,
    lease_ms = now_ms + queue_lease_ms, created_ms = stage.created_ms,
    callbacks = stage.callbacks, lost = lost,
  }
  result = {'rerun', tostring(stage.attempt), token}
else
  local error_message = 'run lost: its worker stopped renewing the lease (' .. lost .. ' lost runs)'
  stage.status = 'FAILED'
  stage.error = error_message
  stage.token = nil
  stage.lease_ms = nil
  stage.finished_ms = now_ms
  stage.lost = lost
  result = {'failed', rcall('HGET', doc_key, 'i:' .. task_name) or '{}', error_message}
  for _, entry in ipairs(stage.callbacks or {}) do
    if entry.waiting then
      entry.waiting = false
      entry.updated_ms = now_ms
      result[#result + 1] = entry.delivery_id
    end
  end
end

rcall('HSET', doc_key, stage_field, cjson.encode(stage))
local meta = cjson.decode(rcall('HGET', doc_key, 'meta'))
meta.updated_ms = now_ms
rcall('HSET', doc_key, 'meta', cjson.encode(meta))
rcall('EXPIRE', doc_key, ttl_seconds)
return result
