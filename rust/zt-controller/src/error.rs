//! The error of an API POST the stock controller fails on, shared by the record merges
//! (`records.rs`) and the rule parser (`rule_json.rs`), which import it from here and not from
//! each other.

use serde_json::Value;

use crate::json::type_name;

/// A POST body the stock controller fails on with HTTP 500 (a type error escaping its JSON
/// library). `description` is the text such an answer carries, e.g.
/// `[json.exception.type_error.302] type must be string, but is number`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{description}")]
pub struct PostError {
    /// The exception text.
    pub description: String,
}

impl PostError {
    pub(crate) fn type_must_be_string(v: &Value) -> Self {
        Self {
            description: format!(
                "[json.exception.type_error.302] type must be string, but is {}",
                type_name(v)
            ),
        }
    }
}
