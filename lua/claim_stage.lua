--[[
  Claim one stage of a task document: read the stage of ARGV[1], decide the reuse
  verdict, write what that verdict needs, refresh the TTL. One atomic step. A hit that
  repeats the latest request exactly writes nothing at all.

  User data (input, output) is stored in fields of its own as opaque strings and is
  never decoded here: cjson would re-encode numbers with 14 digits and turn [] into {}.

  Input:
    KEYS[1]  task document (hash)
    KEYS[2]  optional: the run watch list (sorted set). Given only when it lives in this
             Redis; a claimed run is then added to it in this same step, so that no
             process can die between the claim and the trace the sweeper follows
    ARGV[1]  task_name
    ARGV[2]  input_data as canonical JSON (opaque)
    ARGV[3]  the terms of a claim, in one argument (each argument costs the caller about
             3k instructions to send, and a plain hit reads none of these):
               the claim token for a new run and then the delivery id for this
               request's callback, 32 hex characters each, without a separator; then,
               each after one space: the queue lease of a new PENDING run
               (milliseconds), the document TTL (seconds), the most stages one document
               may hold, the most callback records one stage may hold, the most bytes
               those records may take as stored (the JSON of the list) when one is
               added; and with KEYS[2] two more: the time from now at which the
               sweeper looks at the run (milliseconds) and this stage's watch member
               ("<task_id>\t<task_name>", the rest of the text)
    ARGV[4]  optional: callback URL; absent or "" for none
    ARGV[5]  optional: the caller's reuse policy; absent or "" for the default (reuse,
             and reuse on a different input). Otherwise two characters:
               [1] "1" reuse allowed | "0" "reuse": false, a SUCCESS stage runs again
               [2] what a different input means: "u" reuse (the default) | "r" a new run
                   | "x" refuse ("input_mismatch", nothing written)
             A PENDING/RUNNING stage stays a hit whatever the policy: never two runs
    ARGV[6]  optional: input_data as versions before UTF-8 storage wrote it (ASCII
             escapes); absent or "" when that equals ARGV[2]: a stage stored so still
             matches the same input
    ARGV[4] to ARGV[6] are sent only when one of them is not empty (a plain request
    sends three arguments).

  The latest request is recorded in meta (last_task_name, last_callback_url); its
  input_data is its stage's input (i:) or, when it differs, kept in request_input. When
  it was plain (no callback, the stage's own input), field "last_plain" holds its
  task_name too.

  The plain hit: a request that repeats a plain latest request on a stage whose facts
  (f:, see stage.lua) say it is reusable is decided from those plain fields alone, first:
  no JSON decoded, nothing written. Everything else takes the full path below, which
  decodes meta and the stage (and so also serves documents stored before "f:" and
  "last_plain" existed; it writes both). An argument that changes the verdict of a plain
  repeat (such as a request not to reuse) must keep its requests off the plain path.

  Output: array
    [1] state: "miss" | "empty_output" | "stale" | "failed"   (a run was claimed)
               | "rerun" (a SUCCESS stage, by the policy of ARGV[5])
               "completed" | "pending" | "running"             (reuse hit)
               "too_many_stages" | "too_many_callbacks"        (nothing written)
               | "callback_records_too_large" | "input_mismatch"
    [2] input_matches: "1" | "0" | "" (no earlier stage)
    [3] the stage's facts after the write (stage.lua), "" when refused
    [4] stored input JSON of the stage (the one that produced a cached output), "" when
        it is ARGV[2]: the caller holds it, and a large input is not sent back
    [5] stored output JSON, "" when none
    [6] delivery id of this request's callback, "" when none
    [7] "1" when that delivery is due now (completed hit), else "0"
    [8] claim token of the new run, "" on a hit or a refusal
]]
--- @include "time"

local rcall = redis.call

local doc_key = KEYS[1]
local task_name = ARGV[1]
local input_json = ARGV[2]
local callback_url = ARGV[4] or ''
local policy = ARGV[5] or ''
local ascii_input_json = ARGV[6] or ''

local stage_field = 's:' .. task_name
local input_field = 'i:' .. task_name
local output_field = 'o:' .. task_name

local facts_field = 'f:' .. task_name

-- The plain path answers a repeat as it is: a caller's policy (ARGV[5]) may turn a
-- completed stage into a rerun, so a request with one takes the full path.
if callback_url == '' and policy == '' then
  local plain = rcall('HMGET', doc_key, 'last_plain', facts_field, input_field, output_field)
  local facts = plain[2]
  if plain[1] == task_name and facts
      and (plain[3] == input_json or (ascii_input_json ~= '' and plain[3] == ascii_input_json)) then
    local status = string.sub(facts, 1, 7)  -- SUCCESS, PENDING, RUNNING: 7 letters
    local plain_state = nil
    if status == 'SUCCESS' then
      if plain[4] ~= '{}' then plain_state = 'completed' end
    elseif status == 'PENDING' or status == 'RUNNING' then
      if tonumber(string.sub(facts, 9)) > time_ms() then plain_state = string.lower(status) end
    end
    if plain_state then
      local stored_input = (plain[3] ~= input_json) and plain[3] or ''  -- the ASCII form, else ARGV[2]
      return {plain_state, '1', facts, stored_input, plain[4] or '', '', '0', ''}
    end
  end
