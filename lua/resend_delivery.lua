--[[
  Send a recorded callback delivery again: find its record among the task's stages,
  check that it may be sent again, and mark it queued for one more series of tries (the
  retry schedule starts again from its first interval). The caller enqueues the try.

  A delivery still queued (being tried, waiting for its next try, or waiting on a run)
  is refused: sending it again would race the try under way. A stage that runs again
  has no current result yet: refused too.

  Input:
    KEYS[1]  task document (hash)
    ARGV[1]  delivery id
    ARGV[2]  document TTL, seconds

  Output: array
    [1] "ok" | "missing" (no document) | "no_delivery" | "delivery_queued" | "stage_live"
    on "ok":
      [2] task name of the delivery's stage
      [3] stage state JSON after the write
      [4] stored input JSON of the stage, "{}" when none
      [5] stored output JSON, "" when none
      [6] the try number to enqueue (tries made so far + 1)
    on "delivery_queued" and "stage_live": [2] the task name
]]
--- @include "time"
--- @include "live"
--- @include "stage"
--- @include "ttl"

local rcall = redis.call
if redis.replicate_commands then redis.replicate_commands() end

local doc_key = KEYS[1]
local delivery_id = ARGV[1]
local ttl_seconds = tonumber(ARGV[2])

-- Field names only: inputs and outputs may be large and are read for one stage.
local names = rcall('HKEYS', doc_key)
if #names == 0 then return {'missing'} end

for _, field in ipairs(names) do
  if string.sub(field, 1, 2) == 's:' then
    local task_name = string.sub(field, 3)
    local stage = load_stage(doc_key, task_name)
    local callbacks = stage.callbacks
    if type(callbacks) ~= 'table' then callbacks = {} end
    for _, entry in ipairs(callbacks) do
      if entry.delivery_id == delivery_id then
        if entry.status == 'queued' then return {'delivery_queued', task_name} end
        if is_live(stage) then return {'stage_live', task_name} end
        local tries_made = entry.attempts or 0
        entry.status = 'queued'
        -- The retry schedule of this series counts its tries from here (jobs.deliver).
        entry.resent_after = tries_made
        entry.resends = (entry.resends or 0) + 1
        entry.updated_ms = time_ms()
        save_stage(doc_key, task_name, stage)
        keep_document(doc_key, ttl_seconds)
        return {
          'ok', task_name, cjson.encode(stage), stored_input(doc_key, task_name),
          rcall('HGET', doc_key, 'o:' .. task_name) or '', tries_made + 1,
        }
      end
    end
  end
end
return {'no_delivery'}
