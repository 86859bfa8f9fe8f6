//! The nesting limit of stored JSON: what a store accepts it can read back.

use serde_json::Value;
use uuid::Uuid;

use super::error::StoreError;

/// The deepest nesting of arrays and objects a store accepts in a JSON
/// value it keeps (a scalar is depth 0, `[1]` depth 1). serde_json reads
/// no deeper than 127 levels, so a deeper value would be acknowledged and
/// then unreadable; the limit leaves room below that.
pub const MAX_JSON_DEPTH: usize = 100;

/// Whether `value` nests arrays and objects deeper than `max` levels. The
/// recursion stops `max` levels down, so its depth is bounded whatever the
/// input, and it reads each element once without allocating.
fn deeper_than(value: &Value, max: usize) -> bool {
    match value {
        // A container is one level deep, plus its deepest element.
        Value::Array(items) => max == 0 || items.iter().any(|v| deeper_than(v, max - 1)),
        Value::Object(map) => max == 0 || map.values().any(|v| deeper_than(v, max - 1)),
        _ => false,
    }
}

/// Refuses `value`, the `field` of a write for `run_id`, if it nests
/// deeper than [`MAX_JSON_DEPTH`]: the check every backend makes on every
/// JSON it stores, before storing it.
pub(crate) fn check_json_depth(
    run_id: Uuid,
    field: &'static str,
    value: &Value,
) -> Result<(), StoreError> {
    if deeper_than(value, MAX_JSON_DEPTH) {
        return Err(StoreError::InvalidInput {
            run_id,
            field,
            value: format!("JSON nested more than {MAX_JSON_DEPTH} levels deep"),
            why: "stored JSON may nest arrays and objects at most MAX_JSON_DEPTH levels deep",
        });
    }
    Ok(())
}

/// [`check_json_depth`] for an optional value.
pub(crate) fn check_opt_json_depth(
    run_id: Uuid,
    field: &'static str,
    value: Option<&Value>,
) -> Result<(), StoreError> {
    value.map_or(Ok(()), |v| check_json_depth(run_id, field, v))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn nested(levels: usize) -> Value {
        let mut value = json!(1);
        for _ in 0..levels {
            value = Value::Array(vec![value]);
        }
        value
    }

    /// Takes a deeply nested value apart level by level: dropping it
    /// whole would recurse once per level.
    fn dismantle(mut value: Value) {
        while let Value::Array(mut items) = value {
            value = items.pop().unwrap_or(Value::Null);
        }
    }

    #[test]
    fn depth_counts_arrays_and_objects() {
        assert!(!deeper_than(&json!(1), 0));
        assert!(deeper_than(&json!([]), 0));
        assert!(deeper_than(&json!({}), 0));
        assert!(!deeper_than(&json!([]), 1));
        assert!(!deeper_than(&json!({"a": [1, {"b": 2}]}), 3));
        assert!(deeper_than(&json!({"a": [1, {"b": []}]}), 3));
        assert!(!deeper_than(&nested(MAX_JSON_DEPTH), MAX_JSON_DEPTH));
        assert!(deeper_than(&nested(MAX_JSON_DEPTH + 1), MAX_JSON_DEPTH));
    }

    #[test]
    fn the_limit_is_below_what_serde_json_reads_back() {
        let at_limit = nested(MAX_JSON_DEPTH);
        let bytes = serde_json::to_vec(&at_limit).expect("encode");
        let read: Value = serde_json::from_slice(&bytes).expect("read back");
        assert_eq!(read, at_limit);
        let unreadable = format!("{}1{}", "[".repeat(128), "]".repeat(128));
        assert!(serde_json::from_str::<Value>(&unreadable).is_err());
    }

    #[test]
    fn a_very_deep_value_is_refused_without_deep_recursion() {
        let run = Uuid::now_v7();
        // Checked on a thread with a small stack: the check must not
        // recurse once per level.
        let value = nested(100_000);
        let value = std::thread::Builder::new()
            .stack_size(64 * 1024)
            .spawn(move || {
                let err = check_json_depth(run, "payload", &value).unwrap_err();
                assert!(
                    matches!(
                        err,
                        StoreError::InvalidInput {
                            field: "payload",
                            ..
                        }
                    ),
                    "{err}"
                );
                assert!(err.to_string().contains("100 levels"), "{err}");
                value
            })
            .expect("spawn")
            .join()
            .expect("check");
        dismantle(value);
        assert!(check_json_depth(run, "payload", &nested(MAX_JSON_DEPTH)).is_ok());
    }
}
