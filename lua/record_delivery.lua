--[[
  Record the outcome of one callback delivery attempt in its stage's callback record:
  the latest outcome in its fields, and every attempt in its ``tries`` list (the most
  recent ARGV[8] of them). Never brings an expired or deleted document back.

  Input:
    KEYS[1]  task document (hash)
    ARGV[1]  task_name
    ARGV[2]  delivery id
    ARGV[3]  delivery status: "queued" (will retry) | "sent" | "failed"
    ARGV[4]  attempts made so far
    ARGV[5]  HTTP status code of the last attempt, "" when none
    ARGV[6]  error of the last attempt, "" when none
    ARGV[7]  document TTL, seconds
    ARGV[8]  most tries kept in the record's list

  Output: 1 when recorded, 0 when the document, stage or record is gone
]]
--- @include "time"
--- @include "stage"
--- @include "ttl"

local rcall = redis.call
if redis.replicate_commands then redis.replicate_commands() end

local doc_key = KEYS[1]
local task_name = ARGV[1]
local delivery_id = ARGV[2]
local ttl_seconds = tonumber(ARGV[7])

local stage = load_stage(doc_key, task_name)
if not stage then return 0 end

local now_ms = time_ms()
for _, entry in ipairs(stage.callbacks or {}) do
  if entry.delivery_id == delivery_id then
    entry.status = ARGV[3]
    entry.attempts = tonumber(ARGV[4])
    entry.last_status_code = tonumber(ARGV[5])
    entry.last_error = (ARGV[6] ~= '') and ARGV[6] or nil
    entry.updated_ms = now_ms
    local tries = entry.tries or {}
    tries[#tries + 1] = {at_ms = now_ms, status_code = entry.last_status_code, error = entry.last_error}
    while #tries > tonumber(ARGV[8]) do table.remove(tries, 1) end
    entry.tries = tries
    save_stage(doc_key, task_name, stage)
    keep_document(doc_key, ttl_seconds)
    return 1
  end
end
return 0
