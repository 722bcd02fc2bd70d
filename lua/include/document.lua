--[[
  The document as a whole.

  touch_meta(doc_key, now_ms): record in meta that the document changed (updated_ms).
  keep_document(doc_key, ttl_seconds): a document lives TTL after its last write, so
  every script that writes one ends here (a plain hit writes nothing, not even this).
]]
local function touch_meta(doc_key, now_ms)
  local meta = cjson.decode(redis.call('HGET', doc_key, 'meta'))
  meta.updated_ms = now_ms
  redis.call('HSET', doc_key, 'meta', cjson.encode(meta))
end

local function keep_document(doc_key, ttl_seconds)
  redis.call('EXPIRE', doc_key, ttl_seconds)
end
