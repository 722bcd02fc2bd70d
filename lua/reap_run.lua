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
--- @include "time"
--- @include "live"
--- @include "stage"
--- @include "meta"
--- @include "ttl"
--- @include "end_stage"
--- @include "new_attempt"

local rcall = redis.call
if redis.replicate_commands then redis.replicate_commands() end

local doc_key = KEYS[1]
local task_name = ARGV[1]
local token = ARGV[2]
local max_lost = tonumber(ARGV[3])
local queue_lease_ms = tonumber(ARGV[4])
local ttl_seconds = tonumber(ARGV[5])

local stage = load_stage(doc_key, task_name)
if not stage then return {'gone'} end
if not is_live(stage) then return {'ended'} end

local now_ms = time_ms()
if stage.lease_ms > now_ms then
  return {'alive', stage.status, stage.token, tostring(stage.lease_ms)}
end

local lost = lost_runs(stage)
local result
if lost < max_lost then
  stage = new_attempt(stage, token, queue_lease_ms, now_ms, stage.callbacks)
  result = {'rerun', tostring(stage.attempt), token}
else
  local error_message = 'run lost: its worker stopped renewing the lease (' .. lost .. ' lost runs)'
  result = {'failed', stored_input(doc_key, task_name), error_message}
  for _, delivery_id in ipairs(end_stage(stage, 'FAILED', error_message, now_ms)) do
    result[#result + 1] = delivery_id
  end
  stage.lost = lost
end

save_stage(doc_key, task_name, stage)
touch_meta(doc_key, now_ms)
keep_document(doc_key, ttl_seconds)
return result
