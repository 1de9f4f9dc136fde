//! `prepatch config show`: the configuration as prepatch reads it
//! ([`crate::config::Config::show`]).

use std::io::Write;

use super::{Context, stdout_error};
use crate::cli::ConfigShowArgs;
use crate::{Error, Outcome};

/// `prepatch config show`: the effective configuration, each value with
/// where it came from (the config's own file and line, an inventory file,
/// or the default). The organization is not read: its rules are shown.
pub fn run(ctx: &Context<'_>, args: &ConfigShowArgs) -> Result<Outcome, Error> {
    let s = &args.select;
    let mut config = ctx.config(&s.config)?;
    config.add_inventory(&s.inventory)?;
    let text = std::fs::read_to_string(&s.config).map_err(|source| {
        Error::Config(crate::config::ConfigError::Read {
            path: s.config.clone(),
            source,
        })
    })?;
    let mut out = crate::console::stdout();
    out.write_all(config.show(&text).as_bytes())
        .map_err(stdout_error)?;
    Ok(Outcome::default())
}
