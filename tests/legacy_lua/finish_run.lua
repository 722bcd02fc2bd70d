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
--- @include "time"
--- @include "live"
--- @include "stage"
--- @include "meta"
--- @include "ttl"
--- @include "end_stage"

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

local stage = load_stage(doc_key, task_name)
if not stage then
  if rcall('EXISTS', doc_key) == 0 then return {'gone'} end
  return {'superseded'}
end
if stage.token ~= token or not is_live(stage) then
  return {'superseded'}
end

local now_ms = time_ms()
stage.started_ms = stage.started_ms or now_ms
stage.duration = duration
if final_status == 'SUCCESS' then
  error_message = nil
  rcall('HSET', doc_key, 'o:' .. task_name, output_json)
else
  rcall('HDEL', doc_key, 'o:' .. task_name)
end

local result = {'ok'}
for _, delivery_id in ipairs(end_stage(stage, final_status, error_message, now_ms)) do
  result[#result + 1] = delivery_id
end

save_stage(doc_key, task_name, stage)
touch_meta(doc_key, now_ms)
keep_document(doc_key, ttl_seconds)
if watch_key and #result == 1 then
  rcall('ZREM', watch_key, watch_member)
end
return result
