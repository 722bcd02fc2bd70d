-- A new task_id on every request: each one is a miss (claim + RQ enqueue, 202).
-- args[1] is a prefix unique to the run; each wrk thread numbers its own requests,
-- so ids never repeat across threads.
local threads = 0

-- Runs in wrk's main Lua state once per thread, before that thread starts.
function setup(thread)
  threads = threads + 1
  thread:set("thread_number", threads)
end

local prefix = ""
local count = 0

function init(args)
  prefix = args[1] .. "-" .. thread_number .. "-"
end

function request()
  count = count + 1
  local body = '{"task_name":"demo.echo","task_id":"' .. prefix .. count .. '","input_data":{"text":"hi"}}'
  return wrk.format("POST", nil, {["Content-Type"] = "application/json"}, body)
end
