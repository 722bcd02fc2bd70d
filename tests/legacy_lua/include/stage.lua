--[[
  A stage in its task document: the state JSON in field "s:<task_name>", beside its input
  ("i:") and output ("o:"), which are opaque strings never decoded here.

  load_stage(doc_key, task_name): the decoded stage, or nil when absent.
  save_stage(doc_key, task_name, stage): write the stage back.
  stored_input(doc_key, task_name): the stage's input JSON, "{}" when none.
]]
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
