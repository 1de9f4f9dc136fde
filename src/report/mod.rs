//! Reports, made from one model: the [`Run`](crate::workflow::Run).
//!
//! - [`csv`]: `inventory.csv`, one row per instance, rewritten after every
//!   phase so an interrupted run still leaves an accurate file.
//! - [`summary`]: the table printed at the end of a run.

pub mod csv;
pub mod summary;

use std::io::Write;
use std::path::{Path, PathBuf};

/// Writes a file whole or not at all: into a temporary sibling, then renamed.
pub fn write_atomically(
    path: &Path,
    write: impl FnOnce(&mut dyn Write) -> std::io::Result<()>,
) -> std::io::Result<()> {
    let tmp: PathBuf = path.with_extension("tmp");
    {
        let mut file = std::io::BufWriter::new(std::fs::File::create(&tmp)?);
        write(&mut file)?;
        file.flush()?;
        file.get_ref().sync_all()?;
    }
    std::fs::rename(&tmp, path)
}
