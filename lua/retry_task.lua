--[[
  Re-run the FAILED stages of a task in place (or only the stage ARGV[4]): each gets a
  new attempt and claim, and with a callback URL (ARGV[5]) a callback record waiting on
  the new run, as a pending hit's. Nothing is written unless every retried stage could
  take its record.

  Input:
    KEYS[1]  task document (hash)
    KEYS[2]  optional: the run watch list (sorted set), given only when it lives in this
             Redis; each run claimed again is then added to it in this same step (as
             claim_stage does), so that no process can die between claim and trace
    ARGV[1]  claim token for the new runs (one per call; claims are per stage)
    ARGV[2]  queue lease of a new PENDING run, milliseconds
    ARGV[3]  document TTL, seconds
    ARGV[4]  task_name of the one stage to retry, "" for every FAILED stage
    ARGV[5]  callback URL subscribed to each new run, "" for none
    ARGV[6]  with ARGV[5]: seed of the delivery ids (a stage's id is the first 32 hex
             digits of SHA1(seed .. "\t" .. task_name))
    ARGV[7]  most callback records one stage may hold
    ARGV[8]  most bytes those records may take, as stored (the JSON of the list)
    ARGV[9]  with KEYS[2]: the task id of the watch members ("<task_id>\t<task_name>")
    ARGV[10] with KEYS[2]: milliseconds from now at which the sweeper looks at a run

  Output: array
    [1] "ok" | "missing" | "no_stage" (no stage ARGV[4])
        | "not_failed" (nothing to retry) | "too_many_callbacks" | "callback_records_too_large"
    on "ok": [2..] pairs: task name claimed again, delivery id of its new callback record
             ("" without ARGV[5])
    on "not_failed": [2..] pairs: task name, status, of every stage looked at
    on a callback refusal: [2] the task name whose records are full
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
local only_task_name = ARGV[4]
local callback_url = ARGV[5]
local delivery_seed = ARGV[6]
local max_callbacks = tonumber(ARGV[7])
local max_callback_bytes = tonumber(ARGV[8])

-- The callback list with a waiting record for `url` added, or nil and the refusal when
-- the bounds cannot be kept even after forgetting every finished record (as a claim
-- makes room: waiting and queued records are promises and are never dropped).
local function with_subscriber(callbacks, entry)
  while #callbacks >= max_callbacks do
    local dropped = false
    for i, old in ipairs(callbacks) do
      if old.status ~= 'queued' then
        table.remove(callbacks, i)
        dropped = true
        break
      end
    end
    if not dropped then return nil, 'too_many_callbacks' end
  end
  callbacks[#callbacks + 1] = entry
  local i = 1
  while #cjson.encode(callbacks) > max_callback_bytes do
    while i < #callbacks and callbacks[i].status == 'queued' do i = i + 1 end
    if i >= #callbacks then return nil, 'callback_records_too_large' end  -- never the new one
    table.remove(callbacks, i)
  end
  return callbacks
end

local fields = rcall('HGETALL', doc_key)
if #fields == 0 then return {'missing'} end

local now_ms = time_ms()
local retried = {}   -- {task_name, stage, delivery_id} of each stage to retry
local looked_at = {'not_failed'}
for i = 1, #fields, 2 do
  local field = fields[i]
  if string.sub(field, 1, 2) == 's:' then
    local task_name = string.sub(field, 3)
    if only_task_name == '' or task_name == only_task_name then
      local stage = cjson.decode(fields[i + 1])
      looked_at[#looked_at + 1] = task_name
      looked_at[#looked_at + 1] = stage.status
      if stage.status == 'FAILED' then
        local callbacks = stage.callbacks
        if type(callbacks) ~= 'table' or next(callbacks) == nil then callbacks = {} end  -- cjson: [] is {}
        local delivery_id = ''
        if callback_url ~= '' then
          delivery_id = string.sub(redis.sha1hex(delivery_seed .. '\t' .. task_name), 1, 32)
          local refusal
          callbacks, refusal = with_subscriber(callbacks, {
            delivery_id = delivery_id, url = callback_url, status = 'queued', attempts = 0,
            reuse = false, waiting = true, created_ms = now_ms, updated_ms = now_ms,
          })
          if not callbacks then return {refusal, task_name} end
        end
        if #callbacks == 0 then callbacks = nil end
        retried[#retried + 1] = {task_name, new_attempt(stage, token, queue_lease_ms, now_ms, callbacks), delivery_id}
      end
    end
  end
end
if only_task_name ~= '' and #looked_at == 1 then return {'no_stage'} end
if #retried == 0 then return looked_at end

local result = {'ok'}
for _, entry in ipairs(retried) do
  local task_name = entry[1]
  save_stage(doc_key, task_name, entry[2])
  result[#result + 1] = task_name
  result[#result + 1] = entry[3]
  if KEYS[2] then
    rcall('ZADD', KEYS[2], now_ms + tonumber(ARGV[10]), ARGV[9] .. '\t' .. task_name)
  end
end
touch_meta(doc_key, now_ms)
keep_document(doc_key, ttl_seconds)
return result
