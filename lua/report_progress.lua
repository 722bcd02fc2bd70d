--[[
  Record how far a RUNNING run got, only while its claim is current; without a fraction,
  only tell whether it is (a handler's cancellation check). Progress lives in the stage
  (progress, progress_message) and stays as last reported when the run ends; a new
  attempt starts without it. It is no change of the document: meta's updated_ms stays.

  Input:
    KEYS[1]  task document (hash)
    ARGV[1]  task_name
    ARGV[2]  claim token of the run
    ARGV[3]  progress, a number from 0 to 1; "" to write nothing and only look
    ARGV[4]  progress message, "" for none (a report replaces both fields)
    ARGV[5]  document TTL, seconds

  Output: 1 while the claim is current (and the progress was recorded), 0 once it is not
          (cancelled, replaced by another attempt, ended, or the document is gone)
]]
--- @include "stage"
--- @include "ttl"

local rcall = redis.call

local doc_key = KEYS[1]
local task_name = ARGV[1]
local token = ARGV[2]
local fraction = ARGV[3]
local message = ARGV[4]
local ttl_seconds = tonumber(ARGV[5])

local stage = load_stage(doc_key, task_name)
if not stage then return 0 end
if stage.token ~= token or stage.status ~= 'RUNNING' then return 0 end
if fraction == '' then return 1 end

stage.progress = tonumber(fraction)
stage.progress_message = (message ~= '') and message or nil
save_stage(doc_key, task_name, stage)
keep_document(doc_key, ttl_seconds)
return 1
