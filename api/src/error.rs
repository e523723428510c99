//! The error of a manifest section, shared by every section's validation.

/// A problem with a socket section, naming the field as a user would write it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct SocketSpecError {
    pub field: String,
    pub reason: String,
}
