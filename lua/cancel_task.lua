--[[
  Cancel every PENDING or RUNNING stage of a task, or only the one named: each ends
  FAILED with error "cancelled", its claim is voided (a job still running can no longer
  write, and its handler learns it at its next check), and its subscribers are released
  so that they hear of the end.

  Input:
    KEYS[1]  task document (hash)
    ARGV[1]  document TTL, seconds
    ARGV[2]  task_name of the one stage to cancel, "" for every live stage

  Output: array
    [1] "ok" | "missing" (no document) | "no_stage" (no stage ARGV[2])
        | "not_live" (nothing was PENDING or RUNNING; nothing written)
    [2..] with "ok", triples:
          ("stage", task_name, stored input JSON) for each cancelled stage,
          ("pending" | "running", task_name, claim token) what it was when cancelled,
          ("delivery", task_name, delivery id) for each subscriber now due;
          with "not_live", triples ("status", task_name, status) of the stages looked at
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
local ttl_seconds = tonumber(ARGV[1])
local only_task_name = ARGV[2] or ''

-- field, stage JSON pairs: every stage, or the one named.
local fields
if only_task_name == '' then
  fields = rcall('HGETALL', doc_key)
  if #fields == 0 then return {'missing'} end
else
  local raw = rcall('HGET', doc_key, 's:' .. only_task_name)
  if not raw then
    if rcall('EXISTS', doc_key) == 0 then return {'missing'} end
    return {'no_stage'}
  end
  fields = {'s:' .. only_task_name, raw}
end

local now_ms = time_ms()
local result = {'ok'}
local statuses = {'not_live'}
for i = 1, #fields, 2 do
  local field = fields[i]
  if string.sub(field, 1, 2) == 's:' then
    local stage = cjson.decode(fields[i + 1])
    local task_name = string.sub(field, 3)
    if is_live(stage) then
      result[#result + 1] = string.lower(stage.status)
      result[#result + 1] = task_name
      result[#result + 1] = stage.token
      for _, delivery_id in ipairs(end_stage(stage, 'FAILED', 'cancelled', now_ms)) do
        result[#result + 1] = 'delivery'
        result[#result + 1] = task_name
        result[#result + 1] = delivery_id
      end
      result[#result + 1] = 'stage'
      result[#result + 1] = task_name
      result[#result + 1] = stored_input(doc_key, task_name)
      save_stage(doc_key, task_name, stage)
    else
      statuses[#statuses + 1] = 'status'
      statuses[#statuses + 1] = task_name
      statuses[#statuses + 1] = stage.status
    end
  end
end
if #result == 1 then return statuses end
touch_meta(doc_key, now_ms)
keep_document(doc_key, ttl_seconds)
return result
