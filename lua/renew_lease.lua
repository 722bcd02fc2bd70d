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
--- @include "time"
--- @include "stage"
--- @include "ttl"

local rcall = redis.call
if redis.replicate_commands then redis.replicate_commands() end

local doc_key = KEYS[1]
local task_name = ARGV[1]
local token = ARGV[2]
local run_lease_ms = tonumber(ARGV[3])
local ttl_seconds = tonumber(ARGV[4])

local stage = load_stage(doc_key, task_name)
if not stage then return 0 end
if stage.token ~= token or stage.status ~= 'RUNNING' then return 0 end

stage.lease_ms = time_ms() + run_lease_ms
save_stage(doc_key, task_name, stage)
keep_document(doc_key, ttl_seconds)
return 1
