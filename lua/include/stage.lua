--[[
  A stage in its task document: the state JSON in field "s:<task_name>", beside its input
  ("i:") and output ("o:"), which are opaque strings never decoded here.

  is_live(stage): PENDING or RUNNING, i.e. a run that holds a claim.
  load_stage(doc_key, task_name): the decoded stage, or nil when absent.
  save_stage(doc_key, task_name, stage): write the stage back.
  stored_input(doc_key, task_name): the stage's input JSON, "{}" when none.
]]
local function is_live(stage)
  return stage.status == 'PENDING' or stage.status == 'RUNNING'
end

local function load_stage(doc_key, task_name)
  local raw = redis.call('HGET', doc_key, 's:' .. task_name)
  if not raw then return nil end
  return cjson.decode(raw)
end

local function save_stage(doc_key, task_name, stage)
  redis.call('HSET', doc_key, 's:' .. task_name, cjson.encode(stage))
end

local function stored_input(doc_key, task_name)
  return redis.call('HGET', doc_key, 'i:' .. task_name) or '{}'
end
