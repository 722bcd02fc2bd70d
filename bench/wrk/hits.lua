-- Reuse hits spread over several completed stages: the task ids <prefix>-0 ..
-- <prefix>-(count-1), each created and run once beforehand with input {"text":"hi"}
-- (bench/cluster.py), so that on a Redis Cluster the hits reach every primary.
-- args[1] is the prefix, args[2] the count.
local prefix = ""
local count = 1
local next_id = 0

function init(args)
  prefix = args[1]
  count = tonumber(args[2])
  next_id = math.random(0, count - 1)
end

function request()
  next_id = (next_id + 1) % count
  local body = '{"task_name":"demo.echo","task_id":"' .. prefix .. "-" .. next_id .. '","input_data":{"text":"hi"}}'
  return wrk.format("POST", nil, {["Content-Type"] = "application/json"}, body)
end
