//! The terminal: one progress display per process on stderr, and log
//! lines in words, printed above the bars through that display so that no
//! bar is ever drawn twice. Off a terminal there is no display and each
//! log line goes straight to stderr, with its time.

use std::borrow::Cow;
use std::fmt;
use std::io::{self, IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{OnceLock, RwLock};

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

/// Credentials as prepatch comes to hold them (the runner's own, each
/// assumed role's): no log line shows one, whatever its level and whichever
/// library wrote it (the SDK's trace prints signed requests and STS's
/// answers).
static SECRETS: RwLock<Vec<String>> = RwLock::new(Vec::new());

/// Says that `secret` (a secret access key, a session token) must never
/// reach a log line: it is shown as `<redacted>` wherever it appears.
pub fn never_log(secret: &str) {
    // Too short to be a credential, and replacing it would garble lines.
    if secret.len() < 16 {
        return;
    }
    let mut secrets = SECRETS.write().unwrap_or_else(|e| e.into_inner());
    if !secrets.iter().any(|s| s == secret) {
        secrets.push(secret.to_owned());
    }
}

/// The SDK's events that print secrets by design, whatever PREPATCH_LOG
/// asks for: its traces of signing (the canonical request, with the
/// session token) and of whole requests and answers (signed headers, STS's
/// credentials). Dropped before they are formatted; a secret that reaches
/// a line some other way is redacted there ([`never_log`]).
pub fn holds_secrets(meta: &tracing::Metadata<'_>) -> bool {
    *meta.level() == tracing::Level::TRACE
        && (meta.target().starts_with("aws_sigv4")
            || meta
                .target()
                .starts_with("aws_smithy_runtime::client::orchestrator"))
}

/// `line` with every secret [`never_log`] was told of replaced.
fn redacted(line: &[u8]) -> Cow<'_, [u8]> {
    let secrets = SECRETS.read().unwrap_or_else(|e| e.into_inner());
    if secrets.is_empty() {
        return Cow::Borrowed(line);
    }
    let text = String::from_utf8_lossy(line);
    if !secrets.iter().any(|s| text.contains(s.as_str())) {
        return Cow::Borrowed(line);
    }
    let mut text = text.into_owned();
    for s in secrets.iter() {
        text = text.replace(s.as_str(), "<redacted>");
    }
    Cow::Owned(text.into_bytes())
}

impl Drop for LogLine {
    fn drop(&mut self) {
        if self.0.is_empty() {
            return;
        }
        if let Cow::Owned(clean) = redacted(&self.0) {
            self.0 = clean;
        }
        let display = display();
        if display.is_hidden() {
            // A closed stderr must not turn a log line into a panic.
            let _ = stderr().write_all(&self.0);
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
            let _ = writeln!(stderr(), "{text}");
        });
    } else {
        let _ = writeln!(stderr(), "{text}");
    }
}

/// A value as it may reach a terminal or a log: every control character
/// made visible (`\x1b`, `\n`, `\r`, `\t`, `\u{202e}`), so that a tag value
/// holding an escape sequence, a bell, a carriage return that overwrites
/// the line, a forged second log line or a right-to-left override is shown
/// for what it is and never acted on by the operator's terminal.
pub fn visible(value: &str) -> Cow<'_, str> {
    if !value.chars().any(needs_escape) {
        return Cow::Borrowed(value);
    }
    let mut out = String::with_capacity(value.len() + 8);
    for c in value.chars() {
        push_visible(&mut out, c);
    }
    Cow::Owned(out)
}

/// C0 and C1 controls, DEL, and Unicode's invisible direction controls.
fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

fn push_visible(out: &mut String, c: char) {
    use std::fmt::Write as _;
    match c {
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        '\t' => out.push_str("\\t"),
        c if u32::from(c) < 0x100 && needs_escape(c) => {
            let _ = write!(out, "\\x{:02x}", u32::from(c));
        }
        c if needs_escape(c) => {
            let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
        }
        c => out.push(c),
    }
}

