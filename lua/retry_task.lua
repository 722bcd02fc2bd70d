--[[
  Re-run the FAILED stages of a task in place: each gets a new attempt and claim.

  Input:
    KEYS[1]  task document (hash)
    KEYS[2]  optional: the run watch list (sorted set), given only when it lives in this
             Redis; each run claimed again is then added to it in this same step (as
             claim_stage does), so that no process can die between claim and trace
    ARGV[1]  claim token for the new runs (one per call; claims are per stage)
    ARGV[2]  queue lease of a new PENDING run, milliseconds
    ARGV[3]  document TTL, seconds
    ARGV[4]  with KEYS[2]: the task id of the watch members ("<task_id>\t<task_name>")
    ARGV[5]  with KEYS[2]: milliseconds from now at which the sweeper looks at a run

  Output: array
    [1] "ok" | "missing"
    [2..] task names that were claimed again
]]
local rcall = redis.call
if redis.replicate_commands then redis.replicate_commands() end

local doc_key = KEYS[1]
local token = ARGV[1]
local queue_lease_ms = tonumber(ARGV[2])
local ttl_seconds = tonumber(ARGV[3])

local fields = rcall('HGETALL', doc_key)
if #fields == 0 then return {'missing'} end

local t = rcall('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local result = {'ok'}
for i = 1, #fields, 2 do
  local field = fields[i]
  if string.sub(field, 1, 2) == 's:' then
    local stage = cjson.decode(fields[i + 1])
    if stage.status == 'FAILED' then
      local retried = {
        status = 'PENDING', attempt = stage.attempt + 1, token = token,
        lease_ms = now_ms + queue_lease_ms, created_ms = stage.created_ms,
        callbacks = stage.callbacks,
      }
      rcall('HSET', doc_key, field, cjson.encode(retried))
      result[#result + 1] = string.sub(field, 3)
      if KEYS[2] then
        rcall('ZADD', KEYS[2], now_ms + tonumber(ARGV[5]), ARGV[4] .. '\t' .. string.sub(field, 3))
      end
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
