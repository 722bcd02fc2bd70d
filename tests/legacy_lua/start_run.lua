--[[
  Mark a claimed run RUNNING, only while its claim is current.

  Input:
    KEYS[1]  task document (hash)
    KEYS[2]  optional: the run watch list (sorted set), given only when it lives in this
             Redis; the run's entry is then moved to the end of the new lease here,
             instead of by a ZADD of the worker's
    ARGV[1]  task_name
    ARGV[2]  claim token of the run
    ARGV[3]  run lease, milliseconds
    ARGV[4]  document TTL, seconds
    ARGV[5]  with KEYS[2]: watch member of this stage ("<task_id>\t<task_name>")

  Output: array
    [1] "ok" | "gone" (no document) | "superseded" (another claim is current, or the
        stage already ended) | "running" (this claim runs elsewhere, lease alive)
    [2] attempt number (on "ok")
    [3] stored input JSON of the stage (on "ok")
]]
--- @include "time"
--- @include "live"
--- @include "stage"
--- @include "meta"
--- @include "ttl"

local rcall = redis.call
if redis.replicate_commands then redis.replicate_commands() end

local doc_key = KEYS[1]
local task_name = ARGV[1]
local token = ARGV[2]
local run_lease_ms = tonumber(ARGV[3])
local ttl_seconds = tonumber(ARGV[4])
local watch_key = KEYS[2]
local watch_member = ARGV[5]

local fetched = rcall('HMGET', doc_key, 's:' .. task_name, 'i:' .. task_name)
if not fetched[1] then
  if rcall('EXISTS', doc_key) == 0 then return {'gone'} end
  return {'superseded'}
end
local stage = cjson.decode(fetched[1])
local now_ms = time_ms()
if stage.token ~= token then return {'superseded'} end
-- RUNNING with the same token is taken back only once its lease is over (its worker
-- died and the job came round again); while alive, a second copy must not run.
if stage.status == 'RUNNING' and stage.lease_ms > now_ms then return {'running'} end
if not is_live(stage) then return {'superseded'} end
stage.status = 'RUNNING'
stage.started_ms = now_ms
stage.lease_ms = now_ms + run_lease_ms
save_stage(doc_key, task_name, stage)
touch_meta(doc_key, now_ms)
keep_document(doc_key, ttl_seconds)
if watch_key then
  rcall('ZADD', watch_key, stage.lease_ms, watch_member)
end
return {'ok', tostring(stage.attempt), fetched[2] or '{}'}
