//! How a PostgreSQL column is stored in a day archive's Parquet file, and read back.
//!
//! Integers, booleans, timestamps (microseconds, UTC), dates and raw bytes keep their Parquet
//! types; text and text arrays are strings; everything else — `numeric` (money stays exact:
//! its decimal text, never a float), `uuid`, `jsonb`, `char` — is stored as the text
//! PostgreSQL prints for it, which casts back to the same value. Each column's PostgreSQL type
//! is also in the manifest.

use chrono::{DateTime, NaiveDate};
use parquet::data_type::ByteArray;
use parquet::record::{Field, List};
use serde::{Deserialize, Serialize};
use tokio_postgres::GenericClient;

use crate::store::StoreError;
use crate::store::setup::quote_ident;

/// The storage of one column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// smallint (as a 16-bit INT32)
    I16,
    /// integer
    I32,
    /// bigint
    I64,
    /// boolean
    Bool,
    /// timestamptz, as microseconds since the epoch (UTC)
    Timestamp,
    /// date, as days since the epoch
    Date,
    /// bytea
    Bytes,
    /// Any other type, as its text
    Text,
    /// text[]
    TextList,
    /// bytea[]
    BytesList,
}

impl Kind {
    fn of(typname: &str) -> Self {
        match typname {
            "int2" => Self::I16,
            "int4" => Self::I32,
            "int8" => Self::I64,
            "bool" => Self::Bool,
            "timestamptz" => Self::Timestamp,
            "date" => Self::Date,
            "bytea" => Self::Bytes,
            "_text" => Self::TextList,
            "_bytea" => Self::BytesList,
            _ => Self::Text,
        }
    }
}

/// One column of an archived table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Column {
    /// Its name
    pub name: String,
    /// Its PostgreSQL type, as `format_type` prints it
    pub pg_type: String,
    /// Its type's name in `pg_type` (how it is stored)
    pub typname: String,
}

impl Column {
    /// How it is stored.
    pub fn kind(&self) -> Kind {
        Kind::of(&self.typname)
    }

    /// The expression that reads it from row `t` for the export.
    pub fn select(&self) -> String {
        let c = format!("t.{}", quote_ident(&self.name));
        match self.kind() {
            Kind::I16 => format!("{c}::int4"),
            Kind::Timestamp => format!("(extract(epoch FROM {c}) * 1000000)::int8"),
            Kind::Date => format!("({c} - DATE '1970-01-01')"),
            Kind::Text => format!("{c}::text"),
            Kind::I32 | Kind::I64 | Kind::Bool | Kind::Bytes | Kind::TextList | Kind::BytesList => {
                c
            }
        }
    }

    /// Its field in the file's Parquet schema (every column nullable).
    pub fn parquet_field(&self) -> String {
        let name = &self.name;
        match self.kind() {
            Kind::I16 => format!("optional int32 {name} (INTEGER(16,true));"),
            Kind::I32 => format!("optional int32 {name};"),
            Kind::I64 => format!("optional int64 {name};"),
            Kind::Bool => format!("optional boolean {name};"),
            Kind::Timestamp => format!("optional int64 {name} (TIMESTAMP(MICROS,true));"),
            Kind::Date => format!("optional int32 {name} (DATE);"),
            Kind::Bytes => format!("optional binary {name};"),
            Kind::Text => format!("optional binary {name} (STRING);"),
            Kind::TextList => format!(
                "optional group {name} (LIST) {{ repeated group list {{ optional binary element (STRING); }} }}"
            ),
            Kind::BytesList => format!(
                "optional group {name} (LIST) {{ repeated group list {{ optional binary element; }} }}"
            ),
        }
    }
}

/// The columns of `schema.table` (of `table` on the search path without a schema), in order.
pub async fn columns(
    client: &impl GenericClient,
    schema: Option<&str>,
    table: &str,
) -> Result<Vec<Column>, StoreError> {
    let relation = match schema {
        Some(schema) => format!("{}.{}", quote_ident(schema), quote_ident(table)),
        None => quote_ident(table),
    };
    let rows = client
        .query(
            "SELECT a.attname::text, pg_catalog.format_type(a.atttypid, a.atttypmod), \
                    t.typname::text \
             FROM pg_catalog.pg_attribute a JOIN pg_catalog.pg_type t ON t.oid = a.atttypid \
             WHERE a.attrelid = $1::text::regclass AND a.attnum > 0 AND NOT a.attisdropped \
             ORDER BY a.attnum",
            &[&relation],
        )
        .await
        .map_err(StoreError::new("reading an archived table's columns"))?;
    Ok(rows
        .iter()
        .map(|r| Column {
            name: r.get(0),
            pg_type: r.get(1),
            typname: r.get(2),
        })
        .collect())
}