end

-- Past the plain path: the rest of the snippets (each of their functions is a closure
-- made on every call: the plain hit makes none but time_ms), then the terms (ARGV[3]).
--- @include "live"
--- @include "ttl"
--- @include "new_attempt"
--- @include "stage"

if redis.replicate_commands then redis.replicate_commands() end

local terms = ARGV[3]
local token = string.sub(terms, 1, 32)
local delivery_id = string.sub(terms, 33, 64)
local queue_lease_ms, ttl_seconds, max_stages, max_callbacks, max_callback_bytes, watch_terms =
  string.match(terms, '^ (%d+) (%d+) (%d+) (%d+) (%d+)(.*)$', 65)
queue_lease_ms = tonumber(queue_lease_ms)
ttl_seconds = tonumber(ttl_seconds)
max_stages = tonumber(max_stages)
max_callbacks = tonumber(max_callbacks)
max_callback_bytes = tonumber(max_callback_bytes)

local now_ms = time_ms()

local fetched = rcall('HMGET', doc_key, 'meta', stage_field, input_field, output_field, 'request_input',
  facts_field, 'last_plain')
local meta = fetched[1] and cjson.decode(fetched[1]) or nil
local stage_json = fetched[2]
local stage = stage_json and cjson.decode(stage_json) or nil
local stored_input = fetched[3] or ''
local stored_output = fetched[4] or ''
local has_request_input = fetched[5] and true or false

-- A stored input as the reply carries it (Output [4]): "" when it is ARGV[2]. A stage
-- without one (every attempt writes one) reads as "{}", which the caller shows alike.
local function reply_input(stored)
  if stored == input_json then return '' end
  return (stored == '') and '{}' or stored
end

-- A document stored before the facts and last_plain existed (see the header).
local predates_facts = stage and not (fetched[6] and fetched[7])

local input_matches = ''
if stage then
  local same = stored_input == input_json or (ascii_input_json ~= '' and stored_input == ascii_input_json)
  input_matches = same and '1' or '0'
end

local state
if not stage then
  state = 'miss'
elseif stage.status == 'SUCCESS' then
  state = (stored_output == '{}') and 'empty_output' or 'completed'
elseif is_live(stage) then
  if stage.lease_ms > now_ms then
    state = string.lower(stage.status)
  else
    state = 'stale'
  end
else
  state = 'failed'
end

-- The caller's policy (ARGV[5]); "" (the default) skips it all.
if policy ~= '' then
  local differs = input_matches == '0'
  local on_difference = string.sub(policy, 2, 2)
  if differs and on_difference == 'x' then
    return {'input_mismatch', input_matches, '', '', '', '', '0', ''}
  end
  -- Only an ended, reusable stage runs again: a live one keeps its run (a pending or
  -- running hit), the other verdicts run again anyway.
  if state == 'completed' and (string.sub(policy, 1, 1) == '0' or (differs and on_difference == 'r')) then
    state = 'rerun'
  end
end

if state == 'miss' then
  local stage_count = meta and meta.stages or 0
  if stage_count >= max_stages then
    return {'too_many_stages', input_matches, '', '', '', '', '0', ''}
  end
end

local is_hit = (state == 'completed' or state == 'pending' or state == 'running')

-- A hit that repeats the latest request exactly (same stage, same input, no callback
-- then or now) changes nothing, so it writes nothing: no updated time, no TTL (a
-- document lives TTL after its last write), no AOF or replica traffic for reuse.
if is_hit and callback_url == '' and input_matches == '1' and not has_request_input
    and meta.last_task_name == task_name and not meta.last_delivery_id and not meta.last_callback_url then
  local facts = stage_facts(stage)
  if predates_facts then
    -- Written once, so that the next such request is a plain hit; the TTL stays as it is.
    rcall('HSET', doc_key, facts_field, facts, 'last_plain', task_name)
  end
  return {state, input_matches, facts, reply_input(stored_input), stored_output, '', '0', ''}
end

local callbacks = (stage and stage.callbacks) or {}
-- A plain hit leaves the stage as it is: no re-encoding, no rewrite, no AOF growth.
local stage_changed = not is_hit

