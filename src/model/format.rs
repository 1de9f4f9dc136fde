//! The report formats, named once for the flags, the config and the
//! writers.

use std::fmt;
use std::str::FromStr;

/// A report file format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, clap::ValueEnum)]
pub enum Format {
    Csv,
    Json,
    Html,
    Xml,
}

impl Format {
    pub const ALL: [Format; 4] = [Format::Csv, Format::Json, Format::Html, Format::Xml];

    pub fn name(self) -> &'static str {
        match self {
            Format::Csv => "csv",
            Format::Json => "json",
            Format::Html => "html",
            Format::Xml => "xml",
        }
    }

    /// The file it is written to, in the run's directory.
    pub fn file_name(self) -> &'static str {
        match self {
            Format::Csv => "inventory.csv",
            Format::Json => "report.json",
            Format::Html => "report.html",
            Format::Xml => "report.xml",
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Format {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        Format::ALL.into_iter().find(|f| f.name() == s).ok_or(())
    }
}
