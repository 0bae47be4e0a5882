//! The Lua scripts that make each Redis operation atomic, and the decoding of the stream entries
//! they store.
//!
//! An entry's fields: `t` topic (log only), `n` event name (empty: none), `s` SSE data, `j` JSON
//! data (when `J` is `1`), `i` `1` when the id goes first into the data object, `m` Redis time in
//! milliseconds at publish.

use redis::Value;

use super::redis_value::{bulk_string, entries, int};
use crate::hub::Seq;

/// Publish: takes the next seq and appends the event to the channel's stream and to the cluster
/// log, in one atomic step, so seq order is commit order. Refuses if the cluster epoch is not
/// the caller's (Redis lost its data, or evicted keys): ids must never be handed out twice.
///
/// The channel's stream is capped exactly, by deleting its oldest entries with `XDEL`: only
/// `XDEL` moves a stream's `max-deleted-entry-id` (trimming with `MAXLEN` does not), and that is
/// what tells a resume that events after its id are gone. With a cap of 0 the entry is added and
/// deleted at once, for the same reason. A user's queue also counts evictions no stream received.
///
/// With an idempotency key (ARGV 11 not empty) the key's seq is stored with the event, for the
/// window (ARGV 12, milliseconds); a publish that finds it stored publishes nothing and answers
/// that seq. Both in the same script, so a publish whose answer timed out but which Redis ran
/// is recognised on retry.
///
/// KEYS: seq, log, channel stream, lost counter, delivered mark, epoch, idempotency key.
/// ARGV: cap, log cap, topic, name, sse, json, has json, id first, is user, epoch,
/// idempotency key (or empty), window ms.
pub const PUBLISH: &str = r#"
if redis.call('GET', KEYS[6]) ~= ARGV[10] then
  return redis.error_reply('SLUICE_EPOCH the cluster epoch changed')
end
if ARGV[11] ~= '' then
  local seen = redis.call('GET', KEYS[7])
  if seen then return tonumber(seen) end
end
local seq = redis.call('INCR', KEYS[1])
local id = seq .. '-0'
local now = redis.call('TIME')
local ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local cap = tonumber(ARGV[1])
local delivered = 0
if ARGV[9] == '1' then delivered = tonumber(redis.call('GET', KEYS[5]) or '0') end
redis.call('XADD', KEYS[3], id, 'n', ARGV[4], 's', ARGV[5], 'j', ARGV[6], 'J', ARGV[7], 'i', ARGV[8], 'm', ms)
while redis.call('XLEN', KEYS[3]) > cap do
  local oldest = redis.call('XRANGE', KEYS[3], '-', '+', 'COUNT', 1)[1]
  redis.call('XDEL', KEYS[3], oldest[1])
  if ARGV[9] == '1' and cap > 0 then
    local old = tonumber(string.match(oldest[1], '^(%d+)'))
    if old > delivered then redis.call('INCR', KEYS[4]) end
  end
end
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], id, 't', ARGV[3], 'n', ARGV[4], 's', ARGV[5], 'j', ARGV[6], 'J', ARGV[7], 'i', ARGV[8], 'm', ms)
if ARGV[11] ~= '' then redis.call('SET', KEYS[7], seq, 'PX', ARGV[12]) end
return seq
"#;

/// Starts a cluster epoch unless Redis holds one, and answers the epoch Redis then holds. Nodes
/// that start, or find Redis came back without the cluster's data, all run it: the first creates
/// the epoch, the others join it, so there is exactly one. A new epoch starts with no seq counter
/// and an empty log (whatever is left of them belongs to no epoch); the channel streams of a
/// Redis that lost its data are gone too.
///
/// KEYS: epoch, seq, log. ARGV: a fresh epoch.
pub const START_EPOCH: &str = r#"
local current = redis.call('GET', KEYS[1])
if current then return current end
redis.call('DEL', KEYS[2], KEYS[3])
redis.call('SET', KEYS[1], ARGV[1])
return ARGV[1]
"#;

