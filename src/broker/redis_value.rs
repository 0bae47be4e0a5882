//! Reading the shapes Redis answers with (RESP2 arrays of bulk strings) without panicking on
//! anything unexpected.

use redis::Value;

/// A bulk or simple string as text.
pub fn bulk_string(value: &Value) -> Option<String> {
    match value {
        Value::BulkString(bytes) => String::from_utf8(bytes.clone()).ok(),
        Value::SimpleString(text) => Some(text.clone()),
        Value::Int(n) => Some(n.to_string()),
        _ => None,
    }
}

/// An integer, or a string holding one.
pub fn int(value: &Value) -> Option<u64> {
    match value {
        Value::Int(n) => u64::try_from(*n).ok(),
        other => bulk_string(other)?.parse().ok(),
    }
}

/// Stream entries `[[id, [field, value, ...]], ...]` as `(id, [(field, value)])`.
pub fn entries(value: &Value) -> Vec<(String, Vec<(String, String)>)> {
    let Value::Array(items) = value else {
        return Vec::new();
    };
    items
        .iter()
        .filter_map(|item| {
            let Value::Array(pair) = item else {
                return None;
            };
            let id = bulk_string(pair.first()?)?;
            let Value::Array(flat) = pair.get(1)? else {
                return None;
            };
            let fields = flat
                .chunks(2)
                .filter_map(|kv| Some((bulk_string(kv.first()?)?, bulk_string(kv.get(1)?)?)))
                .collect();
            Some((id, fields))
        })
        .collect()
}

/// The entries of the one stream an `XREAD` answered for: `[[key, entries]]` (RESP2) or
/// `{key: entries}` (RESP3).
pub fn xread_entries(value: &Value) -> Option<&Value> {
    match value {
        Value::Array(streams) => match streams.first()? {
            Value::Array(pair) => pair.get(1),
            _ => None,
        },
        Value::Map(pairs) => pairs.first().map(|(_, entries)| entries),
        _ => None,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn bulk(text: &str) -> Value {
        Value::BulkString(text.as_bytes().to_vec())
    }

    #[test]
    fn stream_entries_decode() {
        let value = Value::Array(vec![Value::Array(vec![
            bulk("5-0"),
            Value::Array(vec![bulk("t"), bulk("news"), bulk("s"), bulk("hi")]),
        ])]);
        let decoded = entries(&value);
        assert_eq!(decoded.len(), 1);
        assert_eq!(decoded[0].0, "5-0");
        assert_eq!(decoded[0].1[1], ("s".to_owned(), "hi".to_owned()));
        let read = Value::Array(vec![Value::Array(vec![bulk("sluice:log"), value.clone()])]);
        assert_eq!(xread_entries(&read), Some(&value));
        assert!(entries(&Value::Nil).is_empty());
        assert_eq!(int(&bulk("42")), Some(42));
    }
}
