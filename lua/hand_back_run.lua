--[[
  Hand a RUNNING run back to its queue, only while its claim is current: its worker was
  asked to stop (SIGTERM) and the handler did not end within GATEWAY_WORKER_STOP_SECONDS.
  The stage is PENDING again under a new claim token (the stopped handler's is void), with
  the queue lease and the same attempt number: the run was interrupted, not lost, so it
  does not count towards GATEWAY_MAX_ATTEMPTS. The caller enqueues the run under the new
  token; if it cannot, the sweeper finds the PENDING stage without a job and does.

  Input:
    KEYS[1]  task document (hash)
    ARGV[1]  task_name
    ARGV[2]  claim token of the run
    ARGV[3]  new claim token
    ARGV[4]  queue lease of the PENDING run, milliseconds
    ARGV[5]  document TTL, seconds

  Output: array
    [1] "ok" | "gone" (no document) | "superseded" (another claim is current, or the
        stage is not RUNNING)
]]
--- @include "time"
--- @include "stage"
--- @include "meta"
--- @include "ttl"

local rcall = redis.call
if redis.replicate_commands then redis.replicate_commands() end

local doc_key = KEYS[1]
local task_name = ARGV[1]
local token = ARGV[2]
local new_token = ARGV[3]
local queue_lease_ms = tonumber(ARGV[4])
local ttl_seconds = tonumber(ARGV[5])

local stage = load_stage(doc_key, task_name)
if not stage then
  if rcall('EXISTS', doc_key) == 0 then return {'gone'} end
  return {'superseded'}
end
if stage.token ~= token or stage.status ~= 'RUNNING' then return {'superseded'} end

local now_ms = time_ms()
stage.status = 'PENDING'
stage.token = new_token
stage.lease_ms = now_ms + queue_lease_ms
-- The next run starts afresh: no start time, no progress of the stopped one.
stage.started_ms = nil
stage.progress = nil
stage.progress_message = nil
save_stage(doc_key, task_name, stage)
touch_meta(doc_key, now_ms)
keep_document(doc_key, ttl_seconds)
return {'ok'}
