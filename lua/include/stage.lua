--[[
  A stage in its task document: the state JSON in field "s:<task_name>", beside its input
  ("i:") and output ("o:"), which are opaque strings never decoded here, and its facts
  ("f:").

  The facts are what the reuse verdict and a hit's answer need, as plain text, so that
  claim_stage decides a plain hit without decoding any JSON (stage_facts):
    "PENDING <lease_ms>" | "RUNNING <lease_ms>"
    "SUCCESS <finished_ms> <duration>" | "FAILED <finished_ms> <duration>"
  (numbers as cjson writes them, "%.14g"; a missing one is ""). Rule: every script that
  writes "s:" writes "f:" in the same step, through save_stage or save_stage_json here; a
  stage written any other way would be reused from stale facts. A stage without "f:"
  (stored before the facts existed) is read through its JSON and gains "f:" on its next
  write.

  load_stage(doc_key, task_name): the decoded stage, or nil when absent.
  save_stage(doc_key, task_name, stage): write the stage back, with its facts.
  save_stage_json(doc_key, task_name, stage, stage_json): the same, for a caller that
  encoded the stage itself; returns the facts.
  stage_facts(stage): the facts of a stage.
  stored_input(doc_key, task_name): the stage's input JSON, "{}" when none.
]]
local function fact_text(number)
  if number == nil then return '' end
  return tostring(number)
end

local function stage_facts(stage)
  if stage.status == 'PENDING' or stage.status == 'RUNNING' then
    return stage.status .. ' ' .. fact_text(stage.lease_ms)
  end
  return stage.status .. ' ' .. fact_text(stage.finished_ms) .. ' ' .. fact_text(stage.duration)
end

local function load_stage(doc_key, task_name)
  local raw = redis.call('HGET', doc_key, 's:' .. task_name)
  if not raw then return nil end
  return cjson.decode(raw)
end

local function save_stage_json(doc_key, task_name, stage, stage_json)
  local facts = stage_facts(stage)
  redis.call('HSET', doc_key, 's:' .. task_name, stage_json, 'f:' .. task_name, facts)
  return facts
end

local function save_stage(doc_key, task_name, stage)
  save_stage_json(doc_key, task_name, stage, cjson.encode(stage))
end

local function stored_input(doc_key, task_name)
  return redis.call('HGET', doc_key, 'i:' .. task_name) or '{}'
end
