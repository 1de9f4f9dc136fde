//! What the reports of `restore` and `rollback` share: their folder, whose
//! files are each written whole or not at all, and their page, a small
//! self-contained template with no script.

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use minijinja::{Environment, Value, context};

use super::FileWriter;
use crate::error::Error;

/// A report folder, made when opened.
pub struct Folder(PathBuf);

impl Folder {
    pub fn open(dir: &Path) -> Result<Folder, Error> {
        crate::files::create_dir(dir).map_err(|source| Error::Write {
            path: dir.display().to_string(),
            source,
        })?;
        Ok(Folder(dir.to_owned()))
    }

    /// Writes the file `name` atomically; an error names its path.
    pub fn file(
        &self,
        name: &str,
        write: impl FnOnce(&mut FileWriter) -> io::Result<()>,
    ) -> Result<(), Error> {
        let path = self.0.join(name);
        super::write_atomically(&path, write).map_err(|source| Error::Write {
            path: path.display().to_string(),
            source,
        })
    }
}

impl Folder {
    /// Writes `doc` as pretty JSON into the file `name`.
    pub fn json(&self, name: &str, doc: &serde_json::Value) -> Result<(), Error> {
        self.file(name, |w| {
            serde_json::to_writer_pretty(&mut *w, doc).map_err(io::Error::other)?;
            writeln!(w)
        })
    }

    /// Writes a rendered page into the file `name`.
    pub fn page(&self, name: &str, page: Result<String, minijinja::Error>) -> Result<(), Error> {
        self.file(name, |w| {
            w.write_all(page.map_err(io::Error::other)?.as_bytes())
        })
    }
}

/// The account-regions that could not be looked at, as the JSON reports
/// list them.
pub fn target_errors<'a>(
    targets: impl Iterator<Item = (&'a crate::model::Target, Option<&'a String>)>,
) -> Vec<serde_json::Value> {
    targets
        .filter_map(|(t, e)| Some(serde_json::json!({"target": t, "error": e?})))
        .collect()
}

/// A page from `template` (a minijinja template, auto-escaped as HTML) with
/// `css` inline and a Content-Security-Policy that allows only that style.
/// Control characters (a hostile tag's) are shown as U+FFFD by the
/// `clean` filter. `ctx` gives the template's own values.
pub fn render(template: &str, css: &str, ctx: Value) -> Result<String, minijinja::Error> {
    let css = css.trim_end();
    let mut env = Environment::new();
    env.add_filter("clean", |s: String| -> String {
        s.chars()
            .map(|c| match c {
                c if c.is_control() && c != '\t' && c != '\n' => '\u{FFFD}',
                c => c,
            })
            .collect()
    });
    // Auto-escaping follows the name: `.html` escapes HTML.
    env.add_template("page.html", template)?;
    env.get_template("page.html")?.render(context! {
        // Our own words and a base64 hash: nothing to escape (and an
        // escaped '/' would be read back the same, but not by a test).
        csp => Value::from_safe_string(format!(
            "default-src 'none'; style-src {}",
            super::html::csp_hash(css)
        )),
        css => Value::from_safe_string(css.to_owned()),
        ..ctx
    })
}