/// One column's values of a row group being written.
#[derive(Debug)]
pub(super) enum Values {
    I32(Vec<i32>),
    I64(Vec<i64>),
    Bool(Vec<bool>),
    Bytes(Vec<ByteArray>),
}

/// One column of a row group being written: its values and Parquet's levels.
#[derive(Debug)]
pub(super) struct ColumnBuf {
    pub kind: Kind,
    pub values: Values,
    pub def: Vec<i16>,
    pub rep: Vec<i16>,
}

impl ColumnBuf {
    pub fn new(kind: Kind) -> Self {
        let values = match kind {
            Kind::I16 | Kind::I32 | Kind::Date => Values::I32(Vec::new()),
            Kind::I64 | Kind::Timestamp => Values::I64(Vec::new()),
            Kind::Bool => Values::Bool(Vec::new()),
            Kind::Bytes | Kind::Text | Kind::TextList | Kind::BytesList => {
                Values::Bytes(Vec::new())
            }
        };
        Self {
            kind,
            values,
            def: Vec::new(),
            rep: Vec::new(),
        }
    }

    pub fn is_list(&self) -> bool {
        matches!(self.kind, Kind::TextList | Kind::BytesList)
    }

    pub fn clear(&mut self) {
        match &mut self.values {
            Values::I32(v) => v.clear(),
            Values::I64(v) => v.clear(),
            Values::Bool(v) => v.clear(),
            Values::Bytes(v) => v.clear(),
        }
        self.def.clear();
        self.rep.clear();
    }

