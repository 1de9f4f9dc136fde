//! The terminal: one progress display per process on stderr, and log
//! lines in words, printed above the bars through that display so that no
//! bar is ever drawn twice. Off a terminal there is no display and each
//! log line goes straight to stderr, with its time.

use std::fmt;
use std::io::{self, IsTerminal, Write};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};

use indicatif::{MultiProgress, ProgressDrawTarget};
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// The process's one display on stderr: the bars of every phase, and the
/// log lines above them. Hidden off a terminal.
pub fn display() -> &'static MultiProgress {
    static DISPLAY: OnceLock<MultiProgress> = OnceLock::new();
    DISPLAY.get_or_init(|| {
        let target = match io::stderr().is_terminal() {
            true => ProgressDrawTarget::stderr(),
            false => ProgressDrawTarget::hidden(),
        };
        MultiProgress::with_draw_target(target)
    })
}

/// Whether a bar was ever added to the display: until then a log line has
/// nothing to go above, and goes straight to stderr (indicatif pads a
/// line it prints with no bar to the terminal's width).
static BARS: AtomicBool = AtomicBool::new(false);

/// Says that the display now holds a bar.
pub fn bar_added() {
    BARS.store(true, Ordering::Relaxed);
}

/// Where log lines go: through the display while it is on a terminal
/// (each line printed above the bars, which are drawn again below it),
/// else straight to stderr. For `tracing_subscriber`'s `with_writer`.
pub fn log_writer() -> LogLine {
    LogLine(Vec::with_capacity(256))
}

/// One log event, written on drop: `tracing_subscriber` asks for a writer
/// per event and writes the event's line into it.
pub struct LogLine(Vec<u8>);

impl Write for LogLine {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for LogLine {
    fn drop(&mut self) {
        if self.0.is_empty() {
            return;
        }
        let display = display();
        if display.is_hidden() {
            // A closed stderr must not turn a log line into a panic.
            let _ = io::stderr().write_all(&self.0);
            return;
        }
        let text = String::from_utf8_lossy(&self.0);
        // One column short of the width: a row that fills the last column
        // leaves the cursor waiting to wrap, and the display's count of
        // rows above the bars goes wrong by one.
        let width = terminal_size::terminal_size_of(io::stderr())
            .map_or(80, |(w, _)| usize::from(w.0))
            .saturating_sub(1);
        let text = fold(text.trim_end_matches('\n'), width);
        print_above(&text);
    }
}

/// Prints `text` on stderr above the live bars: they are cleared, the
/// text written, the bars drawn again below it, so that none is drawn
/// twice.
pub fn print_above(text: &str) {
    let display = display();
    if BARS.load(Ordering::Relaxed) && !display.is_hidden() {
        display.suspend(|| {
            let _ = writeln!(io::stderr(), "{text}");
        });
    } else {
        let _ = writeln!(io::stderr(), "{text}");
    }
}

/// Folds a line wider than the terminal at spaces, each further row
/// indented, so that the terminal never wraps it (a wrapped row is one
/// the display cannot count when it draws the bars again).
fn fold(line: &str, width: usize) -> String {
    const INDENT: &str = "      ";
    let width = width.max(INDENT.len() + 20);
    if line.chars().count() <= width {
        return line.to_owned();
    }
    let narrow = width - INDENT.len();
    // Words, a word wider than a row cut into rows' worth.
    let mut pieces: Vec<String> = Vec::new();
    for word in line.split_whitespace() {
        let chars: Vec<char> = word.chars().collect();
        pieces.extend(chars.chunks(narrow).map(|c| c.iter().collect::<String>()));
    }
    // The level's alignment stays.
    let lead = &line[..line.len() - line.trim_start().len()];
    let mut rows: Vec<String> = vec![String::new()];
    for piece in pieces {
        let room = if rows.len() == 1 {
            width - lead.len()
        } else {
            narrow
        };
        let row = rows.last_mut().expect("a row");
        let len = row.chars().count();
        if len > 0 && len + 1 + piece.chars().count() > room {
            rows.push(piece);
        } else {
            if len > 0 {
                row.push(' ');
            }
            row.push_str(&piece);
        }
    }
    format!("{lead}{}", rows.join(&format!("\n{INDENT}")))
}

/// A log line in words: `WARN lza/us-east-1: SSM status unknown:
/// DescribeInstanceInformation: ThrottlingException: Rate exceeded (request
/// id ...)`. The scope (an account-region, a landing zone) first, then the
/// message, other fields as `key=value`, and the error last. Its time
/// first when `time` (off a terminal, where the bars do not show it).
pub struct Words {
    pub time: bool,
}

impl<S, N> FormatEvent<S, N> for Words
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _: &FmtContext<'_, S, N>,
        mut w: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut f = Fields::default();
        event.record(&mut f);
        if self.time {
            let now = chrono::Utc::now();
            write!(w, "{} ", now.format("%Y-%m-%dT%H:%M:%S%.3fZ"))?;
        }
        write!(w, "{:>5} ", event.metadata().level())?;
        if let Some(scope) = &f.scope {
            write!(w, "{scope}: ")?;
        }
        write!(w, "{}", f.message)?;
        for (k, v) in &f.others {
            write!(w, " {k}={v}")?;
        }
        if let Some(e) = &f.error {
            write!(w, ": {e}")?;
        }
        writeln!(w)
    }
}

#[derive(Default)]
struct Fields {
    message: String,
    scope: Option<String>,
    error: Option<String>,
    others: Vec<(&'static str, String)>,
}

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.record(field, format!("{value:?}"));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.record(field, value.to_owned());
    }
}

impl Fields {
    fn record(&mut self, field: &Field, value: String) {
        match field.name() {
            "message" => self.message = value,
            "target_" | "landing_zone" if self.scope.is_none() => self.scope = Some(value),
            "error" => self.error = Some(value),
            name => self.others.push((name, value)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fold;

    #[test]
    fn a_long_line_folds_at_spaces_within_the_width() {
        let line = " WARN lza/eu-west-1: SSM status unknown: DescribeInstanceInformation: UnreadableAnswer: HTTP 502 and an HTML page, not AWS's answer";
        let folded = fold(line, 60);
        assert!(folded.lines().all(|l| l.chars().count() <= 60), "{folded}");
        assert!(
            folded.lines().skip(1).all(|l| l.starts_with("      ")),
            "{folded}"
        );
        let words: Vec<&str> = folded.split_whitespace().collect();
        assert_eq!(words, line.split_whitespace().collect::<Vec<_>>());
        assert_eq!(fold("short", 60), "short");
        let long_word = "x".repeat(130);
        assert!(
            fold(&long_word, 60)
                .lines()
                .all(|l| l.chars().count() <= 60)
        );
    }
}