/// Writes one line of output: the whole line made [`visible`], so that a
/// value in it (a Name tag, an error's message) can neither act on the
/// terminal nor start a line of its own. `writeln!`'s arguments, the
/// stream a `&mut` writer.
#[macro_export]
macro_rules! oneline {
    ($out:expr, $($arg:tt)*) => {
        $crate::console::write_line($out, ::std::format_args!($($arg)*))
    };
}

/// [`oneline!`]'s work.
pub fn write_line<W: Write + ?Sized>(out: &mut W, args: fmt::Arguments<'_>) -> io::Result<()> {
    let text = fmt::format(args);
    writeln!(out, "{}", visible(&text))
}

/// A terminal stream (stdout, stderr) that lets through the lines and
/// tabs prepatch writes and makes every other control character visible
/// ([`visible`]): whatever a message holds, nothing in it reaches the
/// terminal as a control sequence.
pub struct Terminal<W: Write>(pub W);

/// Standard output, guarded.
pub fn stdout() -> Terminal<io::StdoutLock<'static>> {
    Terminal(io::stdout().lock())
}

/// Standard error, guarded.
pub fn stderr() -> Terminal<io::StderrLock<'static>> {
    Terminal(io::stderr().lock())
}

impl<W: Write> Write for Terminal<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let text = String::from_utf8_lossy(buf);
        let safe = |c: char| matches!(c, '\n' | '\t') || !needs_escape(c);
        if text.chars().all(safe) {
            self.0.write_all(buf)?;
        } else {
            let mut out = String::with_capacity(text.len() + 8);
            for c in text.chars() {
                match safe(c) {
                    true => out.push(c),
                    false => push_visible(&mut out, c),
                }
            }
            self.0.write_all(out.as_bytes())?;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
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

/// Each value made visible ([`visible`]): one event is one line, and no
/// value in it acts on the terminal.
impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        let text = format!("{value:?}");
        self.record(field, visible(&text).into_owned());
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.record(field, visible(value).into_owned());
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
    use super::*;

    #[test]
    fn no_control_in_a_value_reaches_the_terminal() {
        let hostile = "web\u{1b}[31mRED\u{1b}]0;pwned\u{7}\r\nERROR forged\u{9b}1m\u{202e}txt";
        let shown = visible(hostile);
        assert_eq!(
            shown,
            r"web\x1b[31mRED\x1b]0;pwned\x07\r\nERROR forged\x9b1m\u{202e}txt"
        );
        assert!(!shown.chars().any(needs_escape));
        assert!(matches!(visible("plain web-01"), Cow::Borrowed(_)));
        // The stream keeps prepatch's own lines and tabs, nothing else.
        let mut out = Terminal(Vec::new());
        write!(out, "a\tb\n{hostile}\n").unwrap();
        let text = String::from_utf8(out.0).unwrap();
        assert_eq!(text.lines().count(), 3, "{text}");
        assert!(
            !text
                .chars()
                .any(|c| c != '\n' && c != '\t' && needs_escape(c)),
            "{text}"
        );
        // One line of output is one line, whatever its values hold.
        let mut out = Vec::new();
        crate::oneline!(&mut out, "  name {hostile}").unwrap();
        assert_eq!(String::from_utf8(out).unwrap().lines().count(), 1);
    }

    #[test]
    fn a_secret_told_of_is_redacted_from_every_log_line() {
        let token = "FQoGZXIvYXdzEBYaDtest-session-token-0123456789";
        never_log(token);
        never_log("short");
        let line = format!("TRACE x-amz-security-token:{token} and more");
        let clean = redacted(line.as_bytes());
        let clean = String::from_utf8_lossy(&clean);
        assert_eq!(clean, "TRACE x-amz-security-token:<redacted> and more");
        assert!(matches!(redacted(b"short is fine"), Cow::Borrowed(_)));
    }

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