-- Find this request's place among the callback records. Waiting records are the
-- subscribers of the current run; a URL subscribes to one run once.
local my_delivery = ''
local due_now = '0'
-- The callback list as encoded, when a record was added (measured, then put in the stage).
local callbacks_json = nil
if callback_url ~= '' then
  if state ~= 'completed' then
    for _, entry in ipairs(callbacks) do
      if entry.waiting and entry.url == callback_url then
        my_delivery = entry.delivery_id
      end
    end
  end
  if my_delivery == '' then
    if #callbacks >= max_callbacks then
      -- Make room by forgetting the oldest finished record; waiting and queued
      -- records are promises and are never dropped.
      for i, entry in ipairs(callbacks) do
        if entry.status ~= 'queued' then
          table.remove(callbacks, i)
          break
        end
      end
      if #callbacks >= max_callbacks then
        return {'too_many_callbacks', input_matches, '', '', '', '', '0', ''}
      end
    end
    local entry = {
      delivery_id = delivery_id, url = callback_url, status = 'queued', attempts = 0,
      reuse = is_hit, reuse_state = state, waiting = (state ~= 'completed'),
      created_ms = now_ms, updated_ms = now_ms,
    }
    if input_matches ~= '' then entry.input_matches = (input_matches == '1') end
    if state == 'completed' then entry.cached_ms = stage.finished_ms end
    callbacks[#callbacks + 1] = entry
    -- Every claim decodes the whole stage: bound its callback records in bytes too.
    -- A list encodes as "[" .. entries joined by "," .. "]", so dropping an entry takes
    -- exactly its own length and a comma off; only over the bound is any entry measured.
    callbacks_json = cjson.encode(callbacks)
    local size = #callbacks_json
    if size > max_callback_bytes then
      local i = 1
      while size > max_callback_bytes and i < #callbacks do  -- never the new, last one
        if callbacks[i].status ~= 'queued' then
          size = size - #cjson.encode(callbacks[i]) - 1
          table.remove(callbacks, i)
        else
          i = i + 1
        end
      end
      if size > max_callback_bytes then
        return {'callback_records_too_large', input_matches, '', '', '', '', '0', ''}
      end
      callbacks_json = cjson.encode(callbacks)
    end
    stage_changed = true
    my_delivery = delivery_id
    if state == 'completed' then due_now = '1' end
  end
end

-- An empty list is left out of the stored stage: readers take a missing one as empty.
if #callbacks == 0 then callbacks = nil end

if not is_hit then
  -- A new attempt. Subscribers of a dead run (stale) stay subscribed to the new one;
  -- after SUCCESS or FAILED nobody waits any more.
  -- A stale run counts as lost, as when the sweeper replaces it (see new_attempt).
  stage = new_attempt(stage, token, queue_lease_ms, now_ms, callbacks)
  rcall('HSET', doc_key, input_field, input_json)
  rcall('HDEL', doc_key, output_field)
  if KEYS[2] then
    local watch_ms, watch_member = string.match(watch_terms, '^ (%d+) (.*)$')
    rcall('ZADD', KEYS[2], now_ms + tonumber(watch_ms), watch_member)
  end
  stored_input = input_json
  stored_output = ''
else
  stage.callbacks = callbacks
end

if not meta then
  meta = {created_ms = now_ms, stages = 0}
end
if state == 'miss' then meta.stages = meta.stages + 1 end
meta.updated_ms = now_ms
meta.last_task_name = task_name
-- Absent rather than "" when the latest request had no callback (nil removes the key).
meta.last_delivery_id = (my_delivery ~= '') and my_delivery or nil
meta.last_callback_url = (callback_url ~= '') and callback_url or nil
local plain_request = callback_url == '' and (not is_hit or input_matches == '1')

if plain_request then
  rcall('HSET', doc_key, 'meta', cjson.encode(meta), 'last_plain', task_name)
else
  rcall('HSET', doc_key, 'meta', cjson.encode(meta))
  rcall('HDEL', doc_key, 'last_plain')
end
-- Versions before meta.last_callback_url (commit 26263ce, 2026-11-28) kept the latest
-- request in a field of its own. Kept: GATEWAY_TASK_TTL_SECONDS has no maximum and every
-- other script's write renews the TTL without removing the field, so such a document may
-- still be stored; gateway/documents.py reads the field until this deletes it.
rcall('HDEL', doc_key, 'request')
if stage_changed then
  if callbacks_json then
    -- Encoded once: the rest of the stage (never empty: it has a status) and the list.
    stage.callbacks = nil
    stage_json = string.sub(cjson.encode(stage), 1, -2) .. ',"callbacks":' .. callbacks_json .. '}'
  else
    stage_json = cjson.encode(stage)
  end
  save_stage_json(doc_key, task_name, stage, stage_json)
end
-- The latest request's input is usually the stage's own input: store it once.
if not is_hit or input_matches == '1' then
  rcall('HDEL', doc_key, 'request_input')
else
  rcall('HSET', doc_key, 'request_input', input_json)
end
keep_document(doc_key, ttl_seconds)

local facts = stage_facts(stage)
if not stage_changed and fetched[6] ~= facts then
  rcall('HSET', doc_key, facts_field, facts)  -- a stage stored before the facts existed
end
return {state, input_matches, facts, reply_input(stored_input), stored_output, my_delivery, due_now,
  is_hit and '' or stage.token}
