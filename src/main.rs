//! The binary: parse the flags, start tokio, run the command, and turn its
//! outcome into the exit code. Everything else is in the library.

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;
use prepatch::cli::Cli;

/// A run allocates many small strings (ids, tags) and frees them in
/// bursts; glibc's malloc spent over 40% of a 100,000-instance demo in
/// `_int_malloc` and `malloc_consolidate`. mimalloc is made for this.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    prepatch::init_logging(&cli);
    let runtime = match prepatch::runtime_for(&cli) {
        Ok(rt) => rt,
        Err(err) => {
            let _ = writeln!(
                prepatch::console::stderr(),
                "error: cannot start the async runtime: {err}"
            );
            return ExitCode::from(prepatch::error::EXIT_FAILURES);
        }
    };
    match runtime.block_on(prepatch::run(cli)) {
        Ok(outcome) => outcome.exit_code(),
        Err(err) => {
            let _ = prepatch::oneline!(&mut prepatch::console::stderr(), "error: {err}");
            err.exit_code()
        }
    }
}
