--[[
  End a run with SUCCESS or FAILED, only while its claim is current, and release its
  subscribers: their callback records stop waiting and become due.

  Input:
    KEYS[1]  task document (hash)
    KEYS[2]  optional: the run watch list (sorted set), given only when it lives in this
             Redis. When no delivery became due, the run's entry is removed here: there
             is nothing left for the sweeper to finish. Otherwise the worker removes it
             once it queued the deliveries
    ARGV[1]  task_name
    ARGV[2]  claim token of the run
    ARGV[3]  final status: "SUCCESS" | "FAILED"
    ARGV[4]  output JSON (opaque; used with SUCCESS)
    ARGV[5]  error message ("" with SUCCESS)
    ARGV[6]  handler duration, seconds
    ARGV[7]  document TTL, seconds
    ARGV[8]  with KEYS[2]: watch member of this stage ("<task_id>\t<task_name>")

  Output: array
    [1] "ok" | "gone" | "superseded"
    [2..] delivery ids that are now due (on "ok")
]]
local rcall = redis.call
if redis.replicate_commands then redis.replicate_commands() end

local doc_key = KEYS[1]
local task_name = ARGV[1]
local token = ARGV[2]
local final_status = ARGV[3]
local output_json = ARGV[4]
local error_message = ARGV[5]
local duration = tonumber(ARGV[6])
local ttl_seconds = tonumber(ARGV[7])
local watch_key = KEYS[2]
local watch_member = ARGV[8]
local stage_field = 's:' .. task_name

local raw = rcall('HGET', doc_key, stage_field)
if not raw then
  if rcall('EXISTS', doc_key) == 0 then return {'gone'} end
  return {'superseded'}
end
local stage = cjson.decode(raw)
if stage.token ~= token or (stage.status ~= 'PENDING' and stage.status ~= 'RUNNING') then
  return {'superseded'}
end

local t = rcall('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
stage.status = final_status
stage.finished_ms = now_ms
stage.started_ms = stage.started_ms or now_ms
stage.duration = duration
-- The run is over: no job may act on the stage with its token any more, and neither the
-- token nor the lease need be stored (every finished stage would carry ~60 bytes more).
stage.token = nil
stage.lease_ms = nil
if final_status == 'SUCCESS' then
  stage.error = nil
  rcall('HSET', doc_key, 'o:' .. task_name, output_json)
else
  stage.error = error_message
  rcall('HDEL', doc_key, 'o:' .. task_name)
end

local result = {'ok'}
for _, entry in ipairs(stage.callbacks or {}) do
  if entry.waiting then
    entry.waiting = false
    entry.updated_ms = now_ms
    result[#result + 1] = entry.delivery_id
  end
end

rcall('HSET', doc_key, stage_field, cjson.encode(stage))
local meta = cjson.decode(rcall('HGET', doc_key, 'meta'))
meta.updated_ms = now_ms
rcall('HSET', doc_key, 'meta', cjson.encode(meta))
rcall('EXPIRE', doc_key, ttl_seconds)
if watch_key and #result == 1 then
  rcall('ZREM', watch_key, watch_member)
end
return result
