--[[
  touch_meta(doc_key, now_ms): record in meta that the document changed (updated_ms).
]]
local function touch_meta(doc_key, now_ms)
  local meta = cjson.decode(redis.call('HGET', doc_key, 'meta'))
  meta.updated_ms = now_ms
  redis.call('HSET', doc_key, 'meta', cjson.encode(meta))
end
