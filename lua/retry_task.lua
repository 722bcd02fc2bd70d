--[[
  Re-run the FAILED stages of a task in place: each gets a new attempt and claim.

  Input:
    KEYS[1]  task document (hash)
    KEYS[2]  optional: the run watch list (sorted set), given only when it lives in this
             Redis; each run claimed again is then added to it in this same step (as
             claim_stage does), so that no process can die between claim and trace
    ARGV[1]  claim token for the new runs (one per call; claims are per stage)
    ARGV[2]  queue lease of a new PENDING run, milliseconds
    ARGV[3]  document TTL, seconds
    ARGV[4]  with KEYS[2]: the task id of the watch members ("<task_id>\t<task_name>")
    ARGV[5]  with KEYS[2]: milliseconds from now at which the sweeper looks at a run

  Output: array
    [1] "ok" | "missing"
    [2..] task names that were claimed again
]]
--- @include "time"
--- @include "stage"
--- @include "meta"
--- @include "ttl"
--- @include "new_attempt"

local rcall = redis.call
if redis.replicate_commands then redis.replicate_commands() end

local doc_key = KEYS[1]
local token = ARGV[1]
local queue_lease_ms = tonumber(ARGV[2])
local ttl_seconds = tonumber(ARGV[3])

local fields = rcall('HGETALL', doc_key)
if #fields == 0 then return {'missing'} end

local now_ms = time_ms()
local result = {'ok'}
for i = 1, #fields, 2 do
  local field = fields[i]
  if string.sub(field, 1, 2) == 's:' then
    local stage = cjson.decode(fields[i + 1])
    if stage.status == 'FAILED' then
      local task_name = string.sub(field, 3)
      save_stage(doc_key, task_name, new_attempt(stage, token, queue_lease_ms, now_ms, stage.callbacks))
      result[#result + 1] = task_name
      if KEYS[2] then
        rcall('ZADD', KEYS[2], now_ms + tonumber(ARGV[5]), ARGV[4] .. '\t' .. task_name)
      end
    end
  end
end
if #result > 1 then touch_meta(doc_key, now_ms) end
keep_document(doc_key, ttl_seconds)
return result