/// Reads a channel stream for a stream that opens.
///
/// KEYS: channel stream, delivered mark, lost counter. ARGV: mode, after, upto, count.
/// - `replay`: `{max deleted id, entries in (after, upto]}`;
/// - `take` (a user's queue): `{max deleted id, entries in (delivered, upto], lost}`, and the
///   mark moves to `upto`;
/// - `mark`: the delivered mark moves up to `upto`;
/// - `recent`: `{max deleted id, the last `count` entries up to `upto`, newest first}`.
pub const FETCH: &str = r#"
local function max_deleted()
  local ok, info = pcall(redis.call, 'XINFO', 'STREAM', KEYS[1])
  if not ok then return '0-0' end
  for i = 1, #info, 2 do
    if info[i] == 'max-deleted-entry-id' then return info[i + 1] end
  end
  return '0-0'
end
local function raise_mark(upto)
  local delivered = tonumber(redis.call('GET', KEYS[2]) or '0')
  if tonumber(upto) > delivered then redis.call('SET', KEYS[2], upto) end
  return delivered
end
local mode = ARGV[1]
if mode == 'mark' then
  raise_mark(ARGV[3])
  return 0
elseif mode == 'take' then
  local delivered = raise_mark(ARGV[3])
  local lost = tonumber(redis.call('GETDEL', KEYS[3]) or '0')
  if tonumber(ARGV[3]) <= delivered then return {max_deleted(), {}, lost} end
  return {max_deleted(), redis.call('XRANGE', KEYS[1], '(' .. delivered .. '-0', ARGV[3] .. '-0'), lost}
elseif mode == 'recent' then
  return {max_deleted(), redis.call('XREVRANGE', KEYS[1], ARGV[3] .. '-0', '-', 'COUNT', ARGV[4]), 0}
else
  if tonumber(ARGV[3]) <= tonumber(ARGV[2]) then return {max_deleted(), {}, 0} end
  return {max_deleted(), redis.call('XRANGE', KEYS[1], '(' .. ARGV[2] .. '-0', ARGV[3] .. '-0'), 0}
end
"#;

/// One stored event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fields {
    /// The channel (log entries only).
    pub topic: String,
    /// The event name; empty for none.
    pub name: String,
    /// The SSE data.
    pub sse: String,
    /// The data for JSON transports, if it is JSON.
    pub json: Option<String>,
    /// Whether the id goes first into the data object.
    pub id_first: bool,
    /// When Redis stored it, in milliseconds since the Unix epoch.
    pub at_ms: u64,
}

/// The seq of a stream id `<seq>-0`.
pub fn seq_of(id: &str) -> Option<Seq> {
    id.split_once('-')?.0.parse().ok()
}

/// Decodes a list of stream entries into `(seq, fields)`.
pub fn decode_entries(value: &Value) -> Vec<(Seq, Fields)> {
    entries(value)
        .into_iter()
        .filter_map(|(id, pairs)| {
            let seq = seq_of(&id)?;
            let mut fields = Fields {
                topic: String::new(),
                name: String::new(),
                sse: String::new(),
                json: None,
                id_first: false,
                at_ms: 0,
            };
            let mut json = None;
            let mut has_json = false;
            for (key, value) in pairs {
                match key.as_str() {
                    "t" => fields.topic = value,
                    "n" => fields.name = value,
                    "s" => fields.sse = value,
                    "j" => json = Some(value),
                    "J" => has_json = value == "1",
                    "i" => fields.id_first = value == "1",
                    "m" => fields.at_ms = value.parse().unwrap_or(0),
                    _ => {}
                }
            }
            if has_json {
                fields.json = json;
            }
            Some((seq, fields))
        })
        .collect()
}

/// The answer of [`FETCH`]: the highest seq ever deleted from the stream, the entries, and (for
/// `take`) how many undelivered events were evicted.
pub struct Fetched {
    /// Highest seq trimmed or evicted from the stream (0: none).
    pub max_deleted: Seq,
    /// The entries.
    pub entries: Vec<(Seq, Fields)>,
    /// Undelivered events evicted since the last take.
    pub lost: u64,
}

/// Decodes [`FETCH`]'s `{max deleted, entries, lost}`.
pub fn decode_fetch(value: &Value) -> Option<Fetched> {
    let Value::Array(parts) = value else {
        return None;
    };
    let max_deleted = seq_of(&bulk_string(parts.first()?)?)?;
    Some(Fetched {
        max_deleted,
        entries: decode_entries(parts.get(1)?),
        lost: parts.get(2).and_then(int).unwrap_or(0),
    })
}
