//! The CRI log format (`<RFC3339Nano time> <stdout|stderr> <F|P> <text>`), which containerd
//! writes for its containers and the process runtime writes for host-mode ones, so that
//! both carry the time of every line (`kubectl logs --timestamps`, `--since`).

use jiff::Timestamp;

/// A line of output longer than this is written as partial (`P`) entries, as containerd
/// splits them.
pub const MAX_ENTRY: usize = 16 * 1024;

/// One entry of a log file.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry<'a> {
    /// The time as written (already RFC3339Nano); None for a line not in the CRI format.
    pub time: Option<&'a str>,
    pub at: Option<Timestamp>,
    pub text: &'a [u8],
    /// The entry ends its line (`F`); a `P` entry continues in the next one.
    pub complete: bool,
    /// Written to stderr (stdout otherwise, and for lines not in the CRI format).
    pub stderr: bool,
}

/// Parses one line (without its newline). Anything not in the CRI format is a whole line
/// with no time (a log written before host mode used this format).
pub fn parse(line: &[u8]) -> Entry<'_> {
    let plain = Entry { time: None, at: None, text: line, complete: true, stderr: false };
    let mut parts = line.splitn(4, |b| *b == b' ');
    let (Some(time), Some(stream), Some(tag)) = (parts.next(), parts.next(), parts.next()) else { return plain };
    let text = parts.next().unwrap_or(b"");
    let looks_like_time = time.len() >= 20 && time.get(4) == Some(&b'-') && time.get(10) == Some(&b'T');
    if !looks_like_time || !(stream == b"stdout" || stream == b"stderr") {
        return plain;
    }
    let complete = match tag {
        b"F" => true,
        b"P" => false,
        _ => return plain,
    };
    let time = std::str::from_utf8(time).ok();
    Entry { time, at: time.and_then(|t| t.parse().ok()), text, complete, stderr: stream == b"stderr" }
}

/// Splits a log file's bytes into entries; a last line without its newline is left out
/// (it is still being written).
pub fn entries(bytes: &[u8]) -> Vec<Entry<'_>> {
    let whole = match bytes.iter().rposition(|b| *b == b'\n') {
        Some(i) => &bytes[..i],
        None => return Vec::new(),
    };
    whole.split(|b| *b == b'\n').map(parse).collect()
}

/// Go's `time.RFC3339Nano`: fractional seconds without trailing zeros, none when zero.
pub fn rfc3339_nano(t: Timestamp) -> String {
    let secs = t.strftime("%Y-%m-%dT%H:%M:%S").to_string();
    let nanos = t.subsec_nanosecond();
    if nanos == 0 {
        return format!("{secs}Z");
    }
    let frac = format!("{nanos:09}");
    format!("{secs}.{}Z", frac.trim_end_matches('0'))
}

/// One CRI log entry, newline included.
pub fn encode(at: Timestamp, stream: &str, text: &[u8], complete: bool) -> Vec<u8> {
    let mut v = Vec::with_capacity(text.len() + 48);
    v.extend_from_slice(rfc3339_nano(at).as_bytes());
    v.push(b' ');
    v.extend_from_slice(stream.as_bytes());
    v.extend_from_slice(if complete { b" F " } else { b" P " });
    v.extend_from_slice(text);
    v.push(b'\n');
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_containerd_lines_and_keeps_others_whole() {
        let e = parse(b"2026-12-02T07:27:01.123456789Z stdout F hello world");
        assert_eq!((e.time, e.text, e.complete), (Some("2026-12-02T07:27:01.123456789Z"), &b"hello world"[..], true));
        assert_eq!(e.at.unwrap().to_string(), "2026-12-02T07:27:01.123456789Z");
        let partial = parse(b"2026-12-02T07:27:01.2Z stderr P par");
        assert!(!partial.complete && partial.stderr && !e.stderr);
        assert_eq!(parse(b"2026-12-02T07:27:01.2Z stdout F ").text, b"");
        let plain = parse(b"plain output");
        assert_eq!((plain.time, plain.text), (None, &b"plain output"[..]));
        assert_eq!(parse(b"stdout F x").time, None);
    }

    #[test]
    fn formats_time_as_go_does() {
        let t: Timestamp = "2026-12-02T07:27:01.120000000Z".parse().unwrap();
        assert_eq!(rfc3339_nano(t), "2026-12-02T07:27:01.12Z");
        let t: Timestamp = "2026-12-02T07:27:01Z".parse().unwrap();
        assert_eq!(rfc3339_nano(t), "2026-12-02T07:27:01Z");
        assert_eq!(encode(t, "stderr", b"x", false), b"2026-12-02T07:27:01Z stderr P x\n");
    }

    #[test]
    fn an_unfinished_last_line_waits() {
        assert_eq!(entries(b"2026-12-02T07:27:01Z stdout F a\n2026-12-02T07:27:0").len(), 1);
        assert!(entries(b"no newline yet").is_empty());
    }
}
