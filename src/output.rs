//! How commands print: a readable table or JSON.

/// How results are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// A readable table
    Table,
    /// JSON
    Json,
}

/// An optional value as a table cell (`-` when absent).
pub fn opt<T: ToString>(v: &Option<T>) -> String {
    v.as_ref().map_or_else(|| "-".into(), ToString::to_string)
}
