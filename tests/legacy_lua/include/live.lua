--[[
  is_live(stage): PENDING or RUNNING, i.e. a run that holds a claim and has not ended.
]]
local function is_live(stage)
  return stage.status == 'PENDING' or stage.status == 'RUNNING'
end
