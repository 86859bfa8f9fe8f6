//! Human output: aligned tables, readable UTC times, short JSON cells.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;

use crate::error::CliError;

/// The widest a JSON cell gets in a table before it is cut.
const MAX_CELL: usize = 60;

/// A table whose columns are padded to their widest cell.
pub struct Table {
    headers: Vec<&'static str>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// An empty table with these column headers.
    pub fn new(headers: &[&'static str]) -> Table {
        Table {
            headers: headers.to_vec(),
            rows: Vec::new(),
        }
    }

    /// Adds a row (one cell per header).
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// The table as text, one line per row after the header; the last
    /// column is not padded.
    pub fn render(&self) -> String {
        let mut widths: Vec<usize> = self.headers.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (width, cell) in widths.iter_mut().zip(row) {
                *width = (*width).max(cell.chars().count());
            }
        }
        let header: Vec<String> = self.headers.iter().map(|h| h.to_string()).collect();
        let mut text = String::new();
        for row in std::iter::once(&header).chain(&self.rows) {
            let last = row.len().saturating_sub(1);
            for (i, (cell, width)) in row.iter().zip(&widths).enumerate() {
                if i == last {
                    text.push_str(cell);
                } else {
                    let pad = width - cell.chars().count();
                    text.push_str(cell);
                    text.push_str(&" ".repeat(pad + 2));
                }
            }
            text.push('\n');
        }
        text
    }
}

/// A time as `2026-01-31 12:00:00 UTC`.
pub fn time(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

/// An optional time, `-` when absent.
pub fn opt_time(at: Option<DateTime<Utc>>) -> String {
    at.map_or_else(|| "-".to_owned(), time)
}

/// A JSON value on one line, cut to [`MAX_CELL`] characters.
pub fn short_json(value: &Value) -> String {
    let text = value.to_string();
    if text.chars().count() <= MAX_CELL {
        return text;
    }
    let cut: String = text.chars().take(MAX_CELL - 1).collect();
    format!("{cut}…")
}

/// `value` as one pretty JSON document, with a final newline.
pub fn json<T: Serialize + ?Sized>(value: &T) -> Result<String, CliError> {
    let mut text = serde_json::to_string_pretty(value).map_err(CliError::Encode)?;
    text.push('\n');
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_are_aligned_and_the_last_is_not_padded() {
        let mut table = Table::new(&["ID", "NAME"]);
        table.row(vec!["1".into(), "alpha".into()]);
        table.row(vec!["1234".into(), "b".into()]);
        assert_eq!(table.render(), "ID    NAME\n1     alpha\n1234  b\n");
    }

    #[test]
    fn long_json_is_cut() {
        let value = Value::String("x".repeat(100));
        let cell = short_json(&value);
        assert_eq!(cell.chars().count(), MAX_CELL);
        assert!(cell.ends_with('…'));
        assert_eq!(short_json(&Value::Null), "null");
    }
}
