--[[
  Cancel every PENDING or RUNNING stage of a task: each ends FAILED with error
  "cancelled", its claim is voided (a job still running can no longer write), and its
  subscribers are released so that they hear of the end.

  Input:
    KEYS[1]  task document (hash)
    ARGV[1]  document TTL, seconds

  Output: array
    [1] "ok" | "missing"
    [2..] triples: ("stage", task_name, stored input JSON) for each cancelled stage and
          ("delivery", task_name, delivery id) for each subscriber now due
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

local fields = rcall('HGETALL', doc_key)
if #fields == 0 then return {'missing'} end

local now_ms = time_ms()
local result = {'ok'}
for i = 1, #fields, 2 do
  local field = fields[i]
  if string.sub(field, 1, 2) == 's:' then
    local stage = cjson.decode(fields[i + 1])
    if is_live(stage) then
      local task_name = string.sub(field, 3)
      for _, delivery_id in ipairs(end_stage(stage, 'FAILED', 'cancelled', now_ms)) do
        result[#result + 1] = 'delivery'
        result[#result + 1] = task_name
        result[#result + 1] = delivery_id
      end
      result[#result + 1] = 'stage'
      result[#result + 1] = task_name
      result[#result + 1] = stored_input(doc_key, task_name)
      save_stage(doc_key, task_name, stage)
    end
  end
end
if #result > 1 then touch_meta(doc_key, now_ms) end
keep_document(doc_key, ttl_seconds)
return result