    /// Appends column `i` of `row`.
    pub fn push(
        &mut self,
        row: &tokio_postgres::Row,
        i: usize,
    ) -> Result<(), tokio_postgres::Error> {
        fn scalar<T>(values: &mut Vec<T>, def: &mut Vec<i16>, v: Option<T>) {
            match v {
                Some(v) => {
                    values.push(v);
                    def.push(1);
                }
                None => def.push(0),
            }
        }
        match (&mut self.values, self.kind) {
            (Values::I32(v), _) => scalar(v, &mut self.def, row.try_get::<_, Option<i32>>(i)?),
            (Values::I64(v), _) => scalar(v, &mut self.def, row.try_get::<_, Option<i64>>(i)?),
            (Values::Bool(v), _) => scalar(v, &mut self.def, row.try_get::<_, Option<bool>>(i)?),
            (Values::Bytes(v), Kind::Bytes) => scalar(
                v,
                &mut self.def,
                row.try_get::<_, Option<Vec<u8>>>(i)?.map(ByteArray::from),
            ),
            (Values::Bytes(v), Kind::Text) => scalar(
                v,
                &mut self.def,
                row.try_get::<_, Option<String>>(i)?
                    .map(|s| ByteArray::from(s.into_bytes())),
            ),
            (Values::Bytes(v), kind) => {
                // a three-level list: 0 a null list, 1 an empty one, 2 a null element, 3 a value
                let items: Option<Vec<Option<Vec<u8>>>> = if kind == Kind::TextList {
                    row.try_get::<_, Option<Vec<Option<String>>>>(i)?
                        .map(|l| l.into_iter().map(|s| s.map(String::into_bytes)).collect())
                } else {
                    row.try_get::<_, Option<Vec<Option<Vec<u8>>>>>(i)?
                };
                match items {
                    None => {
                        self.def.push(0);
                        self.rep.push(0);
                    }
                    Some(items) if items.is_empty() => {
                        self.def.push(1);
                        self.rep.push(0);
                    }
                    Some(items) => {
                        for (n, item) in items.into_iter().enumerate() {
                            self.rep.push(i16::from(n > 0));
                            match item {
                                Some(bytes) => {
                                    v.push(ByteArray::from(bytes));
                                    self.def.push(3);
                                }
                                None => self.def.push(2),
                            }
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

/// Why a value read from an archive cannot be loaded.
#[derive(Debug, thiserror::Error)]
#[error("column {column}: {message}")]
pub struct FieldError {
    /// The column
    pub column: String,
    /// What is wrong
    pub message: String,
}

/// Appends `field` to `line` in COPY's text format, as a value of `kind`.
pub(super) fn copy_text(
    line: &mut String,
    column: &str,
    kind: Kind,
    field: &Field,
) -> Result<(), FieldError> {
    let wrong = || FieldError {
        column: column.to_string(),
        message: format!("{field:?} is not a {kind:?} value"),
    };
    match (kind, field) {
        (_, Field::Null) => line.push_str("\\N"),
        (Kind::I16 | Kind::I32 | Kind::I64, Field::Short(v)) => line.push_str(&v.to_string()),
        (Kind::I16 | Kind::I32 | Kind::I64, Field::Int(v)) => line.push_str(&v.to_string()),
        (Kind::I16 | Kind::I32 | Kind::I64, Field::Long(v)) => line.push_str(&v.to_string()),
        (Kind::Bool, Field::Bool(v)) => line.push(if *v { 't' } else { 'f' }),
        (Kind::Timestamp, Field::TimestampMicros(us) | Field::Long(us)) => {
            let at = DateTime::from_timestamp_micros(*us).ok_or_else(wrong)?;
            line.push_str(&at.format("%Y-%m-%d %H:%M:%S%.6f+00").to_string());
        }
        (Kind::Date, Field::Date(days) | Field::Int(days)) => {
            let day = NaiveDate::from_epoch_days(*days).ok_or_else(wrong)?;
            line.push_str(&day.to_string());
        }
        (Kind::Bytes, Field::Bytes(b)) => {
            line.push_str("\\\\x");
            line.push_str(&super::super::hex(b.data()));
        }
        (Kind::Text, Field::Str(s)) => escape_copy(line, s),
        (Kind::TextList | Kind::BytesList, Field::ListInternal(list)) => {
            escape_copy(line, &array_literal(kind, list).ok_or_else(wrong)?);
        }
        _ => return Err(wrong()),
    }
    Ok(())
}

/// An array's literal (`{"a",NULL}`), its elements quoted.
fn array_literal(kind: Kind, list: &List) -> Option<String> {
    let mut out = String::from("{");
    for (n, item) in list.elements().iter().enumerate() {
        if n > 0 {
            out.push(',');
        }
        let text = match (kind, item) {
            (_, Field::Null) => {
                out.push_str("NULL");
                continue;
            }
            (Kind::TextList, Field::Str(s)) => s.clone(),
            (Kind::BytesList, Field::Bytes(b)) => format!("\\x{}", super::super::hex(b.data())),
            _ => return None,
        };
        out.push('"');
        for c in text.chars() {
            if c == '"' || c == '\\' {
                out.push('\\');
            }
            out.push(c);
        }
        out.push('"');
    }
    out.push('}');
    Some(out)
}

/// COPY's text-format escaping of one value.
fn escape_copy(line: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '\\' => line.push_str("\\\\"),
            '\t' => line.push_str("\\t"),
            '\n' => line.push_str("\\n"),
            '\r' => line.push_str("\\r"),
            c => line.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_text_escapes_what_copy_would_misread() {
        let mut line = String::new();
        copy_text(&mut line, "c", Kind::Text, &Field::Str("a\tb\\c\nd".into())).unwrap();
        assert_eq!(line, "a\\tb\\\\c\\nd");
        line.clear();
        copy_text(
            &mut line,
            "c",
            Kind::Timestamp,
            &Field::TimestampMicros(1_500_000),
        )
        .unwrap();
        assert_eq!(line, "1970-01-01 00:00:01.500000+00");
        line.clear();
        copy_text(
            &mut line,
            "c",
            Kind::Bytes,
            &Field::Bytes(vec![0xab, 1].into()),
        )
        .unwrap();
        assert_eq!(line, "\\\\xab01");
        line.clear();
        copy_text(&mut line, "c", Kind::I64, &Field::Null).unwrap();
        assert_eq!(line, "\\N");
        assert!(copy_text(&mut line, "c", Kind::Bool, &Field::Str("t".into())).is_err());
    }
}
