//! `report.json`: the whole [`Report`], for automation. Its shape is
//! `schema/report.schema.json` (JSON Schema 2020-12); the tests validate
//! every report they produce against it.

use std::io::{self, Write};

use super::model::Report;

/// The schema's path in the repository, and its `$id`.
pub const SCHEMA_PATH: &str = "schema/report.schema.json";

/// Writes the report as pretty-printed JSON with a final newline.
pub fn write(report: &Report, mut out: impl Write) -> io::Result<()> {
    serde_json::to_writer_pretty(&mut out, report).map_err(io::Error::other)?;
    out.write_all(b"\n")
}
