--[[
  end_stage(stage, status, error_message, now_ms): end the stage's run as SUCCESS or FAILED
  and release its subscribers. The run's claim is voided (no job may act on the stage
  with its token any more) and neither token nor lease is stored any longer (every
  finished stage would carry ~60 bytes more). The caller saves the stage.

  It also publishes the task document's key (KEYS[1] of every script that ends a stage)
  on the channel "gw:stage-ended" (keys.stage_ended_channel()): the web processes wake
  the requests that wait for this task (?wait=, gateway/stage_ends.py). The script is
  atomic, so whoever reads after hearing the message sees the saved end. Without a
  subscriber a PUBLISH costs well under a microsecond.

  release_waiting(stage, now_ms): the callback records waiting on the run stop waiting
  and become due. Returns their delivery ids, in record order.
]]
local function release_waiting(stage, now_ms)
  local due = {}
  for _, entry in ipairs(stage.callbacks or {}) do
    if entry.waiting then
      entry.waiting = false
      entry.updated_ms = now_ms
      due[#due + 1] = entry.delivery_id
    end
  end
  return due
end

local function end_stage(stage, status, error_message, now_ms)
  stage.status = status
  stage.error = error_message
  stage.token = nil
  stage.lease_ms = nil
  stage.finished_ms = now_ms
  redis.call('PUBLISH', 'gw:stage-ended', KEYS[1])
  return release_waiting(stage, now_ms)
end
