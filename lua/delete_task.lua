--[[
  Delete a task document, refusing while a stage is PENDING or RUNNING unless forced.

  Input:
    KEYS[1]  task document (hash)
    ARGV[1]  "1" to delete even with live stages, "0" otherwise

  Output: array
    [1] "deleted" | "missing" | "busy"
    [2..] with "busy": the task names of the live stages
]]
--- @include "live"

local rcall = redis.call

local doc_key = KEYS[1]
local force = ARGV[1] == '1'

local fields = rcall('HGETALL', doc_key)
if #fields == 0 then return {'missing'} end

if not force then
  local busy = {'busy'}
  for i = 1, #fields, 2 do
    local field = fields[i]
    if string.sub(field, 1, 2) == 's:' then
      local stage = cjson.decode(fields[i + 1])
      if is_live(stage) then
        busy[#busy + 1] = string.sub(field, 3)
      end
    end
  end
  if #busy > 1 then return busy end
end
rcall('DEL', doc_key)
-- Requests waiting for one of its stages to end (?wait=) read again, and find it gone.
rcall('PUBLISH', 'gw:stage-ended', doc_key)
return {'deleted'}
