//! What `kubectl logs` options make of a log file, in the kubelet's order: `tailLines`
//! picks where to start, `sinceTime` drops older entries after that, each line gets its
//! time when `timestamps` is asked, and `limitBytes` cuts the whole answer (a follow
//! included) at that many bytes.

use super::cri::Entry;
use jiff::Timestamp;

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Options {
    pub tail: Option<u64>,
    pub since: Option<Timestamp>,
    pub timestamps: bool,
    pub limit_bytes: Option<u64>,
}

/// Where the last `n` lines begin (a line is its partial entries and the complete one).
pub fn tail_start(entries: &[Entry<'_>], n: Option<u64>) -> usize {
    let Some(n) = n else { return 0 };
    let mut lines = 0u64;
    for (i, e) in entries.iter().enumerate().rev() {
        if e.complete {
            if lines == n {
                return i + 1;
            }
            lines += 1;
        }
    }
    0
}

/// Renders entries as the container wrote them; `line_start` says whether the first
/// entry begins a line (it carries over between follow chunks).
pub fn render(entries: &[Entry<'_>], opts: &Options, line_start: &mut bool) -> Vec<u8> {
    let mut out = Vec::new();
    for e in entries {
        if let (Some(since), Some(at)) = (opts.since, e.at) {
            if at < since {
                continue;
            }
        }
        if opts.timestamps && *line_start {
            // A line written before the CRI format has no time of its own: the epoch, as
            // the kubelet shows a time it cannot read.
            out.extend_from_slice(e.time.unwrap_or("0001-01-01T00:00:00Z").as_bytes());
            out.push(b' ');
        }
        out.extend_from_slice(e.text);
        if e.complete {
            out.push(b'\n');
        }
        *line_start = e.complete;
    }
    out
}

/// Cuts `out` to what is left of the byte limit, and counts it off.
pub fn limit(mut out: Vec<u8>, remaining: &mut Option<u64>) -> Vec<u8> {
    if let Some(r) = remaining {
        if out.len() as u64 > *r {
            out.truncate(*r as usize);
        }
        *r -= out.len() as u64;
    }
    out
}

/// A whole log file's answer.
pub fn answer(bytes: &[u8], opts: &Options) -> Vec<u8> {
    let entries = super::cri::entries(bytes);
    let start = tail_start(&entries, opts.tail);
    let mut line_start = true;
    let mut remaining = opts.limit_bytes;
    limit(render(&entries[start..], opts, &mut line_start), &mut remaining)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOG: &[u8] = b"2026-12-02T07:00:01Z stdout F one\n2026-12-02T07:00:02.5Z stderr P tw\n2026-12-02T07:00:02.6Z stderr F o\n2026-12-02T07:00:03Z stdout F three\n";

    fn ans(o: Options) -> String {
        String::from_utf8(answer(LOG, &o)).unwrap()
    }

    #[test]
    fn plain_and_tail() {
        assert_eq!(ans(Options::default()), "one\ntwo\nthree\n");
        assert_eq!(ans(Options { tail: Some(2), ..Default::default() }), "two\nthree\n");
        assert_eq!(ans(Options { tail: Some(0), ..Default::default() }), "");
        assert_eq!(ans(Options { tail: Some(9), ..Default::default() }), "one\ntwo\nthree\n");
    }

    #[test]
    fn timestamps_start_each_line() {
        assert_eq!(
            ans(Options { timestamps: true, tail: Some(2), ..Default::default() }),
            "2026-12-02T07:00:02.5Z two\n2026-12-02T07:00:03Z three\n"
        );
    }

    #[test]
    fn since_drops_older_entries() {
        let since = Some("2026-12-02T07:00:02.6Z".parse().unwrap());
        assert_eq!(ans(Options { since, ..Default::default() }), "o\nthree\n");
        let since = Some("2026-12-02T08:00:00Z".parse().unwrap());
        assert_eq!(ans(Options { since, ..Default::default() }), "");
    }

    #[test]
    fn limit_bytes_cuts_and_carries_over() {
        assert_eq!(ans(Options { limit_bytes: Some(6), ..Default::default() }), "one\ntw");
        let mut left = Some(5);
        assert_eq!(limit(b"abc".to_vec(), &mut left), b"abc");
        assert_eq!(limit(b"defg".to_vec(), &mut left), b"de");
        assert_eq!(limit(b"h".to_vec(), &mut left), b"");
    }

    #[test]
    fn lines_without_a_time_pass_as_they_are() {
        assert_eq!(String::from_utf8(answer(b"plain\n", &Options { timestamps: true, ..Default::default() })).unwrap(), "0001-01-01T00:00:00Z plain\n");
    }
}
