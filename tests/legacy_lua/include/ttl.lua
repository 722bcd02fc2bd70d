--[[
  keep_document(doc_key, ttl_seconds): a document lives TTL after its last write, so
  every script that writes one ends here (a plain hit writes nothing, not even this).
]]
local function keep_document(doc_key, ttl_seconds)
  redis.call('EXPIRE', doc_key, ttl_seconds)
end
