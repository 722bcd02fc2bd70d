--[[
  Cancel every PENDING or RUNNING stage of a task: each ends FAILED with error
  "cancelled", its claim is voided (a job still running can no longer write), and its
  subscribers are released so that they hear of the end.

  Input:
    KEYS[1]  task document (hash)
    ARGV[1]  document TTL, seconds

  Output: array
    [1] "ok" | "missing"
    [2..] triples: ("stage", task_name, stored input JSON) for each cancelled stage and
          ("delivery", task_name, delivery id) for each subscriber now due
]]
local rcall = redis.call
if redis.replicate_commands then redis.replicate_commands() end

local doc_key = KEYS[1]
local ttl_seconds = tonumber(ARGV[1])

local fields = rcall('HGETALL', doc_key)
if #fields == 0 then return {'missing'} end

local t = rcall('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local result = {'ok'}
for i = 1, #fields, 2 do
  local field = fields[i]
  if string.sub(field, 1, 2) == 's:' then
    local stage = cjson.decode(fields[i + 1])
    if stage.status == 'PENDING' or stage.status == 'RUNNING' then
      local task_name = string.sub(field, 3)
      stage.status = 'FAILED'
      stage.error = 'cancelled'
      stage.token = nil
      stage.lease_ms = nil
      stage.finished_ms = now_ms
      for _, entry in ipairs(stage.callbacks or {}) do
        if entry.waiting then
          entry.waiting = false
          entry.updated_ms = now_ms
          result[#result + 1] = 'delivery'
          result[#result + 1] = task_name
          result[#result + 1] = entry.delivery_id
        end
      end
      result[#result + 1] = 'stage'
      result[#result + 1] = task_name
      result[#result + 1] = rcall('HGET', doc_key, 'i:' .. task_name) or '{}'
      rcall('HSET', doc_key, field, cjson.encode(stage))
    end
  end
end
if #result > 1 then
  local meta = cjson.decode(rcall('HGET', doc_key, 'meta'))
  meta.updated_ms = now_ms
  rcall('HSET', doc_key, 'meta', cjson.encode(meta))
end
rcall('EXPIRE', doc_key, ttl_seconds)
return result
