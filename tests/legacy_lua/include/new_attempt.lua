--[[
  A new attempt of a stage: PENDING under a new claim token, with the queue lease.

  The lost-run counter (stage.lost) lives here alone, for every script that starts an
  attempt (claim_stage, retry_task, reap_run). It counts the runs lost in a row since the
  stage last ended: replacing a live run (PENDING/RUNNING whose lease is over) counts
  that run as lost, whoever noticed it, the sweeper or a request with the "stale"
  verdict; an attempt of an ended stage (a request for a FAILED or empty stage, a
  retry) starts the count again. reap_run ends the stage FAILED instead once the count
  reaches GATEWAY_MAX_ATTEMPTS.

  lost_runs(stage): the count the stage has once its current run is replaced, nil for
  none (nil is also what an absent stage gives).
  new_attempt(stage, token, queue_lease_ms, now_ms, callbacks): the new attempt of `stage`
  (nil for the first), keeping its creation time; `callbacks` are its records.
]]
--- @include "live"

local function lost_runs(stage)
  if stage and is_live(stage) then return (stage.lost or 0) + 1 end
  return nil
end

local function new_attempt(stage, token, queue_lease_ms, now_ms, callbacks)
  return {
    status = 'PENDING', attempt = stage and (stage.attempt + 1) or 1, token = token,
    lease_ms = now_ms + queue_lease_ms, created_ms = (stage and stage.created_ms) or now_ms,
    callbacks = callbacks, lost = lost_runs(stage),
  }
end
