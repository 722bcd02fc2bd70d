--[[
  A new attempt of a stage: PENDING under a new claim token, with the queue lease.

  The lost-run counter (stage.lost) lives here alone, for every script that starts an
  attempt (claim_stage, retry_task, reap_run). It counts the runs lost in a row since the
  stage last ended: replacing a live run (PENDING/RUNNING whose lease is over) counts
  that run as lost, whoever noticed it, the sweeper or a request with the "stale"
  verdict; an attempt of an ended stage (a request for a FAILED or empty stage, a
  retry) starts the count again. reap_run ends the stage FAILED instead once the count
  reaches GATEWAY_MAX_ATTEMPTS.

  The attempts it replaces are kept, the last MAX_EARLIER_RUNS of them, in stage.runs:
  {attempt, queued_ms, started_ms, ended_ms, status} each, status "LOST" for a run that
  was replaced while PENDING/RUNNING (ended_ms is then when that was noticed). A first
  attempt was queued at the stage's created_ms; a later one stores its own queued_ms.
  Only the operator console reads them (its timeline); they cost nothing on a reuse hit,
  which never builds an attempt.

  lost_runs(stage): the count the stage has once its current run is replaced, nil for
  none (nil is also what an absent stage gives).
  new_attempt(stage, token, queue_lease_ms, now_ms, callbacks): the new attempt of `stage`
  (nil for the first), keeping its creation time; `callbacks` are its records.
]]
--- @include "live"

local MAX_EARLIER_RUNS = 10

local function lost_runs(stage)
  if stage and is_live(stage) then return (stage.lost or 0) + 1 end
  return nil
end

local function earlier_runs(stage, now_ms)
  if not stage then return nil end
  local runs = stage.runs or {}
  runs[#runs + 1] = {
    attempt = stage.attempt, queued_ms = stage.queued_ms or stage.created_ms, started_ms = stage.started_ms,
    ended_ms = stage.finished_ms or now_ms, status = is_live(stage) and 'LOST' or stage.status,
  }
  while #runs > MAX_EARLIER_RUNS do table.remove(runs, 1) end
  return runs
end

local function new_attempt(stage, token, queue_lease_ms, now_ms, callbacks)
  return {
    status = 'PENDING', attempt = stage and (stage.attempt + 1) or 1, token = token,
    lease_ms = now_ms + queue_lease_ms, created_ms = (stage and stage.created_ms) or now_ms,
    queued_ms = stage and now_ms or nil, runs = earlier_runs(stage, now_ms),
    callbacks = callbacks, lost = lost_runs(stage),
  }
end
