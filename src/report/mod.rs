//! Reports, all made from one model: [`model::Report`], built from the
//! [`Run`](crate::model::Run) and the [`model::RunMeta`] the run does not
//! know. So the four files can never disagree.
//!
//! - [`csv`]: `inventory.csv`, one row per instance, also rewritten after
//!   every phase so an interrupted run still leaves an accurate file.
//! - [`json`]: `report.json`, everything, for automation
//!   (`schema/report.schema.json`).
//! - [`xml`]: `report.xml`, everything plus an audit trail, namespaced
//!   (`schema/prepatch-report-1.xsd`), written by [`xml_writer`].
//! - [`html`]: `report.html`, the self-contained dashboard, with its
//!   pictures ([`charts`]: inline SVG).
//! - [`summary`]: the table printed at the end of a run.
//! - [`restore`], [`rollback`]: those commands' reports, in the same four
//!   formats, on what they share ([`page`]).

pub mod charts;
pub mod csv;
pub mod html;
pub mod json;
pub mod model;
pub mod page;
pub mod restore;
pub mod rollback;
pub mod summary;
pub mod xml;
pub mod xml_writer;

use std::io::Write;
use std::path::{Path, PathBuf};

pub use crate::model::Format;
pub use model::{Report, RunMeta};

/// Writes `report` in `format`.
pub fn write_format(format: Format, report: &Report, out: &mut impl Write) -> std::io::Result<()> {
    match format {
        Format::Csv => csv::write_report(report, out).map_err(std::io::Error::other),
        Format::Json => json::write(report, out),
        Format::Html => html::write(report, out),
        Format::Xml => xml::write(report, out),
    }
}

/// Writes each format's file into `dir`, each whole or not at all, all at
/// once (one thread each: they only read the report, and a large fleet's
/// formats take seconds each). Returns the paths written, in the order
/// asked; on an error, the path it was for (the first, in that order).
pub fn write_all(
    report: &Report,
    dir: &Path,
    formats: &[Format],
) -> Result<Vec<PathBuf>, (PathBuf, std::io::Error)> {
    let write_one = |f: Format| -> Result<PathBuf, (PathBuf, std::io::Error)> {
        let path = dir.join(f.file_name());
        let started = std::time::Instant::now();
        let written = write_run_file(&path, report.run.simulated, |w| write_format(f, report, w));
        tracing::debug!(
            format = f.name(),
            ms = started.elapsed().as_millis(),
            "report written"
        );
        written.map(|()| path.clone()).map_err(|e| (path, e))
    };
    std::thread::scope(|scope| {
        let handles: Vec<_> = formats
            .iter()
            .map(|&f| scope.spawn(move || write_one(f)))
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            })
            .collect()
    })
}

pub use crate::files::FileWriter;

/// Writes a file whole or not at all, flushed to disk before it is renamed
/// into place ([`crate::files::replace`]).
pub fn write_atomically(
    path: &Path,
    write: impl FnOnce(&mut FileWriter) -> std::io::Result<()>,
) -> std::io::Result<()> {
    crate::files::replace(path, true, write)
}

/// A file of a run's: written as [`write_atomically`] does, but for a
/// simulated run without waiting for the disk (as its journal's steps):
/// nothing real is at stake, and a 100,000-instance demo writes 600 MB of
/// reports.
pub fn write_run_file(
    path: &Path,
    simulated: bool,
    write: impl FnOnce(&mut FileWriter) -> std::io::Result<()>,
) -> std::io::Result<()> {
    crate::files::replace(path, !simulated, write)
}
